/* SPDX-License-Identifier: MIT */
/*
 * internal.h - what the engine's C files share and Python never sees.
 */
#ifndef SPECLOOP_INTERNAL_H
#define SPECLOOP_INTERNAL_H

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/uio.h>
#include <xdp/xsk.h>

#include "specloop.h"

#ifndef XDP_USE_SG
#define XDP_USE_SG (1 << 4)
#endif

#define SL_RX_BATCH 64		/* RX descriptors taken per peek */
#define SL_MAX_EVENTS 1024	/* events one poll may queue */
#define SL_FRAME_RESERVE 64	/* frames kept for ACKs/RSTs under pressure */
#define SL_NO_FRAME UINT32_MAX

/* Who owns a UMEM frame right now.  Counted in struct sl_counters. */
enum frame_owner {
	FRAME_FREE = 0,
	FRAME_FILL,		/* given to the kernel: fill ring or RX ring */
	FRAME_RX_HELD,		/* received; an event may point into it */
	FRAME_TX,		/* in the TX ring until its completion */
	FRAME_SNDQ,		/* a send queue keeps it for retransmission */
	FRAME_STATIC,		/* a static file's payload chunk (multi-buffer TX) */
	FRAME_OWNERS,
};

struct frame_meta {
	uint8_t owner;		/* enum frame_owner */
	uint8_t tx_pending;	/* submissions without a completion yet */
	uint8_t keep;		/* a send queue still needs it after TX */
	uint8_t dead;		/* FRAME_STATIC of a freed file: free when TX is done */
};

#define SL_MAX_QUEUES 16

/* One queue's AF_XDP socket and its four rings. */
struct sl_xq {
	struct xsk_socket *socket;
	struct xsk_ring_prod fill;
	struct xsk_ring_cons comp;
	struct xsk_ring_cons rx;
	struct xsk_ring_prod tx;
	uint32_t queue_id;
	int fd;
};

/* The AF_XDP side: UMEM, its rings and the frame allocator (xsk.c).  All
 * queues share one UMEM; TX goes out on the first queue's socket. */
struct sl_xsk {
	void *area;
	size_t area_len;
	uint32_t frame_size;
	uint32_t frame_shift;
	uint32_t frame_count;
	uint32_t ring_size;
	struct xsk_umem *umem;
	struct sl_xq q[SL_MAX_QUEUES];
	uint32_t nq;
	struct xsk_ring_prod *tx;	/* &q[0].tx: TX leaves on the first queue */
	int fd;				/* q[0]'s */
	uint32_t *free_stack;	/* indices of free frames */
	uint32_t free_top;
	struct frame_meta *meta;
	uint32_t *held;		/* frames held for the current events */
	uint32_t held_count;
	uint32_t tx_queued;	/* descriptors reserved+submitted since the kick */
	/* TX batches: descriptors queued now belong to batch tx_gen (a kick
	 * submits it and starts the next); every batch up to tx_out_gen has
	 * left the ring.  Another TX path orders itself after a
	 * connection's frames with these (xsk_tx_gone). */
	uint64_t tx_gen;
	uint64_t tx_out_gen;
	uint32_t fill_target;	/* frames we try to keep in the fill ring */
	/* test mode (sl_engine_open_test): no socket; transmitted frames are
	 * copied here for the caller to read and complete at once */
	bool sg;		/* bound with XDP_USE_SG: multi-buffer TX */
	bool test;
	uint8_t **cap;
	uint32_t *cap_len;
	uint8_t *cap_flags;	/* enum sl_tx_flags */
	uint32_t cap_head, cap_count;
};

#define SL_TEST_CAPTURE 8192	/* transmitted frames a test engine keeps */

/* The XDP program and its maps (steer.c). */
struct sl_steer {
	struct bpf_object *obj;
	int prog_fd;
	int link_fd;
	int ports_fd;
	int xsks_fd;
	int ifindex;
	int mode;		/* SL_XDP_NATIVE or SL_XDP_GENERIC */
};

