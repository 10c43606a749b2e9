/* SPDX-License-Identifier: MIT */
/*
 * fuzz_input.c - libFuzzer target for the engine's input path.
 *
 * Each input drives one test engine (sl_engine_open_test) from open to
 * close, so that a crash file reproduces on its own and LeakSanitizer can
 * check every input.  The engine listens on FAST_PORT (HTTP fast path on,
 * files registered) and on PLAIN_PORT (connections go to "Python": this
 * file plays Python, reading every event and calling the sl_conn_* API).
 *
 * The input is a configuration byte (bits 0-1 receive buffer, 2 MTU 576,
 * 3 eight connections, 4 fast-path keep-alive, 5 a small rx_budget, 6 GSO
 * super-frames (tx_gso on), 7 peer 3 to the plain listener instead of a
 * closed port), then a program of operations.  Each starts with one byte, op % 12:
 *
 *   0 RAW    len:u16 bytes[len]          a frame exactly as given
 *   1 SYN    peer:u8 opt:u8 mss:u16 ws:u8 isn:u32
 *                                        the peer (re)opens its connection
 *                                        (opt bits: 1 MSS, 2 WS, 4 SACK, 8 TS)
 *   2 SEG    peer:u8 flags:u8 seqm:u8 ackm:u8 seq:u32 ack:u32 wnd:u16
 *            optm:u8 [(sack:u16 u16) x n] [optlen:u8 opts[]] len:u16 payload
 *                                        a segment from the peer, checksums
 *                                        right, sequence numbers relative
 *                                        to what the peer knows (seqm/ackm
 *                                        % 4: exact, +-int8, +-int16*16,
 *                                        raw; seqm bit 7: old timestamp;
 *                                        optm bits: 1 TS, 2 SACK blocks
 *                                        (n = 1 + (optm >> 2) % 3), 0x80
 *                                        raw options)
 *   3 MUT    as SEG, then how:u8 at:u16 val:u8: a byte flipped, the
 *            frame cut, IHL / fragment / total length set, padding added
 *            (checksums left as they fall), or the data offset or a TCP
 *            header byte set (TCP checksum made right again)
 *   4 FLUSH                              end of a loop iteration; what the
 *                                        engine sent updates the peers
 *   5 HTTP   peer:u8 which:u8 cut:u8     a canned request (see REQUESTS),
 *                                        in two segments cut at `cut`
 *   6 CLOCK  step:u8                     the clock moves, timers run
 *   7 API    which:u8 call:u8 arg:u16    sl_conn_* on an accepted conn (call
 *                                        10/11: a canned HTTP response, whole
 *                                        or cut, for hand-back's framing)
 *   8 ACK    peer:u8 wnd:u16             an honest ACK of what it received
 *   9 STATIC call:u8                     files replaced / removed / added
 *  10 LISTEN call:u8                     accepting off/on, close, reopen
 *  11 FLOOD  n:u8                        n SYNs from other ports (cookies)
 *
 * Reads past the end of the input give zeros, so every byte string is a
 * valid program.  Invariants checked after every step (a violation is a
 * crash, so libFuzzer keeps the input):
 *   - every frame the engine sends is IPv4/TCP from our address, within
 *     the MTU, with correct IP and TCP checksums; a GSO super-frame asks
 *     for TCPv4 segmentation at an MSS within the MTU, holds more than one
 *     segment, fits in 64 KiB and has the pseudo-header sum as its TCP
 *     checksum;
 *   - frames by owner add up to frames_total; drop counters never shrink;
 *     rx_held (the engine-wide account) is what the connections hold;
 *   - every DATA event's bytes are readable (ASan checks the pointer).
 * Around each injected frame the rest of its UMEM frame is poisoned, so
 * that a read past the frame's end is reported although UMEM is one big
 * mapping (this reads the engine's frame allocator through internal.h).
 */
#define _GNU_SOURCE
#include <sanitizer/asan_interface.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

#define FAST_PORT 80
#define PLAIN_PORT 81
#define CLOSED_PORT 82
#define NPEERS 4
#define MAX_OPS 256
#define MAX_CONNS_SEEN 64

#define TH_F 0x01
#define TH_S 0x02
#define TH_R 0x04
#define TH_P 0x08
#define TH_A 0x10

static const uint8_t our_mac[6] = { 2, 0, 0, 0, 0, 2 };
static const uint8_t peer_mac[6] = { 2, 0, 0, 0, 0, 1 };
static const uint8_t our_ip[4] = { 10, 99, 0, 2 };
static const uint8_t peer_ip[4] = { 10, 99, 0, 1 };

