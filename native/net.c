/* SPDX-License-Identifier: MIT */
/*
 * net.c - Ethernet/IPv4/TCP parsing, ICMP "fragmentation needed" for our
 * own segments, and the Internet checksum.
 *
 * net_parse() validates one received frame from the outside in.  Every
 * length read from the wire is checked against what is really there before
 * it is used; a frame that fails a check is counted under the reason and
 * dropped (the caller releases it).  Headers are read with byte loads or
 * memcpy, never through casted pointers, so there is no aliasing or
 * alignment question.
 */
#include "internal.h"

#define ETH_HLEN 14
#define ETH_P_IPV4 0x0800
#define IP_MF 0x2000
#define IP_OFFMASK 0x1fff
#define ICMP_HLEN 8
#define ICMP_DEST_UNREACH 3
#define ICMP_FRAG_NEEDED 4

/*
 * RFC 1071 sum of buf, added to sum.  Words are summed in memory order, so
 * the result is right on either byte order as long as it is stored back in
 * memory order.  Chunks must start at even offsets of the summed data.
 */
uint32_t csum_partial(const void *buf, size_t len, uint32_t sum)
{
	const uint8_t *p = buf;
	uint64_t acc = sum;
	uint32_t w32;
	uint16_t w16;

	while (len >= 8) {
		uint64_t w;

		memcpy(&w, p, 8);
		acc += w;
		if (acc < w)
			acc++;
		p += 8;
		len -= 8;
	}
	if (len >= 4) {
		memcpy(&w32, p, 4);
		acc += w32;
		if (acc < w32)
			acc++;
		p += 4;
		len -= 4;
	}
	if (len >= 2) {
		memcpy(&w16, p, 2);
		acc += w16;
		if (acc < w16)
			acc++;
		p += 2;
		len -= 2;
	}
	if (len) {
		uint8_t last[2] = { p[0], 0 };

		memcpy(&w16, last, 2);
		acc += w16;
		if (acc < w16)
			acc++;
	}
	/* fold 64 -> 32 bits with end-around carry */
	acc = (acc & 0xffffffffu) + (acc >> 32);
	acc = (acc & 0xffffffffu) + (acc >> 32);
	return (uint32_t)acc;
}