/* GSO super-frames through a packet socket (tx_gso.c). */
struct sl_gso {
	int fd;			/* AF_PACKET socket, -1 if none */
	bool want;		/* tx_gso is not off (for a test engine: on) */
	bool on;		/* super-frames are used (socket or test capture) */
	bool capture;		/* test engine: they go to the TX capture */
	/* file super-frames: a pipe holding headers + the file's pages, spliced
	 * to the packet socket (gso_xmit_file); -1 until first used */
	int pipe[2];
	uint32_t page;		/* page size: one pipe buffer per page at most */
	uint32_t splice_pages;	/* file pages one super-frame may span, 0: none */
};

#define GSO_VNET_HLEN 10	/* struct virtio_net_hdr */
#define GSO_HDR_ROOM (GSO_VNET_HLEN + 14 + 20 + 60)
#define GSO_MAX_SEGS 64		/* segments per super-frame, at most */
#define GSO_MAX_IOV (GSO_MAX_SEGS + 1)

/*
 * One super-frame being built: buf holds the virtio header (written by
 * gso_xmit) and then the Ethernet, IPv4 and TCP headers (hdr_len bytes,
 * the TCP checksum field holding the pseudo-header sum); iov[1..niov)
 * the payload where it is.  iov[0] is gso_xmit's.
 */
struct gso_frame {
	uint8_t buf[GSO_HDR_ROOM];
	uint32_t hdr_len;
	uint16_t gso_size;
	uint32_t payload_len;
	struct iovec iov[GSO_MAX_IOV];
	uint32_t niov;
};

struct tcp_state_all;
struct sl_impair_state;
struct sl_static;

struct sl_engine {
	struct sl_config cfg;
	char ifname[32];
	struct sl_xsk xsk;
	struct sl_steer steer;
	struct sl_gso gso;
	struct sl_counters ctr;
	struct sl_event events[SL_MAX_EVENTS];
	uint32_t nevents;
	uint64_t now_us;	/* CLOCK_MONOTONIC, refreshed per poll/flush */
	uint64_t fake_now_us;	/* test engines: a clock the caller sets */
	uint32_t tx_budget;	/* data segments this flush may still send */
	/* connections that received segments, per millisecond (active_note) */
	struct {
		uint64_t end_us;	/* when the current millisecond ends */
		uint32_t epoch;		/* which millisecond; a connection's act_epoch */
		uint32_t count, prev;	/* this millisecond's, the last one's */
	} act;
	struct tcp_state_all *tcp;
	struct sl_impair_state *impair;	/* NULL unless a test impairs the link */
	struct sl_static *stat;		/* files the HTTP fast path serves */
};