static const char *const REQUESTS[] = {
	"GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
	"HEAD /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
	"GET /big HTTP/1.1\r\nRange: bytes=1000-15000\r\n\r\n",
	"GET /a HTTP/1.1\r\nIf-None-Match: W/\"e-a\"\r\n\r\n",
	"GET /a HTTP/1.1\r\nConnection: close\r\n\r\n",
	"GET /e HTTP/1.1\r\n\r\nGET /a HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\n\r\n",
	"GET /big HTTP/1.1\r\nRange: bytes=-700\r\nIf-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n",
	"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
	"GET /a%2e%2e/../big HTTP/1.1\r\n\r\n",
	"GET /a HTTP/1.1\r\nRange: bytes=5000-\r\n\r\n",
	"GET /big HTTP/1.1\r\n",
	"GET /a HTTP/1.1\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n",
	/* hand-back: Python's requests framed, the ones after them held */
	"GET /dyn HTTP/1.1\r\n\r\nGET /a HTTP/1.1\r\n\r\nHEAD /dyn HTTP/1.1\r\n\r\nGET /e HTTP/1.1\r\n\r\n",
	"POST /p HTTP/1.1\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n0123456789GET /a HTTP/1.1\r\n\r\n",
	"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n",
	"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
	"GET /dyn HTTP/1.0\r\n\r\n",
	/* precompressed variants: br in the store, gzip not, q=0 */
	"GET /big HTTP/1.1\r\nAccept-Encoding: gzip, deflate, br\r\nRange: bytes=100-\r\n\r\n"
	"GET /big HTTP/1.1\r\nAccept-Encoding: gzip\r\n\r\nGET /big HTTP/1.1\r\nAccept-Encoding: br;q=0\r\n\r\n",
};
#define NREQUESTS (sizeof(REQUESTS) / sizeof(REQUESTS[0]))

/* What "Python" answers with (op API 10/11): framing http_frame.c judges. */
static const char *const RESPONSES[] = {
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;e=1\r\nok\r\n0\r\nT: 1\r\n\r\n",
	"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxEXTRA",
	"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
	"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\n\r\nclose-delimited",
	"HTTP/1.1 2x0 OK\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 40000\r\n\r\n",
};
#define NRESPONSES (sizeof(RESPONSES) / sizeof(RESPONSES[0]))

/* ---- reading the program ------------------------------------------------ */

struct input {
	const uint8_t *p;
	size_t n;
};

static uint8_t u8(struct input *in)
{
	if (!in->n)
		return 0;
	in->n--;
	return *in->p++;
}

static uint16_t u16(struct input *in)
{
	uint16_t v = u8(in);

	return (uint16_t)(v << 8 | u8(in));
}

static uint32_t u32(struct input *in)
{
	uint32_t v = u16(in);

	return v << 16 | u16(in);
}

/* Up to `want` bytes of the input, by pointer (fewer at its end). */
static size_t bytes(struct input *in, size_t want, const uint8_t **out)
{
	if (want > in->n)
		want = in->n;
	*out = in->p;
	in->p += want;
	in->n -= want;
	return want;
}

/* ---- the world around the engine --------------------------------------- */

struct peer {
	uint16_t sport, dport;
	uint32_t snd_nxt;	/* the peer's next sequence number */
	uint32_t rcv_nxt;	/* the engine's next one, as far as the peer saw */
	uint32_t tsval, ts_recent;
	uint8_t ts, sack;
};

struct world {
	struct sl_engine *eng;
	struct peer peer[NPEERS];
	uint32_t conns[MAX_CONNS_SEEN];	/* accepted, as Python would hold them */
	uint32_t nconns;
	uint64_t now;
	uint32_t mtu;
	int listener_fast, listener_plain;
	struct sl_counters ctr;
	uint16_t flood_port;
	uint8_t frame[2048];
	uint8_t tx[70000];	/* what the engine sent, a super-frame at most */
	volatile uint32_t sink;
};

static int memfd = -1;		/* a file for sl_conn_sendfile */
static int verbose;		/* FUZZ_VERBOSE=1: what each input reached */
/* the bytes of writes and of the sendfile file: as long as the longest
 * write op_api asks for (a 16-bit length times 16) */
static uint8_t pattern[1 << 20];
#define SENDFILE_BYTES 65536

static void fail(const char *what)
{
	fprintf(stderr, "fuzz_input: invariant broken: %s\n", what);
	abort();
}

static uint32_t sum16(const uint8_t *p, size_t len, uint32_t s)
{
	size_t i;

	for (i = 0; i + 1 < len; i += 2)
		s += (uint32_t)p[i] << 8 | p[i + 1];
	if (len & 1)
		s += (uint32_t)p[len - 1] << 8;
	return s;
}

static uint16_t fold(uint32_t s)
{
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)~s;
}