/* Folds a partial sum to 16 bits and complements it (memory order). */
uint16_t csum_fold(uint32_t sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

/* Sum of the TCP/IPv4 pseudo-header (RFC 9293 §3.1), in memory order. */
uint32_t csum_pseudo(uint32_t saddr, uint32_t daddr, uint32_t tcp_len)
{
	uint8_t ph[12];

	memcpy(ph, &saddr, 4);
	memcpy(ph + 4, &daddr, 4);
	ph[8] = 0;
	ph[9] = 6;	/* IPPROTO_TCP */
	put_be16(ph + 10, (uint16_t)tcp_len);
	return csum_partial(ph, sizeof(ph), 0);
}

static bool bad_source(uint32_t saddr_be)
{
	uint8_t a[4];

	memcpy(a, &saddr_be, 4);
	/* RFC 1122 §3.2.1.3 / RFC 9293 §3.9.1: never accept these as sources */
	return a[0] == 0 || a[0] == 127 || a[0] >= 224 ||
	       saddr_be == 0xffffffffu;
}

/*
 * An ICMP message (RFC 792) about one of our segments: only "destination
 * unreachable, fragmentation needed and DF set" (type 3 code 4, RFC 1191
 * §4: the next-hop MTU in the low half of the second word), which path MTU
 * discovery needs; the XDP program steers no other kind.  It quotes our
 * IPv4 header and at least the first 8 bytes of our TCP header (ports and
 * sequence number).  The quoted segment's fields go where a segment's own
 * would, seen from our side: sport the peer's port, dport ours, seq ours,
 * icmp_peer the peer's address.  Returns 1, or -1 (counted) to drop.
 */
static int parse_icmp(struct sl_engine *eng, struct pkt *p, const uint8_t *icmp,
		      uint32_t len)
{
	const uint8_t *in;
	uint32_t in_ihl, self;

	/* RFC 792: the checksum covers the whole ICMP message */
	if (len < ICMP_HLEN + 20 + 8 || csum_fold(csum_partial(icmp, len, 0)) != 0) {
		eng->ctr.drop_bad_icmp++;
		return -1;
	}
	if (icmp[0] != ICMP_DEST_UNREACH || icmp[1] != ICMP_FRAG_NEEDED) {
		eng->ctr.drop_icmp_ignored++;
		return -1;
	}
	in = icmp + ICMP_HLEN;
	in_ihl = (uint32_t)(in[0] & 0x0f) * 4;
	memcpy(&self, in + 12, 4);
	if ((in[0] >> 4) != 4 || in_ihl < 20 || len < ICMP_HLEN + in_ihl + 8 ||
	    in[9] != IPPROTO_TCP_NUM || self != eng->cfg.ipv4) {
		eng->ctr.drop_bad_icmp++;
		return -1;
	}
	memcpy(&p->icmp_peer, in + 16, 4);
	p->icmp_mtu = get_be16(icmp + 6);
	p->dport = get_be16(in + in_ihl);
	p->sport = get_be16(in + in_ihl + 2);
	p->seq = get_be32(in + in_ihl + 4);
	return 1;
}

int net_parse(struct sl_engine *eng, struct pkt *p)
{
	const uint8_t *f = p->frame;
	uint32_t len = p->len, ihl, tot, tcp_len, doff;
	uint16_t frag;
	const uint8_t *ip, *tcp;

	if (len < ETH_HLEN + 20) {
		eng->ctr.drop_short++;
		return -1;
	}
	if (memcmp(f, eng->cfg.mac, 6) != 0) {
		eng->ctr.drop_bad_mac++;
		return -1;
	}
	if (get_be16(f + 12) != ETH_P_IPV4) {
		eng->ctr.drop_not_ipv4++;
		return -1;
	}
	p->src_mac = f + 6;

	ip = f + ETH_HLEN;
	ihl = (uint32_t)(ip[0] & 0x0f) * 4;
	tot = get_be16(ip + 2);
	if ((ip[0] >> 4) != 4 || ihl < 20 || tot < ihl) {
		eng->ctr.drop_bad_ip_header++;
		return -1;
	}
	/* Ethernet may pad a frame; it may never cut one short */
	if (tot > len - ETH_HLEN) {
		eng->ctr.drop_short++;
		return -1;
	}
	if (csum_fold(csum_partial(ip, ihl, 0)) != 0) {
		eng->ctr.drop_bad_ip_checksum++;
		return -1;
	}
	frag = get_be16(ip + 6);
	if (frag & (IP_MF | IP_OFFMASK)) {
		eng->ctr.drop_ip_fragment++;
		return -1;
	}
	if (ip[9] != IPPROTO_TCP_NUM && ip[9] != IPPROTO_ICMP_NUM) {
		eng->ctr.drop_not_tcp++;
		return -1;
	}
	memcpy(&p->saddr, ip + 12, 4);
	memcpy(&p->daddr, ip + 16, 4);
	if (p->daddr != eng->cfg.ipv4) {
		eng->ctr.drop_not_our_ip++;
		return -1;
	}
	if (bad_source(p->saddr)) {
		eng->ctr.drop_bad_source++;
		return -1;
	}
	p->ttl = ip[8];
	if (ip[9] == IPPROTO_ICMP_NUM)
		return parse_icmp(eng, p, ip + ihl, tot - ihl);

	tcp = ip + ihl;
	tcp_len = tot - ihl;
	if (tcp_len < 20) {
		eng->ctr.drop_bad_tcp_header++;
		return -1;
	}
	doff = (uint32_t)(tcp[12] >> 4) * 4;
	if (doff < 20 || doff > tcp_len) {
		eng->ctr.drop_bad_tcp_header++;
		return -1;
	}
	if (csum_fold(csum_partial(tcp, tcp_len,
				   csum_pseudo(p->saddr, p->daddr, tcp_len))) != 0) {
		eng->ctr.drop_bad_tcp_checksum++;
		return -1;
	}
	p->sport = get_be16(tcp);
	p->dport = get_be16(tcp + 2);
	p->seq = get_be32(tcp + 4);
	p->ack = get_be32(tcp + 8);
	p->flags = tcp[13];
	p->wnd = get_be16(tcp + 14);
	p->opts = tcp + 20;
	p->opts_len = doff - 20;
	p->payload = tcp + doff;
	p->payload_len = tcp_len - doff;
	if ((p->flags & TH_SYN) && (p->flags & (TH_FIN | TH_RST))) {
		eng->ctr.drop_bad_tcp_flags++;
		return -1;
	}
	return 0;
}