/* engine.c: formats what failed into the caller's buffer */
void sl_errf(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* xsk.c */
int xsk_open(struct sl_xsk *x, const struct sl_config *cfg, int bind_flags,
	     char *err, size_t errlen);
int xsk_open_test(struct sl_xsk *x, const struct sl_config *cfg, char *err, size_t errlen);
int xsk_tx_take(struct sl_xsk *x, uint8_t *buf, size_t cap, uint32_t *flags);
int xsk_capture(struct sl_engine *eng, const struct iovec *iov, uint32_t niov,
		uint32_t flags);
void xsk_close(struct sl_xsk *x);
uint32_t xsk_frame_alloc(struct sl_xsk *x, bool may_use_reserve);
void xsk_frame_free(struct sl_xsk *x, uint32_t idx);
void xsk_refill(struct sl_engine *eng);
void xsk_release_held(struct sl_xsk *x);
int xsk_tx_submit_raw(struct sl_engine *eng, uint32_t frame, uint32_t off, uint32_t len);
int xsk_tx_submit_sg(struct sl_engine *eng, uint32_t hdr_frame, uint32_t hdr_len,
		     uint32_t payload_frame, uint32_t payload_len);
void xsk_reap_completions(struct sl_xsk *x);
int xsk_kick(struct sl_engine *eng);
bool xsk_tx_gone(struct sl_engine *eng, uint64_t gen);
int xsk_read_kernel_stats(struct sl_engine *eng);

static inline uint8_t *xsk_frame_data(const struct sl_xsk *x, uint32_t idx)
{
	return (uint8_t *)x->area + ((uint64_t)idx << x->frame_shift);
}

static inline uint32_t xsk_addr_frame(const struct sl_xsk *x, uint64_t addr)
{
	return (uint32_t)(addr >> x->frame_shift);
}

/* steer.c */
int steer_open(struct sl_steer *s, const char *ifname, int ifindex, int mode,
	       char *err, size_t errlen);
int steer_add_socket(struct sl_steer *s, uint32_t queue_id, int xsk_fd);
int steer_port(struct sl_steer *s, uint16_t port, bool on);
void steer_close(struct sl_steer *s);

/* net.c: parsing and checksums */
struct pkt {
	uint8_t *frame;		/* start of the Ethernet header */
	uint32_t len;		/* frame length */
	uint32_t frame_idx;
	const uint8_t *src_mac;
	uint32_t saddr, daddr;	/* network order */
	uint16_t sport, dport;	/* host order */
	uint32_t seq, ack;	/* host order */
	uint16_t wnd;		/* unscaled, host order */
	uint8_t flags;		/* TCP flags */
	uint8_t ttl;
	const uint8_t *opts;	/* TCP options */
	uint32_t opts_len;
	const uint8_t *payload;
	uint32_t payload_len;
	/* an ICMP error about our segment (net_parse returned 1): sport,
	 * dport and seq are those of the segment it quotes (parse_icmp) */
	uint16_t icmp_mtu;	/* RFC 1191 next-hop MTU, host order */
	uint32_t icmp_peer;	/* the quoted segment's destination */
};

#define IPPROTO_ICMP_NUM 1
#define IPPROTO_TCP_NUM 6

#define TH_FIN 0x01
#define TH_SYN 0x02
#define TH_RST 0x04
#define TH_PSH 0x08
#define TH_ACK 0x10
#define TH_URG 0x20
#define TH_ECE 0x40
#define TH_CWR 0x80

/* 0: a TCP segment; 1: an ICMP error about ours; -1: dropped, counted */
int net_parse(struct sl_engine *eng, struct pkt *p);
uint32_t csum_partial(const void *buf, size_t len, uint32_t sum);
uint16_t csum_fold(uint32_t sum);
uint32_t csum_pseudo(uint32_t saddr, uint32_t daddr, uint32_t tcp_len);

/* tx_gso.c */
int gso_open(struct sl_engine *eng, int ifindex, char *err, size_t errlen);
void gso_open_test(struct sl_engine *eng);
void gso_close(struct sl_engine *eng);
int gso_xmit(struct sl_engine *eng, struct gso_frame *g);
int gso_xmit_copy(struct sl_engine *eng, const uint8_t *data, uint32_t len);
int gso_xmit_file(struct sl_engine *eng, struct gso_frame *g, int fd, uint64_t off);
struct tcp_file;
bool gso_file_mapped(struct sl_engine *eng, struct tcp_file *f);
int gso_xmit_mapped(struct sl_engine *eng, struct gso_frame *g, struct tcp_file *f,
		    uint64_t off);
void gso_file_unmap(struct tcp_file *f);

/* impair.c */
bool impair_rx(struct sl_engine *eng, const uint8_t *frame, uint32_t len);
bool impair_tx(struct sl_engine *eng, const uint8_t *frame, uint32_t len);
bool impair_tx_gso(struct sl_engine *eng, const uint8_t *frame, uint32_t len);
void impair_release_rx(struct sl_engine *eng);
void impair_release_tx(struct sl_engine *eng);
uint64_t impair_next_due(const struct sl_engine *eng);
void impair_free(struct sl_engine *eng);

/* engine.c */
struct sl_event *engine_event(struct sl_engine *eng, uint32_t type, uint32_t conn);
int engine_tx_submit(struct sl_engine *eng, uint32_t frame, uint32_t off, uint32_t len);

static inline uint16_t get_be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

static inline void put_be16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static inline void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

#endif /* SPECLOOP_INTERNAL_H */
