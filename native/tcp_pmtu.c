/* SPDX-License-Identifier: MIT */
/*
 * tcp_pmtu.c - path MTU discovery (RFC 1191, RFC 1122 §4.2.3.9) on ICMP
 * "fragmentation needed", as Linux's TCP does it with tcp_mtu_probing=0.
 *
 * The XDP program steers such ICMP, when it quotes a segment sent from a
 * port we serve, to the engine; net.c's parse_icmp checks the message and
 * the quote.  tcp_icmp_input takes it only for a connection that sends
 * data and a quoted sequence number in flight (RFC 5927 §5.1); then the
 * connection's MSS drops to what the path takes, every segment in flight
 * that is now too big is lost (the router dropped it) and tcp_output
 * resends it cut to the new size (tcp_out.c fit_mss), and the path MTU is
 * kept for the destination (RFC 1191 §5), so that the next connection
 * there starts with it, until it expires after 10 minutes (Linux's
 * ip_rt_mtu_expires).
 */
#include "tcp.h"

/* Linux's ip_rt_min_pmtu: no ICMP message makes segments smaller than
 * 512 bytes of payload (RFC 1191 §3 only says not below 68; Linux keeps
 * 552 against forged tiny MTUs) */
#define TCP_MIN_PMTU 552
#define TCP_PMTU_EXPIRES_US (600ull * 1000000)

/* The payload that fits in one packet of mtu bytes (IPv4 and TCP headers,
 * the timestamp option when it is on). */
static uint32_t mtu_to_mss(uint32_t mtu, bool ts_on)
{
	return mtu - 40 - (ts_on ? 12 : 0);
}

static struct tcp_pmtu *pmtu_slot(struct sl_engine *eng, uint32_t peer_ip)
{
	uint32_t h = (uint32_t)siphash13(eng->tcp->key, &peer_ip, sizeof(peer_ip));

	return &eng->tcp->pmtu[h % TCP_PMTU_SLOTS];
}

/* Keeps mtu for peer_ip: a slot per hash, the newest wins it. */
static void pmtu_remember(struct sl_engine *eng, uint32_t peer_ip, uint32_t mtu)
{
	struct tcp_pmtu *e = pmtu_slot(eng, peer_ip);

	if (e->peer_ip == peer_ip && e->expires_us > eng->now_us && e->mtu <= mtu)
		return;		/* a smaller one is known */
	e->peer_ip = peer_ip;
	e->mtu = (uint16_t)mtu;
	e->expires_us = eng->now_us + TCP_PMTU_EXPIRES_US;
}

/* The send MSS of a new connection to peer_ip: mss, or less where a path
 * MTU is known for it. */
uint16_t tcp_pmtu_mss(struct sl_engine *eng, uint32_t peer_ip, uint16_t mss, bool ts_on)
{
	const struct tcp_pmtu *e = pmtu_slot(eng, peer_ip);
	uint32_t fits;

	if (e->peer_ip != peer_ip || e->expires_us <= eng->now_us)
		return mss;
	fits = mtu_to_mss(e->mtu, ts_on);
	if (fits >= mss)
		return mss;
	eng->ctr.pmtu_cached++;
	return (uint16_t)fits;
}

/*
 * The path to c's peer takes mtu bytes.  A smaller MTU than c sends lowers
 * its MSS; every segment in flight that is now too big is lost.  As
 * Linux's tcp_simple_retransmit: the congestion window stays (the units
 * changed, not the congestion), and no fast recovery starts for what was
 * in flight (the RTO's state, until SND.MAX now is acknowledged).  Returns
 * true when segments were marked lost.
 */
static bool pmtu_reduce(struct sl_engine *eng, struct sl_conn *c, uint32_t mtu)
{
	struct tcp_seg *segs = eng->tcp->segs;
	uint32_t mss, i, lost = 0, three_quarters;

	if (mtu < TCP_MIN_PMTU)
		mtu = TCP_MIN_PMTU;
	mss = mtu_to_mss(mtu, c->ts_on);
	if (mss >= c->mss)
		return false;	/* not smaller than what we send */
	pmtu_remember(eng, c->peer_ip, mtu);
	c->mss = (uint16_t)mss;
	eng->ctr.pmtu_reductions++;
	for (i = c->sq_head; i != SL_NONE && i != c->sq_send; i = segs[i].next) {
		struct tcp_seg *s = &segs[i];

		if (s->len <= mss || (s->flags & SEG_SACKED))
			continue;
		if (!(s->flags & SEG_LOST) || (s->flags & SEG_RETRANS)) {
			tcp_mark_lost(eng, c, i);
			lost++;
		}
	}
	if (!lost)
		return false;
	if (!c->in_recovery && !c->after_rto) {
		/* Linux's tcp_current_ssthresh: at least 3/4 of the window */
		three_quarters = (c->cwnd >> 1) + (c->cwnd >> 2);
		if (c->ssthresh < three_quarters)
			c->ssthresh = three_quarters;
		c->after_rto = true;
		c->recover = c->snd_max;
		c->dupacks = 0;
	}
	return true;
}

/*
 * ICMP "fragmentation needed" quoting one of our segments (net.c
 * parse_icmp).  Taken only for a connection that sends data, and only
 * when the quoted sequence number is one we sent and is not yet
 * acknowledged (SND.UNA to SND.MAX, as Linux's tcp_v4_err): RFC 5927
 * §5.1, anybody can forge an ICMP message, not easily one that knows our
 * sequence numbers.
 */
void tcp_icmp_input(struct sl_engine *eng, const struct pkt *p)
{
	struct sl_conn *c = conn_lookup(eng, p->icmp_peer, p->sport, p->dport);

	if (!c || !tcp_state_sends_data(c->state)) {
		eng->ctr.drop_icmp_no_conn++;
		return;
	}
	if (seq_lt(p->seq, c->snd_una) || seq_gt(p->seq, c->snd_max)) {
		eng->ctr.drop_icmp_out_of_window++;
		return;
	}
	eng->ctr.icmp_frag_needed++;
	if (pmtu_reduce(eng, c, p->icmp_mtu))
		tcp_output(eng, c);
}
