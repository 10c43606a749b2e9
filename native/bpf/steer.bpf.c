// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * specloop's XDP steering program.
 *
 * TCP segments (IPv4, first fragment or unfragmented) whose destination port
 * is a key of the `ports` map go to the AF_XDP socket of their RX queue
 * through `xsks`, and so do ICMP "fragmentation needed" messages (RFC 1191)
 * that quote a segment sent from such a port: path MTU discovery for our
 * connections, which the kernel has no socket for.  Everything else (ARP,
 * other ICMP, other ports, IPv6 for now) passes to the kernel untouched.  A steered port with no socket on its queue
 * is dropped (the XDP_DROP fallback of bpf_redirect_map), so the kernel never
 * sees a SYN for a port specloop owns and never answers it with a RST.
 *
 * Parsing convention: every header is bounds-checked against data_end
 * before it is read, and anything unexpected goes to the kernel.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MAX_QUEUES 64
#define MAX_PORTS 4096

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

/* key: TCP port in network byte order; value: unused flags */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_PORTS);
	__type(key, __u16);
	__type(value, __u8);
} ports SEC(".maps");

#define ICMP_DEST_UNREACH 3
#define ICMP_FRAG_NEEDED 4

/* The header after ip's, when len bytes of it are there; NULL for a
 * non-first fragment (it carries no such header) or a bad IHL. */
static __always_inline void *l4_header(struct iphdr *ip, void *data_end, __u32 len)
{
	__u32 ihl = ip->ihl * 4;
	void *l4 = (void *)ip + ihl;

	if ((ip->frag_off & bpf_htons(0x1fff)) || ihl < sizeof(*ip) || l4 + len > data_end)
		return NULL;
	return l4;
}

/* ICMP "fragmentation needed" quoting a TCP segment whose source port is
 * ours: to our socket; anything else to the kernel. */
static __always_inline int frag_needed_for_us(struct xdp_md *ctx, struct iphdr *ip,
					      void *data_end)
{
	/* type, code, checksum, unused, next-hop MTU: 8 bytes */
	__u8 *icmp = l4_header(ip, data_end, 8), *quoted;
	struct iphdr *inner;
	__u16 sport;

	if (!icmp || icmp[0] != ICMP_DEST_UNREACH || icmp[1] != ICMP_FRAG_NEEDED)
		return XDP_PASS;
	inner = (void *)(icmp + 8);
	if ((void *)(inner + 1) > data_end || inner->protocol != IPPROTO_TCP ||
	    inner->ihl * 4 < sizeof(*inner))
		return XDP_PASS;
	quoted = (void *)inner + inner->ihl * 4;
	/* RFC 792: at least 8 bytes of the quoted TCP header (ports, seq) */
	if ((void *)(quoted + 8) > data_end)
		return XDP_PASS;
	__builtin_memcpy(&sport, quoted, sizeof(sport));
	if (!bpf_map_lookup_elem(&ports, &sport))
		return XDP_PASS;
	return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
}

SEC("xdp")
int specloop_steer(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	int action = XDP_PASS;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	struct tcphdr *tcp;

	if ((void *)(eth + 1) > data_end)
		goto out;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		goto out;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		goto out;
	if (ip->protocol == IPPROTO_ICMP) {
		action = frag_needed_for_us(ctx, ip, data_end);
		goto out;
	}
	if (ip->protocol != IPPROTO_TCP)
		goto out;
	tcp = l4_header(ip, data_end, sizeof(*tcp));
	if (!tcp || !bpf_map_lookup_elem(&ports, &tcp->dest))
		goto out;
	action = bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_DROP);
out:
	return action;
}

char _license[] SEC("license") = "Dual BSD/GPL";