static void be16(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int seq_after(uint32_t a, uint32_t b)
{
	return (int32_t)(a - b) > 0;
}

static uint16_t tcp_csum(const uint8_t *ip, const uint8_t *tcp, size_t tcp_len)
{
	uint8_t ph[12];

	memcpy(ph, ip + 12, 8);
	ph[8] = 0;
	ph[9] = 6;
	be16(ph + 10, (uint32_t)tcp_len);
	return fold(sum16(tcp, tcp_len, sum16(ph, 12, 0)));
}

/*
 * Ethernet + IPv4 + TCP into w->frame with both checksums right; returns
 * the length.  opts are used as given (padded to 4 bytes, at most 40).
 */
static size_t build(struct world *w, uint16_t sport, uint16_t dport, uint32_t seq,
		    uint32_t ack, uint8_t flags, uint16_t wnd, const uint8_t *opts,
		    size_t optlen, const uint8_t *payload, size_t len)
{
	uint8_t *f = w->frame, *ip = f + 14, *tcp = ip + 20;
	size_t olen = (optlen + 3) & ~(size_t)3, tcp_len;

	if (olen > 40)
		olen = optlen = 40;
	if (len > sizeof(w->frame) - 14 - 20 - 20 - olen)
		len = sizeof(w->frame) - 14 - 20 - 20 - olen;
	tcp_len = 20 + olen + len;
	memcpy(f, our_mac, 6);
	memcpy(f + 6, peer_mac, 6);
	be16(f + 12, 0x0800);
	ip[0] = 0x45;
	ip[1] = 0;
	be16(ip + 2, (uint32_t)(20 + tcp_len));
	be16(ip + 4, 0x4242);
	be16(ip + 6, 0x4000);
	ip[8] = 64;
	ip[9] = 6;
	be16(ip + 10, 0);
	memcpy(ip + 12, peer_ip, 4);
	memcpy(ip + 16, our_ip, 4);
	be16(ip + 10, fold(sum16(ip, 20, 0)));
	be16(tcp, sport);
	be16(tcp + 2, dport);
	be32(tcp + 4, seq);
	be32(tcp + 8, ack);
	tcp[12] = (uint8_t)(((20 + olen) / 4) << 4);
	tcp[13] = flags;
	be16(tcp + 14, wnd);
	be16(tcp + 16, 0);
	be16(tcp + 18, 0);
	memset(tcp + 20, 0, olen);
	if (optlen)
		memcpy(tcp + 20, opts, optlen);
	if (len)
		memcpy(tcp + 20 + olen, payload, len);
	be16(tcp + 16, tcp_csum(ip, tcp, tcp_len));
	return 14 + 20 + tcp_len;
}

/* ---- talking to the engine ------------------------------------------------ */

static void check_counters(struct world *w)
{
	struct sl_counters c;
	const uint64_t *now = (const uint64_t *)&c, *was = (const uint64_t *)&w->ctr;
	size_t i;

	if (sl_engine_counters(w->eng, &c))
		fail("sl_engine_counters");
	if (c.frames_free + c.frames_fill + c.frames_rx_held + c.frames_tx + c.frames_sndq !=
	    c.frames_total)
		fail("frames by owner do not add up to frames_total");
	if (c.rx_held != c.rxq_bytes + c.ooo_bytes)
		fail("rx_held is not the sum of what the connections hold");
	/* the drop_* fields, from drop_short to drop_bad_tcp_flags, the later
	 * ones, and the ICMP ones, never go down */
	for (i = offsetof(struct sl_counters, drop_short) / 8;
	     i <= offsetof(struct sl_counters, drop_bad_tcp_flags) / 8; i++)
		if (now[i] < was[i])
			fail("a drop counter went down");
	for (i = offsetof(struct sl_counters, drop_no_listener) / 8;
	     i <= offsetof(struct sl_counters, drop_bad_sack) / 8; i++)
		if (now[i] < was[i])
			fail("a drop counter went down");
	for (i = offsetof(struct sl_counters, drop_bad_icmp) / 8;
	     i <= offsetof(struct sl_counters, pmtu_cached) / 8; i++)
		if (now[i] < was[i])
			fail("an ICMP or path MTU counter went down");
	if (c.pmtu_reductions > c.icmp_frag_needed)
		fail("an MSS lowered without an ICMP message taken");
	w->ctr = c;
}

static void forget_conn(struct world *w, uint32_t conn)
{
	uint32_t i;

	for (i = 0; i < w->nconns; i++)
		if (w->conns[i] == conn) {
			w->conns[i] = w->conns[--w->nconns];
			return;
		}
}

/* Python's side of a poll: every event read, DATA bytes touched. */
static void take_events(struct world *w, int n)
{
	const struct sl_event *ev = sl_engine_events(w->eng);
	uint32_t s = 0;
	int i;

	if (n < 0)
		fail("poll/inject returned an error");
	for (i = 0; i < n; i++) {
		switch (ev[i].type) {
		case SL_EV_ACCEPT:
			if (w->nconns < MAX_CONNS_SEEN)
				w->conns[w->nconns++] = ev[i].conn;
			break;
		case SL_EV_DATA:
			if (!ev[i].len || !ev[i].data)
				fail("empty DATA event");
			for (uint32_t k = 0; k < ev[i].len; k++)
				s += ev[i].data[k];
			break;
		case SL_EV_CLOSED:
		case SL_EV_RETURNED:	/* back with the fast path: not "Python's" now */
			forget_conn(w, ev[i].conn);
			break;
		case SL_EV_EOF:
		case SL_EV_WRITABLE:
		case SL_EV_CONNECTED:
			break;
		default:
			fail("unknown event type");
		}
	}
	w->sink += s;
}

static void poll_engine(struct world *w)
{
	take_events(w, sl_engine_poll(w->eng, 0));
}

/* One received frame; the bytes around it in its UMEM frame are poisoned. */
static void inject(struct world *w, const uint8_t *frame, size_t len)
{
	struct sl_xsk *x = &w->eng->xsk;
	uint8_t *umem = NULL;
	uint64_t due;

	/* the poll sl_engine_inject starts with has nothing left to do now,
	 * so the frame it takes is the top of the free stack */
	poll_engine(w);
	due = sl_engine_next_timer(w->eng);
	if (x->free_top && len <= x->frame_size - 256 && !(due && due <= w->now)) {
		umem = xsk_frame_data(x, x->free_stack[x->free_top - 1]);
		ASAN_POISON_MEMORY_REGION(umem, 256);
		ASAN_POISON_MEMORY_REGION(umem + 256 + len, x->frame_size - 256 - len);
	}
	take_events(w, sl_engine_inject(w->eng, frame, len));
	if (umem)
		ASAN_UNPOISON_MEMORY_REGION(umem, x->frame_size);
	check_counters(w);
}

static struct peer *peer_by_port(struct world *w, uint16_t sport)
{
	for (int i = 0; i < NPEERS; i++)
		if (w->peer[i].sport == sport)
			return &w->peer[i];
	return NULL;
}

/* A super-frame's virtio_net_hdr (host byte order): what the kernel needs
 * to cut it as TCPv4 at the MSS, with the checksum completed per segment. */
static void check_vnet(struct world *w, const uint8_t *v, const uint8_t *f, uint32_t len)
{
	uint16_t hdr_len, gso_size, csum_start, csum_offset;
	uint32_t doff = (uint32_t)(f[14 + 20 + 12] >> 4) * 4;

	memcpy(&hdr_len, v + 2, 2);
	memcpy(&gso_size, v + 4, 2);
	memcpy(&csum_start, v + 6, 2);
	memcpy(&csum_offset, v + 8, 2);
	if (v[0] != 1 || v[1] != 1 || csum_start != 34 || csum_offset != 16)
		fail("sent a super-frame without TCPv4 GSO and NEEDS_CSUM");
	if (hdr_len != 34 + doff || !gso_size || hdr_len + gso_size > w->mtu + 14)
		fail("sent a super-frame with a bad header length or segment size");
	if (len <= hdr_len + gso_size || len > 65535)
		fail("sent a super-frame of one segment or more than 64 KiB");
}

/* What the engine sent: checked, and learnt by the peers it went to. */
static void take_tx(struct world *w)
{
	uint32_t flags;
	int n;

	while ((n = sl_engine_tx_next(w->eng, w->tx, sizeof(w->tx), &flags)) > 0) {
		bool gso = flags & SL_TX_GSO;
		const uint8_t *buf = w->tx + (gso ? 10 : 0), *ip = buf + 14, *tcp = ip + 20;
		uint32_t tot, doff, seq, end, plen, len = (uint32_t)n - (gso ? 10 : 0);
		struct peer *p;

		if (len < 54 || (size_t)n > sizeof(w->tx) || (!gso && len > w->mtu + 14))
			fail("sent a frame of a bad length");
		if (memcmp(buf + 6, our_mac, 6) || buf[12] != 8 || buf[13] != 0 || ip[0] != 0x45 ||
		    ip[9] != 6 || memcmp(ip + 12, our_ip, 4))
			fail("sent a frame that is not IPv4/TCP from us");
		tot = (uint32_t)ip[2] << 8 | ip[3];
		if (tot != len - 14)
			fail("sent a frame whose IP length is not its length");
		if (fold(sum16(ip, 20, 0)) != 0)
			fail("sent a frame with a bad IP checksum");
		doff = (uint32_t)(tcp[12] >> 4) * 4;
		if (doff < 20 || doff > tot - 20)
			fail("sent a frame with a bad data offset");
		if (gso) {
			uint8_t ph[12];

			check_vnet(w, w->tx, buf, len);
			memcpy(ph, ip + 12, 8);
			ph[8] = 0;
			ph[9] = 6;
			be16(ph + 10, tot - 20);
			if (((uint32_t)tcp[16] << 8 | tcp[17]) != (uint16_t)~fold(sum16(ph, 12, 0)))
				fail("sent a super-frame without the pseudo-header sum");
		} else if (tcp_csum(ip, tcp, tot - 20) != 0) {
			fail("sent a frame with a bad TCP checksum");
		}
		p = peer_by_port(w, (uint16_t)(tcp[2] << 8 | tcp[3]));
		if (!p)
			continue;
		seq = rd32(tcp + 4);
		plen = tot - 20 - doff;
		if ((tcp[13] & (TH_S | TH_A)) == (TH_S | TH_A)) {
			p->rcv_nxt = seq + 1;
		} else if (!(tcp[13] & TH_R)) {
			end = seq + plen + ((tcp[13] & TH_F) ? 1 : 0);
			if (!seq_after(seq, p->rcv_nxt) && seq_after(end, p->rcv_nxt))
				p->rcv_nxt = end;
		}
		/* timestamps: NOP NOP TS as the engine lays them out */
		if (doff >= 32 && tcp[20] == 1 && tcp[21] == 1 && tcp[22] == 8)
			p->ts_recent = rd32(tcp + 24);
	}
	if (n < 0)
		fail("sl_engine_tx_next failed");
}

static void flush(struct world *w)
{
	if (sl_engine_flush(w->eng) < 0)
		fail("sl_engine_flush failed");
	take_tx(w);
	check_counters(w);
}

/* ---- operations --------------------------------------------------------- */

static size_t peer_opts(struct peer *p, uint8_t *o)
{
	size_t n = 0;

	if (p->ts) {
		o[n++] = 1;
		o[n++] = 1;
		o[n++] = 8;
		o[n++] = 10;
		be32(o + n, p->tsval);
		be32(o + n + 4, p->ts_recent);
		n += 8;
	}
	return n;
}

static void op_syn(struct world *w, struct input *in)
{
	struct peer *p = &w->peer[u8(in) % NPEERS];
	uint8_t opt = u8(in), o[40];
	uint16_t mss = u16(in);
	uint8_t ws = u8(in);
	size_t n = 0;

	p->snd_nxt = u32(in);
	p->ts = (opt & 8) != 0;
	p->sack = (opt & 4) != 0;
	if (opt & 1) {
		o[n++] = 2;
		o[n++] = 4;
		be16(o + n, mss);
		n += 2;
	}
	if (opt & 4) {
		o[n++] = 4;
		o[n++] = 2;
	}
	if (opt & 2) {
		o[n++] = 1;
		o[n++] = 3;
		o[n++] = 3;
		o[n++] = ws;
	}
	if (opt & 8) {
		o[n++] = 8;
		o[n++] = 10;
		be32(o + n, ++p->tsval);
		be32(o + n + 4, 0);
		n += 8;
	}
	inject(w, w->frame, build(w, p->sport, p->dport, p->snd_nxt, 0, TH_S, 65535, o, n,
				  NULL, 0));
	p->snd_nxt++;
}

/* A segment from a peer: builds it into w->frame, returns its length. */
static size_t make_seg(struct world *w, struct input *in, struct peer **who)
{
	struct peer *p = &w->peer[u8(in) % NPEERS];
	uint8_t flags = u8(in), seqm = u8(in), ackm = u8(in), optm, o[48];
	uint32_t seq = u32(in), ack = u32(in);
	uint16_t wnd = u16(in);
	const uint8_t *payload, *raw;
	size_t optlen, len;

	/* sequence numbers: right, near, or anything */
	switch (seqm % 4) {
	case 0: seq = p->snd_nxt; break;
	case 1: seq = p->snd_nxt + (int8_t)seq; break;
	case 2: seq = p->snd_nxt + (int16_t)seq * 16; break;
	default: break;
	}
	switch (ackm % 4) {
	case 0: ack = p->rcv_nxt; break;
	case 1: ack = p->rcv_nxt + (int8_t)ack; break;
	case 2: ack = p->rcv_nxt + (int16_t)ack * 16; break;
	default: break;
	}
	if (!(seqm & 0x80))
		p->tsval++;		/* else an old timestamp: PAWS */
	optm = u8(in);
	optlen = (optm & 1) ? peer_opts(p, o) : 0;
	if (optm & 2) {
		/* SACK blocks near what the engine sent */
		uint8_t nb = (uint8_t)(1 + (optm >> 2) % 3);

		o[optlen++] = 1;
		o[optlen++] = 1;
		o[optlen++] = 5;
		o[optlen++] = (uint8_t)(2 + 8 * nb);
		for (uint8_t b = 0; b < nb; b++) {
			be32(o + optlen, p->rcv_nxt + (int16_t)u16(in) * 8);
			be32(o + optlen + 4, p->rcv_nxt + (int16_t)u16(in) * 8);
			optlen += 8;
		}
	}
	if (optm & 0x80) {
		/* options exactly as the input has them */
		optlen = bytes(in, u8(in) % 41, &raw);
		memcpy(o, raw, optlen);
	}
	len = bytes(in, u16(in) % 1461, &payload);
	if (seq == p->snd_nxt)
		p->snd_nxt += (uint32_t)len + ((flags & TH_S) ? 1 : 0) + ((flags & TH_F) ? 1 : 0);
	*who = p;
	return build(w, p->sport, p->dport, seq, ack, flags, wnd, o, optlen, payload, len);
}

static void op_seg(struct world *w, struct input *in)
{
	struct peer *p;
	size_t len = make_seg(w, in, &p);

	inject(w, w->frame, len);
}

static void op_mut(struct world *w, struct input *in)
{
	struct peer *p;
	size_t len = make_seg(w, in, &p);
	uint8_t how = u8(in), val;
	uint16_t at = u16(in);

	val = u8(in);
	switch (how % 8) {
	case 0:	/* one byte anywhere (checksums now wrong, most likely) */
		w->frame[at % len] ^= val ? val : 1;
		break;
	case 1:	/* cut short */
		len = at % len;
		break;
	case 2:	/* IHL */
		w->frame[14] = (uint8_t)(0x40 | (val & 15));
		break;
	case 3:	/* fragment bits and offset */
		be16(w->frame + 20, at);
		break;
	case 4:	/* IP total length */
		be16(w->frame + 16, at);
		break;
	case 5:	/* data offset, TCP checksum fixed up */
		w->frame[14 + 20 + 12] = (uint8_t)(val << 4);
		be16(w->frame + 14 + 20 + 16, 0);
		be16(w->frame + 14 + 20 + 16,
		     tcp_csum(w->frame + 14, w->frame + 34, len - 34));
		break;
	case 6:	/* Ethernet padding */
		if (len + val <= sizeof(w->frame)) {
			memset(w->frame + len, at & 0xff, val);
			len += val;
		}
		break;
	default: /* a byte of the TCP header or options, checksum fixed up */
		w->frame[34 + at % (len - 34)] = val;
		be16(w->frame + 14 + 20 + 16, 0);
		be16(w->frame + 14 + 20 + 16,
		     tcp_csum(w->frame + 14, w->frame + 34, len - 34));
		break;
	}
	inject(w, w->frame, len);
}

static void op_http(struct world *w, struct input *in)
{
	struct peer *p = &w->peer[u8(in) % NPEERS];
	const char *req = REQUESTS[u8(in) % NREQUESTS];
	size_t len = strlen(req), cut = u8(in) % (len + 1);
	uint8_t o[12];
	size_t olen;

	if (cut) {
		p->tsval++;
		olen = peer_opts(p, o);
		inject(w, w->frame, build(w, p->sport, p->dport, p->snd_nxt, p->rcv_nxt,
					  TH_A | TH_P, 65535, o, olen, (const uint8_t *)req, cut));
		p->snd_nxt += (uint32_t)cut;
	}
	if (cut < len) {
		p->tsval++;
		olen = peer_opts(p, o);
		inject(w, w->frame, build(w, p->sport, p->dport, p->snd_nxt, p->rcv_nxt,
					  TH_A | TH_P, 65535, o, olen,
					  (const uint8_t *)req + cut, len - cut));
		p->snd_nxt += (uint32_t)(len - cut);
	}
}

static void op_ack(struct world *w, struct input *in)
{
	struct peer *p = &w->peer[u8(in) % NPEERS];
	uint16_t wnd = u16(in);
	uint8_t o[12];
	size_t olen;

	p->tsval++;
	olen = peer_opts(p, o);
	inject(w, w->frame, build(w, p->sport, p->dport, p->snd_nxt, p->rcv_nxt, TH_A,
				  wnd ? wnd : 65535, o, olen, NULL, 0));
}

/*
 * A router's ICMP "fragmentation needed" (RFC 1191) about what the engine
 * sent a peer: the quoted sequence number near what the peer has (in
 * flight or not), any MTU; sometimes another type or code, a quote cut
 * short, or a wrong checksum.
 */
static void op_icmp(struct world *w, struct input *in)
{
	static const uint8_t router_ip[4] = { 10, 99, 0, 254 };
	struct peer *p = &w->peer[u8(in) % NPEERS];
	uint8_t how = u8(in), *f = w->frame, *ip = f + 14, *icmp = ip + 20, *q = icmp + 8;
	uint16_t mtu = u16(in);
	uint32_t seq = p->rcv_nxt + (uint32_t)((int16_t)u16(in) * 4);
	size_t quote = (how & 0x40) ? u8(in) % 29 : 28, len = 8 + quote;

	memset(f, 0, 14 + 20 + 8 + 28);
	memcpy(f, our_mac, 6);
	memcpy(f + 6, peer_mac, 6);
	be16(f + 12, 0x0800);
	/* the quote: our IPv4 header, the first 8 bytes of our TCP header */
	q[0] = 0x45;
	be16(q + 2, 1500);
	be16(q + 6, 0x4000);
	q[8] = 64;
	q[9] = 6;
	memcpy(q + 12, our_ip, 4);
	memcpy(q + 16, peer_ip, 4);
	be16(q + 10, fold(sum16(q, 20, 0)));
	be16(q + 20, p->dport);
	be16(q + 22, p->sport);
	be32(q + 24, seq);
	icmp[0] = (how & 1) ? (uint8_t)(how >> 4) : 3;
	icmp[1] = (how & 2) ? (uint8_t)((how >> 2) & 15) : 4;
	be16(icmp + 6, mtu);
	be16(icmp + 2, fold(sum16(icmp, len, 0)));
	if (how & 0x80)
		icmp[2] ^= 0x5a;
	ip[0] = 0x45;
	be16(ip + 2, (uint32_t)(20 + len));
	ip[8] = 64;
	ip[9] = 1;
	memcpy(ip + 12, router_ip, 4);
	memcpy(ip + 16, our_ip, 4);
	be16(ip + 10, fold(sum16(ip, 20, 0)));
	inject(w, f, 14 + 20 + len);
}

static void op_clock(struct world *w, struct input *in)
{
	static const uint64_t steps_ms[8] = { 1, 10, 40, 250, 1000, 5000, 65000, 3600000 };

	w->now += steps_ms[u8(in) % 8] * 1000;
	sl_engine_set_clock(w->eng, w->now);
	poll_engine(w);
	flush(w);
}

static void op_api(struct world *w, struct input *in)
{
	uint8_t which = u8(in), call = u8(in);
	uint16_t arg = u16(in);
	uint32_t conn;
	int rc = 0;

	if (!w->nconns)
		return;
	conn = w->conns[which % w->nconns];
	switch (call % 12) {
	case 0:
	case 1:
		rc = sl_conn_write(w->eng, conn, pattern, (size_t)arg * (call % 2 ? 16 : 1));
		break;
	case 2:
		rc = sl_conn_sendfile(w->eng, conn, memfd, arg, (uint32_t)arg * 8);
		break;
	case 3:
		rc = sl_conn_shutdown_write(w->eng, conn);
		break;
	case 4:
		rc = sl_conn_close(w->eng, conn);
		forget_conn(w, conn);
		break;
	case 5:
		rc = sl_conn_abort(w->eng, conn);
		forget_conn(w, conn);
		break;
	case 6:
		rc = sl_conn_pause_reading(w->eng, conn);
		break;
	case 7:
		rc = sl_conn_resume_reading(w->eng, conn);
		break;
	case 8:
		rc = sl_conn_setopt(w->eng, conn, 1 + arg % 8, arg >> 3);
		break;
	case 10:
	case 11: {
		/* a canned response, whole (10) or its first bytes (11) */
		const char *r = RESPONSES[arg % NRESPONSES];
		size_t len = strlen(r);

		if (call % 12 == 11)
			len = (arg >> 8) % (len + 1);
		rc = sl_conn_write(w->eng, conn, (const uint8_t *)r, len);
		break;
	}
	default: {
		struct sl_conn_info info;

		rc = sl_conn_info(w->eng, conn, &info);
		break;
	}
	}
	/* errors are fine (the connection may be gone); only the range is not */
	if (rc < -4095)
		fail("an sl_conn_* call returned a bad value");
}

static void put_files(struct world *w, uint8_t gen)
{
	static char a[3000], big[20000];

	memset(a, 'a' + gen % 26, sizeof(a));
	memcpy(big, pattern, sizeof(big));
	big[0] = (char)gen;
	sl_static_put(w->eng, FAST_PORT, "/a", (const uint8_t *)a, sizeof(a), "text/plain",
		      "e-a", "Fri, 27 Nov 2026 03:22:42 GMT", 1795749762000000000LL, NULL, 0);
	sl_static_put(w->eng, FAST_PORT, "/big", (const uint8_t *)big, sizeof(big),
		      "application/octet-stream", "e-big", "Fri, 27 Nov 2026 03:22:42 GMT",
		      1795749762000000000LL, "Cache-Control: no-cache\r\n",
		      SL_STATIC_HAS_VARIANTS | SL_STATIC_HAS_BR | SL_STATIC_HAS_GZIP);
	/* its .br sibling in the store, its .gz not (those go to "Python") */
	sl_static_put_variant(w->eng, FAST_PORT, "/big", "br", (const uint8_t *)big + 100,
			      sizeof(big) / 3, "application/octet-stream", "e-big-br",
			      "Fri, 27 Nov 2026 03:22:43 GMT", 1795749763000000000LL,
			      "Cache-Control: no-cache\r\n");
	sl_static_put(w->eng, FAST_PORT, "/e", NULL, 0, "text/plain", "e-e",
		      "Fri, 27 Nov 2026 03:22:42 GMT", 0, NULL, SL_STATIC_HAS_VARIANTS);
}

static void op_static(struct world *w, struct input *in)
{
	uint8_t call = u8(in);

	switch (call % 4) {
	case 0:
		put_files(w, call);
		break;
	case 1:
		sl_static_remove(w->eng, FAST_PORT, "/a");
		break;
	case 2:
		sl_static_remove(w->eng, FAST_PORT, "/big");
		break;
	default:
		sl_static_config(w->eng, "fuzz", call & 0x10 ? 30000 : 0, (call >> 5) * 1000,
				 "Range Not Satisfiable");
		break;
	}
}

static void op_listen(struct world *w, struct input *in)
{
	uint8_t call = u8(in);
	int *l = (call & 1) ? &w->listener_plain : &w->listener_fast;
	uint16_t port = (call & 1) ? PLAIN_PORT : FAST_PORT;

	switch ((call >> 1) % 4) {
	case 0:
		if (*l >= 0)
			sl_listen_set_accepting(w->eng, (uint32_t)*l, 0);
		break;
	case 1:
		if (*l >= 0)
			sl_listen_set_accepting(w->eng, (uint32_t)*l, 1);
		poll_engine(w);
		break;
	case 2:
		if (*l >= 0)
			sl_listen_close(w->eng, (uint32_t)*l);
		*l = -1;
		break;
	default:
		if (*l < 0) {
			*l = sl_listen(w->eng, port, 4, 1);
			if (*l >= 0 && port == FAST_PORT)
				sl_listen_set_fast(w->eng, (uint32_t)*l, 1);
		}
		break;
	}
}

static void op_flood(struct world *w, struct input *in)
{
	uint8_t n = u8(in) % 32;

	for (uint8_t i = 0; i < n; i++) {
		uint16_t sport = (uint16_t)(50000 + w->flood_port++ % 10000);

		inject(w, w->frame, build(w, sport, FAST_PORT, 1000u * sport, 0, TH_S, 65535,
					  (const uint8_t *)"\x02\x04\x05\xb4", 4, NULL, 0));
	}
}

/* ---- libFuzzer ------------------------------------------------------------ */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	for (size_t i = 0; i < sizeof(pattern); i++)
		pattern[i] = (uint8_t)(i * 31 + i / 256);
	verbose = getenv("FUZZ_VERBOSE") != NULL;
	memfd = memfd_create("fuzz-sendfile", 0);
	/* 64 KiB: most sendfile ops (offset and length from the input) run
	 * past its end, and the engine's short-file path runs too */
	if (memfd < 0 || write(memfd, pattern, SENDFILE_BYTES) != (ssize_t)SENDFILE_BYTES)
		fail("memfd for sendfile");
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint32_t rcvbufs[4] = { 4096, 65535, 262144, 1 << 20 };
	struct input in = { data, size };
	struct sl_config cfg;
	struct world *w = calloc(1, sizeof(*w));
	char err[256];
	uint8_t conf = u8(&in);
	int ops;

	if (!w)
		return 0;
	memset(&cfg, 0, sizeof(cfg));
	cfg.ifname = "fuzz";
	cfg.frame_size = 2048;
	cfg.frame_count = 512;
	cfg.ring_size = 64;
	memcpy(cfg.mac, our_mac, 6);
	memcpy(&cfg.ipv4, our_ip, 4);
	cfg.mtu = (conf & 4) ? 576 : 1500;
	cfg.max_conns = (conf & 8) ? 8 : 64;
	cfg.sndbuf = 65536;
	cfg.rcvbuf = rcvbufs[conf & 3];
	cfg.time_wait_ms = 60000;
	cfg.rto_min_ms = 200;
	cfg.rto_max_ms = 120000;
	cfg.retries = 8;
	cfg.syn_retries = 3;
	cfg.delack_ms = 40;
	cfg.fin_timeout_ms = 60000;
	cfg.seed = 0x5eed;	/* the same ISNs and cookies every run */
	cfg.rx_budget = (conf & 32) ? 16384 : 0;	/* engine-wide backpressure */
	cfg.tx_gso = (conf & 64) ? SL_TX_GSO_ON : SL_TX_GSO_OFF;
	w->mtu = cfg.mtu;
	if (sl_engine_open_test(&cfg, &w->eng, err, sizeof(err)))
		fail(err);
	w->now = 1000000000;
	sl_engine_set_clock(w->eng, w->now);
	w->listener_fast = sl_listen(w->eng, FAST_PORT, 4, 1);
	w->listener_plain = sl_listen(w->eng, PLAIN_PORT, 4, 1);
	if (w->listener_fast < 0 || w->listener_plain < 0)
		fail("sl_listen");
	sl_listen_set_fast(w->eng, (uint32_t)w->listener_fast, 1);
	put_files(w, 0);
	sl_static_config(w->eng, "fuzz", 0, (conf & 16) ? 5000 : 0,
			 "Requested Range Not Satisfiable");
	for (int i = 0; i < NPEERS; i++) {
		w->peer[i].sport = (uint16_t)(40000 + i);
		w->peer[i].dport = i == 2 ? PLAIN_PORT : i == 3 ? CLOSED_PORT - (conf >> 7) : FAST_PORT;
		w->peer[i].tsval = 1000;
	}
	check_counters(w);

	for (ops = 0; in.n && ops < MAX_OPS; ops++) {
		switch (u8(&in) % 13) {
		case 0: {
			const uint8_t *raw;
			size_t len = bytes(&in, u16(&in) % 1600, &raw);

			inject(w, raw, len);
			break;
		}
		case 1: op_syn(w, &in); break;
		case 2: op_seg(w, &in); break;
		case 3: op_mut(w, &in); break;
		case 4: flush(w); break;
		case 5: op_http(w, &in); break;
		case 6: op_clock(w, &in); break;
		case 7: op_api(w, &in); break;
		case 8: op_ack(w, &in); break;
		case 9: op_static(w, &in); break;
		case 10: op_listen(w, &in); break;
		case 11: op_icmp(w, &in); break;
		default: op_flood(w, &in); break;
		}
	}
	flush(w);
	/* a last stretch of time: every timer that is due fires */
	for (int i = 0; i < 4; i++) {
		w->now += 70000000;
		sl_engine_set_clock(w->eng, w->now);
		poll_engine(w);
		flush(w);
	}
	if (verbose)
		fprintf(stderr, "fuzz_input: %d ops; opened %llu, fast requests %llu, handovers "
			"%llu, handbacks %llu, cookies %llu/%llu, retransmits %llu, rst sent %llu, "
			"tx %llu (super-frames %llu), dropped %llu, MSS lowered %llu\n", ops,
			(unsigned long long)w->ctr.conns_opened,
			(unsigned long long)w->ctr.fast_requests,
			(unsigned long long)w->ctr.fast_handovers,
			(unsigned long long)w->ctr.fast_handbacks,
			(unsigned long long)w->ctr.syncookies_sent,
			(unsigned long long)w->ctr.syncookies_ok,
			(unsigned long long)w->ctr.retransmits,
			(unsigned long long)w->ctr.rst_sent,
			(unsigned long long)w->ctr.tx_packets,
			(unsigned long long)w->ctr.tx_gso_frames,
			(unsigned long long)(w->ctr.drop_short + w->ctr.drop_bad_ip_header +
					     w->ctr.drop_bad_ip_checksum + w->ctr.drop_ip_fragment +
					     w->ctr.drop_bad_tcp_header +
					     w->ctr.drop_bad_tcp_checksum +
					     w->ctr.drop_bad_tcp_options),
			(unsigned long long)w->ctr.pmtu_reductions);
	sl_engine_close(w->eng);
	free(w);
	return 0;
}
