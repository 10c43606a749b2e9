/* SPDX-License-Identifier: MIT */
/*
 * tcp_out.c - TCP output: the send queue of UMEM segments, transmission,
 * retransmission, and the control segments (ACK, SYN-ACK, RST, probes).
 *
 * Called from sl_engine_flush → tcp_output_dirty → tcp_output, once per
 * loop iteration for every connection that has something to send, so all
 * writes of an iteration leave together (and small writes coalesce).
 *
 * Data written by Python is copied once, into frames laid out as finished
 * packets (Ethernet + IPv4 + TCP + payload).  Two kinds of segment hold no
 * frame until sent: static-store segments (SEG_STATIC, the fast path's
 * bodies) and file segments (loop.sendfile, tcp_queue_file), whose runs go
 * as super-frames spliced from the page cache or sent from a mapping of the
 * file (tx_gso.c), and whose lone or retransmitted segments are read into a
 * frame when sent.  A segment's frame stays in the queue until
 * acknowledged; retransmission rewrites only the headers.
 * The payload's checksum partial sum is computed once, at the first
 * transmission.
 *
 * Congestion control (tcp_cc.c: CUBIC or NewReno) with SACK- and
 * RACK-based loss marking and PRR (tcp_recovery.c), counting in packets
 * as Linux does:
 *   in_flight = packets_out - (sacked_out + reno_sacked + lost_out) + retrans_out.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "tcp.h"

#define ETH_HLEN 14
#define IP_HLEN 20
#define TCP_HLEN 20

static inline uint32_t csum_add(uint32_t a, uint32_t b)
{
	a += b;
	return a + (a < b);
}

uint32_t tcp_ts_now(const struct sl_engine *eng, const struct sl_conn *c)
{
	/* RFC 7323 §5.4: a millisecond clock, offset per connection (§7.1) */
	return (uint32_t)(eng->now_us / 1000) + c->ts_offset;
}

uint32_t tcp_in_flight(const struct sl_conn *c)
{
	int64_t f = (int64_t)c->packets_out - c->sacked_out - c->reno_sacked -
		    c->lost_out + c->retrans_out;

	return f > 0 ? (uint32_t)f : 0;
}

/*
 * Writes Ethernet, IPv4 and TCP headers for a segment of payload_len bytes
 * at buf, the IPv4 checksum filled in, the TCP checksum field zero.
 * Returns the headers' length.
 */
static uint32_t build_headers(struct sl_engine *eng, uint8_t *buf, const uint8_t *dst_mac,
			      uint32_t daddr, uint16_t sport, uint16_t dport,
			      uint32_t seq, uint32_t ack, uint8_t flags, uint16_t wnd,
			      const uint8_t *opts, uint32_t optlen, uint32_t payload_len)
{
	uint8_t *ip = buf + ETH_HLEN, *tcp = ip + IP_HLEN;
	uint32_t tcp_len = TCP_HLEN + optlen + payload_len;
	uint16_t sum;

	memcpy(buf, dst_mac, 6);
	memcpy(buf + 6, eng->cfg.mac, 6);
	put_be16(buf + 12, 0x0800);

	ip[0] = 0x45;
	ip[1] = 0;
	put_be16(ip + 2, (uint16_t)(IP_HLEN + tcp_len));
	put_be16(ip + 4, eng->tcp->ip_id++);
	put_be16(ip + 6, 0x4000);	/* DF */
	ip[8] = 64;
	ip[9] = 6;
	put_be16(ip + 10, 0);
	memcpy(ip + 12, &eng->cfg.ipv4, 4);
	memcpy(ip + 16, &daddr, 4);
	sum = csum_fold(csum_partial(ip, IP_HLEN, 0));
	memcpy(ip + 10, &sum, 2);

	put_be16(tcp, sport);
	put_be16(tcp + 2, dport);
	put_be32(tcp + 4, seq);
	put_be32(tcp + 8, ack);
	tcp[12] = (uint8_t)(((TCP_HLEN + optlen) / 4) << 4);
	tcp[13] = flags;
	put_be16(tcp + 14, wnd);
	put_be16(tcp + 16, 0);
	put_be16(tcp + 18, 0);
	if (optlen)
		memcpy(tcp + TCP_HLEN, opts, optlen);
	return ETH_HLEN + IP_HLEN + TCP_HLEN + optlen;
}

/*
 * Writes Ethernet, IPv4 and TCP headers for a segment at buf and fills in
 * both checksums.  payload_sum is the partial sum of the payload (which must
 * already sit at buf + header length).  Returns the frame length.
 */
static uint32_t build_packet(struct sl_engine *eng, uint8_t *buf, const uint8_t *dst_mac,
			     uint32_t daddr, uint16_t sport, uint16_t dport,
			     uint32_t seq, uint32_t ack, uint8_t flags, uint16_t wnd,
			     const uint8_t *opts, uint32_t optlen, uint32_t payload_len,
			     uint32_t payload_sum)
{
	uint32_t hlen = build_headers(eng, buf, dst_mac, daddr, sport, dport, seq, ack,
				      flags, wnd, opts, optlen, payload_len);
	uint8_t *tcp = buf + ETH_HLEN + IP_HLEN;
	uint16_t sum;

	sum = csum_fold(csum_add(csum_add(csum_pseudo(eng->cfg.ipv4, daddr,
						      hlen - ETH_HLEN - IP_HLEN + payload_len),
					  csum_partial(tcp, hlen - ETH_HLEN - IP_HLEN, 0)),
				 payload_sum));
	memcpy(tcp + 16, &sum, 2);
	return hlen + payload_len;
}

/*
 * The window to advertise.  As Linux's tcp_select_window: the free buffer,
 * but the size offered last time while the free space stays within one
 * MSS above it, so a buffer the app keeps drained offers the same field in
 * every segment and the peer's header prediction (its receive fast path)
 * stays on; a right edge held in place would change the field with every
 * request.  Receiver-side SWS avoidance (RFC 9293 §3.8.6.2.2): less than
 * min(RCV.BUFF/2, MSS) free offers nothing new; and the right edge never
 * moves back (§3.8.6).  Updates rcv_adv.  SYN segments carry the window
 * unscaled (RFC 7323 §2.2).
 */
static uint16_t window_field(const struct sl_engine *eng, struct sl_conn *c, bool syn)
{
	uint32_t avail = conn_rcv_window(eng, c);
	uint32_t cur = seq_gt(c->rcv_adv, c->rcv_nxt) ? c->rcv_adv - c->rcv_nxt : 0;
	uint32_t prev = seq_gt(c->rcv_adv, c->last_ack_sent) ? c->rcv_adv - c->last_ack_sent : 0;
	uint32_t step = c->rcvbuf / 2 < c->mss ? c->rcvbuf / 2 : c->mss;
	uint32_t wnd = avail, field, ws = syn ? 0 : c->rcv_wscale;

	if (c->mss && avail < step)
		wnd = 0;
	else if (avail >= prev && avail - prev < step)
		wnd = prev;
	if (wnd < cur)
		wnd = cur;
	field = wnd >> ws;
	if ((field << ws) < cur)
		field = (cur + (1u << ws) - 1) >> ws;
	if (field > 65535)
		field = 65535;
	c->rcv_adv = c->rcv_nxt + (field << ws);
	return (uint16_t)field;
}

static uint32_t put_ts(const struct sl_engine *eng, const struct sl_conn *c, uint8_t *o)
{
	o[0] = 1;
	o[1] = 1;
	o[2] = 8;
	o[3] = 10;
	put_be32(o + 4, tcp_ts_now(eng, c));
	put_be32(o + 8, c->ts_recent);
	return 12;
}

/* RFC 2018 §4: SACK blocks from the reassembly queue: the block holding
 * the latest arrival first, then the blocks of the arrivals before it,
 * newest first (so each block is reported in several ACKs, and lost ACKs
 * cost little), then the rest in sequence order.  A pending D-SACK goes
 * before them all (RFC 2883 §4: "the first SACK block"; a duplicate above
 * RCV.NXT was just noted as the latest arrival, so the block holding it
 * comes second, as §4 asks).  Returns the option bytes written (0 if
 * none). */
static uint32_t put_sack(const struct sl_conn *c, uint8_t *o, uint32_t max_blocks)
{
	uint32_t starts[16], ends[16], order[16], n = 0, k = 0, i, r, out = 4;
	bool used[16] = { false };
	const struct ooo_seg *s;

	if (!c->sack_on || (!c->ooo && !c->dsack) || !max_blocks)
		return 0;
	if (c->dsack) {
		put_be32(o + out, c->dsack_start);
		put_be32(o + out + 4, c->dsack_end);
		out += 8;
		max_blocks--;
	}
	for (s = c->ooo; s && n < 16; s = s->next) {
		if (n && s->seq == ends[n - 1]) {
			ends[n - 1] = s->seq + s->len;
			continue;
		}
		starts[n] = s->seq;
		ends[n] = s->seq + s->len;
		n++;
	}
	for (r = 0; r < c->sack_nrecent && k < max_blocks; r++)
		for (i = 0; i < n; i++)
			if (!used[i] && seq_in(c->sack_recent[r], starts[i], ends[i])) {
				used[i] = true;
				order[k++] = i;
				break;
			}
	for (i = 0; i < n && k < max_blocks; i++)
		if (!used[i])
			order[k++] = i;
	o[0] = 1;
	o[1] = 1;
	o[2] = 5;
	for (i = 0; i < k; i++, out += 8) {	/* out: 4 + 8 per block, <= 36 */
		put_be32(o + out, starts[order[i]]);
		put_be32(o + out + 4, ends[order[i]]);
	}
	o[3] = (uint8_t)(out - 2);
	return out;
}

static void ack_sent(struct sl_engine *eng, struct sl_conn *c)
{
	c->last_ack_sent = c->rcv_nxt;
	c->ack_now = false;
	c->window_update = false;
	c->acks_pending = 0;
	if (c->timer[T_DELACK])
		timer_set(eng, c, T_DELACK, 0);
}

/* A control segment in a frame of its own, freed when TX completes. */
static int send_ctl(struct sl_engine *eng, const uint8_t *mac, uint32_t daddr,
		    uint16_t sport, uint16_t dport, uint32_t seq, uint32_t ack,
		    uint8_t flags, uint16_t wnd, const uint8_t *opts, uint32_t optlen)
{
	struct sl_xsk *x = &eng->xsk;
	uint32_t f = xsk_frame_alloc(x, true), len;

	if (f == SL_NO_FRAME) {
		eng->ctr.tx_no_frame++;
		return -ENOBUFS;
	}
	len = build_packet(eng, xsk_frame_data(x, f), mac, daddr, sport, dport, seq,
			   ack, flags, wnd, opts, optlen, 0, 0);
	x->meta[f].keep = 0;
	if (engine_tx_submit(eng, f, 0, len)) {
		xsk_frame_free(x, f);
		return -EAGAIN;
	}
	return 0;
}

void tcp_send_ack(struct sl_engine *eng, struct sl_conn *c)
{
	uint8_t opts[40];
	uint32_t optlen = 0;
	uint16_t wnd = window_field(eng, c, false);

	if (c->ts_on)
		optlen += put_ts(eng, c, opts);
	optlen += put_sack(c, opts + optlen, c->ts_on ? 3 : 4);
	if (send_ctl(eng, c->peer_mac, c->peer_ip, c->local_port, c->peer_port,
		     c->snd_nxt, c->rcv_nxt, TH_ACK, wnd, opts, optlen) == 0) {
		eng->ctr.pure_acks_sent++;
		if (c->dsack && c->sack_on)
			eng->ctr.dsack_sent++;
		ack_sent(eng, c);
		c->sack_pending = false;
		c->dsack = false;
	}
}

/* RFC 9293 §3.10.7.2: <SEQ=ISS><ACK=RCV.NXT><CTL=SYN,ACK> with our options */
void tcp_send_synack(struct sl_engine *eng, struct sl_conn *c)
{
	uint8_t o[40];
	uint32_t n = 0;
	uint16_t wnd;

	o[n++] = 2;			/* MSS */
	o[n++] = 4;
	put_be16(o + n, (uint16_t)(eng->cfg.mtu - 40));
	n += 2;
	if (c->sack_on && c->ts_on) {
		o[n++] = 4;		/* SACK permitted */
		o[n++] = 2;
	} else if (c->sack_on) {
		o[n++] = 1;
		o[n++] = 1;
		o[n++] = 4;
		o[n++] = 2;
	}
	if (c->ts_on) {
		if (!c->sack_on) {
			o[n++] = 1;
			o[n++] = 1;
		}
		o[n++] = 8;
		o[n++] = 10;
		put_be32(o + n, tcp_ts_now(eng, c));
		put_be32(o + n + 4, c->ts_recent);
		n += 8;
	}
	if (c->ws_on) {
		o[n++] = 1;
		o[n++] = 3;
		o[n++] = 3;
		o[n++] = c->rcv_wscale;
	}
	wnd = window_field(eng, c, true);
	if (send_ctl(eng, c->peer_mac, c->peer_ip, c->local_port, c->peer_port,
		     c->iss, c->rcv_nxt, TH_SYN | TH_ACK, wnd, o, n) == 0)
		ack_sent(eng, c);
}

/* A SYN-ACK that keeps no state (SYN cookies). */
void tcp_send_synack_stateless(struct sl_engine *eng, const struct pkt *p, uint32_t isn,
			       uint32_t ack, const uint8_t *opts, uint32_t optlen)
{
	send_ctl(eng, p->src_mac, p->saddr, p->dport, p->sport, isn, ack, TH_SYN | TH_ACK,
		 65535, opts, optlen);
}

/* RFC 9293 §3.10.5 ABORT (Linux sends it with ACK). */
void tcp_send_rst(struct sl_engine *eng, struct sl_conn *c)
{
	if (send_ctl(eng, c->peer_mac, c->peer_ip, c->local_port, c->peer_port,
		     c->snd_nxt, c->rcv_nxt, TH_RST | TH_ACK, 0, NULL, 0) == 0)
		eng->ctr.rst_sent++;
}

/*
 * RFC 9293 §3.10.7.1: a segment for no connection.  If it has ACK:
 * <SEQ=SEG.ACK><CTL=RST>; else <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>.
 * A RST is never answered.
 */
void tcp_reply_rst(struct sl_engine *eng, const struct pkt *p)
{
	uint32_t seg_len;

	if (p->flags & TH_RST)
		return;
	if (p->flags & TH_ACK) {
		if (send_ctl(eng, p->src_mac, p->saddr, p->dport, p->sport, p->ack, 0,
			     TH_RST, 0, NULL, 0) == 0)
			eng->ctr.rst_sent++;
		return;
	}
	seg_len = p->payload_len + ((p->flags & TH_SYN) ? 1 : 0) +
		  ((p->flags & TH_FIN) ? 1 : 0);
	if (send_ctl(eng, p->src_mac, p->saddr, p->dport, p->sport, 0,
		     p->seq + seg_len, TH_RST | TH_ACK, 0, NULL, 0) == 0)
		eng->ctr.rst_sent++;
}

/* Zero-window probe and keep-alive: an old sequence number that makes the
 * peer answer with its current ACK and window (RFC 9293 §3.8.4, §3.8.6.1). */
void tcp_send_probe(struct sl_engine *eng, struct sl_conn *c)
{
	uint8_t opts[12];
	uint32_t optlen = c->ts_on ? put_ts(eng, c, opts) : 0;
	uint16_t wnd = window_field(eng, c, false);

	if (send_ctl(eng, c->peer_mac, c->peer_ip, c->local_port, c->peer_port,
		     c->snd_una - 1, c->rcv_nxt, TH_ACK, wnd, opts, optlen) == 0)
		ack_sent(eng, c);
}

/* ---- the send queue -------------------------------------------------- */

static int xmit_seg(struct sl_engine *eng, struct sl_conn *c, struct tcp_seg *s, bool push);
static bool send_new_one(struct sl_engine *eng, struct sl_conn *c);

static uint32_t seg_alloc(struct sl_engine *eng)
{
	struct tcp_state_all *t = eng->tcp;
	uint32_t i = t->seg_free;

	if (i == SL_NONE)
		return SL_NONE;
	t->seg_free = t->segs[i].next;
	memset(&t->segs[i], 0, sizeof(t->segs[i]));
	t->segs[i].next = SL_NONE;
	t->segs[i].ts_prev = t->segs[i].ts_next = SL_NONE;
	t->segs[i].frame = SL_NO_FRAME;
	t->segs_used++;
	return i;
}

static void seg_release(struct sl_engine *eng, uint32_t i)
{
	struct tcp_state_all *t = eng->tcp;
	struct tcp_seg *s = &t->segs[i];
	struct sl_xsk *x = &eng->xsk;

	if (s->frame != SL_NO_FRAME) {
		if (x->meta[s->frame].tx_pending)
			x->meta[s->frame].keep = 0;	/* completion frees it */
		else
			xsk_frame_free(x, s->frame);
	}
	if (s->flags & SEG_STATIC)
		payload_put(eng, s->payload);
	if (s->file)
		tcp_file_put(eng, s->file);
	s->payload = NULL;
	s->file = NULL;
	s->frame = SL_NO_FRAME;
	s->next = t->seg_free;
	t->seg_free = i;
	t->segs_used--;
}

/* A segment with a UMEM frame of its own, kept until acknowledged, its
 * payload to go at hdr_len: the segment's index, or SL_NONE (nothing
 * taken) when no frame or no segment is free. */
static uint32_t seg_alloc_frame(struct sl_engine *eng, bool may_use_reserve,
				uint32_t hdr_len)
{
	struct sl_xsk *x = &eng->xsk;
	uint32_t f = xsk_frame_alloc(x, may_use_reserve), si;

	if (f == SL_NO_FRAME)
		return SL_NONE;
	si = seg_alloc(eng);
	if (si == SL_NONE) {
		xsk_frame_free(x, f);
		return SL_NONE;
	}
	x->meta[f].keep = 1;
	eng->tcp->segs[si].frame = f;
	eng->tcp->segs[si].hdr_len = (uint16_t)hdr_len;
	return si;
}

static void seg_append(struct sl_engine *eng, struct sl_conn *c, uint32_t i)
{
	struct tcp_seg *segs = eng->tcp->segs;

	if (c->sq_tail == SL_NONE)
		c->sq_head = i;
	else
		segs[c->sq_tail].next = i;
	c->sq_tail = i;
	if (c->sq_send == SL_NONE)
		c->sq_send = i;
}

/* Copies up to len bytes into segments; returns how many were taken. */
int tcp_queue_data(struct sl_engine *eng, struct sl_conn *c, const uint8_t *data,
		   uint32_t len)
{
	struct sl_xsk *x = &eng->xsk;
	struct tcp_seg *segs = eng->tcp->segs;
	uint32_t hdr = FRAME_HDR_LEN(c->ts_on), done = 0;

	/* coalesce into the last segment while it is unsent and not full */
	if (c->sq_tail != SL_NONE) {
		struct tcp_seg *s = &segs[c->sq_tail];

		if (!(s->flags & (SEG_SENT | SEG_FIN | SEG_SYN | SEG_STATIC)) && !s->file &&
		    s->len < c->mss && !x->meta[s->frame].tx_pending) {
			uint32_t n = c->mss - s->len;

			if (n > len)
				n = len;
			memcpy(xsk_frame_data(x, s->frame) + hdr + s->len, data, n);
			s->len += n;
			s->flags &= (uint8_t)~SEG_CSUM;
			done += n;
		}
	}
	while (done < len) {
		uint32_t si, n = len - done;
		struct tcp_seg *s;

		if (n > c->mss)
			n = c->mss;
		si = seg_alloc_frame(eng, false, hdr);
		if (si == SL_NONE) {
			eng->ctr.tx_no_frame++;
			break;
		}
		s = &segs[si];
		s->seq = c->write_seq + done;
		s->len = n;
		memcpy(xsk_frame_data(x, s->frame) + hdr, data + done, n);
		seg_append(eng, c, si);
		done += n;
	}
	c->write_seq += done;
	c->sq_bytes += done;
	return (int)done;
}

/* A new segment whose payload is a||b (alen + blen <= MSS), copied into a
 * frame of its own.  Returns the bytes queued or -ENOBUFS. */
int tcp_queue_segment(struct sl_engine *eng, struct sl_conn *c, const uint8_t *a,
		      uint32_t alen, const uint8_t *b, uint32_t blen)
{
	struct sl_xsk *x = &eng->xsk;
	struct tcp_seg *s;
	uint32_t si, hdr = FRAME_HDR_LEN(c->ts_on);

	if (alen + blen > c->mss || hdr + alen + blen > x->frame_size)
		return -EINVAL;
	si = seg_alloc_frame(eng, false, hdr);
	if (si == SL_NONE) {
		eng->ctr.tx_no_frame++;
		conn_starved(eng, c);
		return -ENOBUFS;
	}
	s = &eng->tcp->segs[si];
	s->seq = c->write_seq;
	s->len = alen + blen;
	if (alen)
		memcpy(xsk_frame_data(x, s->frame) + hdr, a, alen);
	if (blen)
		memcpy(xsk_frame_data(x, s->frame) + hdr + alen, b, blen);
	seg_append(eng, c, si);
	c->write_seq += s->len;
	c->sq_bytes += s->len;
	return (int)s->len;
}

/* A segment of stored payload: no frame until it is sent, the store itself
 * is the retransmission buffer; csum is its payload's partial sum. */
int tcp_queue_static(struct sl_engine *eng, struct sl_conn *c, struct tcp_payload *p,
		     uint32_t off, uint32_t len, uint32_t first, uint32_t csum)
{
	uint32_t si = seg_alloc(eng);
	struct tcp_seg *s;

	if (si == SL_NONE) {
		conn_starved(eng, c);
		return -ENOBUFS;
	}
	s = &eng->tcp->segs[si];
	s->flags = SEG_STATIC | SEG_CSUM;
	s->payload = p;
	payload_get(p);
	s->poff = off;
	s->pfirst = first;
	s->seq = c->write_seq;
	s->len = len;
	s->csum = csum;
	s->hdr_len = (uint16_t)FRAME_HDR_LEN(c->ts_on);
	seg_append(eng, c, si);
	c->write_seq += len;
	c->sq_bytes += len;
	return (int)len;
}

/* Reads up to len bytes of fd at offset straight into new segments with one
 * preadv() (no super-frames, or not a regular file).  As tcp_queue_file. */
static int queue_file_copy(struct sl_engine *eng, struct sl_conn *c, int fd, uint64_t offset,
			   uint32_t len)
{
	struct sl_xsk *x = &eng->xsk;
	struct tcp_seg *segs = eng->tcp->segs;
	uint32_t hdr = FRAME_HDR_LEN(c->ts_on), idx[64], n = 0, i, left = len;
	struct iovec iov[64];
	ssize_t got;

	while (left && n < 64) {
		uint32_t si = seg_alloc_frame(eng, false, hdr), take = left < c->mss ? left : c->mss;

		if (si == SL_NONE)
			break;
		segs[si].len = take;
		iov[n].iov_base = xsk_frame_data(x, segs[si].frame) + hdr;
		iov[n].iov_len = take;
		idx[n++] = si;
		left -= take;
	}
	if (!n) {
		eng->ctr.tx_no_frame++;
		return -ENOBUFS;
	}
	got = preadv(fd, iov, (int)n, (off_t)offset);
	if (got <= 0) {
		for (i = 0; i < n; i++)
			seg_release(eng, idx[i]);
		return got < 0 ? -errno : 0;
	}
	left = (uint32_t)got;
	for (i = 0; i < n; i++) {
		struct tcp_seg *s = &segs[idx[i]];

		if (!left) {
			seg_release(eng, idx[i]);
			continue;
		}
		if (s->len > left)
			s->len = left;
		left -= s->len;
		s->seq = c->write_seq;
		c->write_seq += s->len;
		c->sq_bytes += s->len;
		seg_append(eng, c, idx[i]);
	}
	return (int)got;
}

/* A reference to fd's file of its own (F_DUPFD_CLOEXEC), or NULL. */
struct tcp_file *tcp_file_open(struct sl_engine *eng, int fd, const struct stat *st)
{
	struct tcp_file *f = malloc(sizeof(*f));

	if (!f)
		return NULL;
	f->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (f->fd < 0) {
		free(f);
		return NULL;
	}
	f->refs = 1;
	f->nosplice = false;
	f->nomap = false;
	f->map = NULL;
	f->size = (uint64_t)st->st_size;
	f->dev = st->st_dev;
	f->ino = st->st_ino;
	eng->ctr.files_open++;
	return f;
}

void tcp_file_put(struct sl_engine *eng, struct tcp_file *f)
{
	if (--f->refs)
		return;
	gso_file_unmap(f);
	close(f->fd);
	free(f);
	eng->ctr.files_open--;
}

/* The sendfile under way on c is over: its file goes with its segments. */
void tcp_sendfile_end(struct sl_engine *eng, struct sl_conn *c)
{
	if (c->sendfile_file)
		tcp_file_put(eng, c->sendfile_file);
	c->sendfile_file = NULL;
}

/*
 * Queues up to len bytes of fd at offset.  With super-frames, a regular
 * file's bytes are not read now: the segments reference the file (struct
 * tcp_file) and are read when sent (spliced into a super-frame, or read
 * into a frame).  Else, or for a pipe or socket (which cannot be read
 * twice), they are read into frames at once.  Returns bytes queued, 0 at
 * end of file, -ENOBUFS if no frame or segment was free, or -errno.
 */
int tcp_queue_file(struct sl_engine *eng, struct sl_conn *c, int fd, uint64_t offset,
		   uint32_t len)
{
	struct tcp_seg *segs = eng->tcp->segs;
	struct tcp_file *f = NULL;
	struct stat st;
	uint32_t done = 0;

	if (!eng->gso.on || !eng->gso.splice_pages)
		return queue_file_copy(eng, c, fd, offset, len);
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return queue_file_copy(eng, c, fd, offset, len);
	if ((uint64_t)st.st_size <= offset)
		return 0;	/* end of file */
	if ((uint64_t)st.st_size - offset < len)
		len = (uint32_t)((uint64_t)st.st_size - offset);
	/* the next call of the same sendfile shares the file: no other
	 * descriptor or mapping, and (where the queue ends) its runs go on */
	f = c->sendfile_file;
	if (f && (f->dev != st.st_dev || f->ino != st.st_ino))
		f = NULL;
	if (!f && c->sq_tail != SL_NONE && segs[c->sq_tail].file) {
		struct tcp_seg *t = &segs[c->sq_tail];

		if (t->file->dev == st.st_dev && t->file->ino == st.st_ino &&
		    t->foff + t->len == offset && !(t->flags & SEG_FIN))
			f = t->file;
	}
	if (f)
		f->refs++;
	else
		f = tcp_file_open(eng, fd, &st);
	if (!f)		/* out of descriptors (EMFILE) or memory: a copy */
		return queue_file_copy(eng, c, fd, offset, len);
	while (done < len) {
		uint32_t si = seg_alloc(eng), take = len - done < c->mss ? len - done : c->mss;
		struct tcp_seg *s;

		if (si == SL_NONE)
			break;
		s = &segs[si];
		s->file = f;
		f->refs++;
		s->foff = offset + done;
		s->seq = c->write_seq;
		s->len = take;
		s->hdr_len = (uint16_t)FRAME_HDR_LEN(c->ts_on);
		seg_append(eng, c, si);
		c->write_seq += take;
		c->sq_bytes += take;
		done += take;
	}
	if (c->sendfile_file != f) {
		/* held for this sendfile's next call */
		tcp_sendfile_end(eng, c);
		c->sendfile_file = f;
	} else {
		tcp_file_put(eng, f);	/* the segments and the hold have it */
	}
	return done ? (int)done : -ENOBUFS;
}

/*
 * A file segment's bytes, read into buf now.  0, or -EIO when the file
 * gave fewer (see file_failed).
 */
static int file_failed(struct sl_engine *eng, struct sl_conn *c, int err);

static int file_read(struct sl_engine *eng, struct sl_conn *c, struct tcp_file *f,
		     uint64_t off, uint8_t *buf, uint32_t len)
{
	uint32_t done = 0;

	while (done < len) {
		ssize_t n = pread(f->fd, buf + done, len - done, (off_t)(off + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return file_failed(eng, c, n < 0 ? errno : 0);
		done += (uint32_t)n;
	}
	return 0;
}

/*
 * A file segment's bytes cannot be had: the file was truncated under the
 * send queue (err 0) or its read failed (err).  Those bytes are sequence
 * space already promised to the peer (queued, perhaps sent and lost), and
 * nothing else may go in their place, so the connection cannot go on: it
 * is aborted at the next poll (tcp_deliver_pending: RFC 9293 §3.10.5
 * ABORT, a RST; sends stop at once) and the transport's connection_lost gets OSError(EIO),
 * "Input/output error" (the kernel's sendfile has no error to borrow: it
 * reads before it queues, so it just sends less), or the read's errno.
 * Returns -EIO.
 */
static int file_failed(struct sl_engine *eng, struct sl_conn *c, int err)
{
	if (!c->file_err) {
		c->file_err = err ? err : EIO;
		eng->ctr.file_short_reads++;
	}
	return -EIO;
}

/* Puts the FIN in the queue: on the last unsent segment, or alone. */
static int make_fin(struct sl_engine *eng, struct sl_conn *c)
{
	struct tcp_seg *segs = eng->tcp->segs;
	uint32_t si;

	if (c->fin_in_queue)
		return 0;
	if (c->sq_tail != SL_NONE) {
		struct tcp_seg *s = &segs[c->sq_tail];

		if (!(s->flags & (SEG_SENT | SEG_FIN | SEG_SYN))) {
			s->flags |= SEG_FIN;
			goto queued;
		}
	}
	si = seg_alloc_frame(eng, true, FRAME_HDR_LEN(c->ts_on));
	if (si == SL_NONE)
		return -ENOBUFS;
	segs[si].seq = c->write_seq;
	segs[si].len = 0;
	segs[si].flags = SEG_FIN;
	seg_append(eng, c, si);
queued:
	c->write_seq++;
	c->fin_in_queue = true;
	return 0;
}

int tcp_queue_fin(struct sl_engine *eng, struct sl_conn *c)
{
	c->fin_queued = true;
	/* after the fast path's queued responses; if no frame now,
	 * tcp_output tries again */
	if (!app_pending(c))
		make_fin(eng, c);
	conn_dirty(eng, c);
	return 0;
}

/* Frees every segment (connection going away). */
void tcp_free_sendq(struct sl_engine *eng, struct sl_conn *c)
{
	uint32_t i = c->sq_head;

	while (i != SL_NONE) {
		uint32_t next = eng->tcp->segs[i].next;

		seg_release(eng, i);
		i = next;
	}
	c->sq_head = c->sq_tail = c->sq_send = SL_NONE;
	c->ts_head = c->ts_tail = SL_NONE;
	c->sq_bytes = 0;
	tcp_sendfile_end(eng, c);
	c->packets_out = c->sacked_out = c->lost_out = c->retrans_out = 0;
	c->reno_sacked = 0;
}

static void seg_uncount(struct sl_conn *c, const struct tcp_seg *s)
{
	if (s->flags & SEG_SENT)
		c->packets_out--;
	if (s->flags & SEG_SACKED)
		c->sacked_out--;
	if (s->flags & SEG_LOST)
		c->lost_out--;
	if (s->flags & SEG_RETRANS)
		c->retrans_out--;
}

/* Frees the segments `ack` covers entirely (RFC 9293 §3.10.7.4 fifth). */
void tcp_ack_segs(struct sl_engine *eng, struct sl_conn *c, uint32_t ack)
{
	struct tcp_seg *segs = eng->tcp->segs;

	while (c->sq_head != SL_NONE) {
		uint32_t i = c->sq_head;
		struct tcp_seg *s = &segs[i];

		if (!(s->flags & SEG_SENT) || seq_gt(seg_end(s), ack))
			break;
		if (!(s->flags & SEG_SACKED))
			tcp_rack_delivered(eng, c, s);
		tcp_rack_forget(eng, c, i);
		seg_uncount(c, s);
		c->sq_bytes -= s->len;
		c->sq_head = s->next;
		if (c->sq_send == i)
			c->sq_send = s->next;
		seg_release(eng, i);
	}
	if (c->sq_head == SL_NONE)
		c->sq_tail = c->sq_send = SL_NONE;
}

/* RFC 8985 §7.3: a probe went; its episode runs until tcp_tlp_ack says
 * what its ACK meant. */
static void tlp_episode_start(struct sl_engine *eng, struct sl_conn *c, bool retrans)
{
	c->tlp_episode = true;
	c->tlp_retrans = retrans;
	c->tlp_end_seq = c->snd_max;
	eng->ctr.tail_loss_probes++;
}

/*
 * RFC 8985 §7.3: the tail loss probe.  New data if the window allows,
 * else the last segment sent again, so that a lost tail is reported by
 * SACK instead of waiting for the RTO.  Both count as probes (as Linux's
 * TCPLossProbes), a resent segment as a retransmission too.
 */
void tcp_send_tlp(struct sl_engine *eng, struct sl_conn *c)
{
	struct tcp_seg *segs = eng->tcp->segs;
	uint32_t i, last = SL_NONE;

	c->tlp_sent = true;
	if (c->sq_send != SL_NONE && send_new_one(eng, c)) {
		tlp_episode_start(eng, c, false);
		return;
	}
	for (i = c->sq_head; i != SL_NONE && i != c->sq_send; i = segs[i].next)
		last = i;
	/* one cut down by a smaller path MTU waits for its retransmission */
	if (last == SL_NONE || (segs[last].flags & SEG_SACKED) || segs[last].len > c->mss)
		return;
	if (xmit_seg(eng, c, &segs[last], true) == 0) {
		eng->ctr.retransmits++;
		tlp_episode_start(eng, c, true);
	}
}

/*
 * Whether new segment s, sent with n-1 others before it now, is the last
 * that the windows let go until an ACK comes: the end of the queue, a
 * short segment, the congestion window full, or the next segment beyond
 * the peer's window.
 */
static bool ends_flight(const struct sl_engine *eng, const struct sl_conn *c,
			const struct tcp_seg *s, uint32_t n)
{
	const struct tcp_seg *next;

	if (s->next == SL_NONE || s->len < c->mss || tcp_in_flight(c) + n >= c->cwnd)
		return true;
	next = &eng->tcp->segs[s->next];
	return seq_gt(seg_end(next), c->snd_una + c->snd_wnd);
}

/* A frame for a segment that has none of its own (stored or file bytes),
 * freed when TX completes; SL_NO_FRAME (counted, the connection waits for
 * frames) when none is free. */
static uint32_t send_frame(struct sl_engine *eng, struct sl_conn *c)
{
	struct sl_xsk *x = &eng->xsk;
	uint32_t frame = xsk_frame_alloc(x, false);

	if (frame == SL_NO_FRAME) {
		eng->ctr.tx_no_frame++;
		conn_starved(eng, c);
		return SL_NO_FRAME;
	}
	x->meta[frame].keep = 0;
	return frame;
}

/*
 * Sends one queued segment; -EBUSY if its frame is still in the TX ring.
 *
 * PSH (RFC 9293 §3.9.1.2, RFC 1122 §4.2.2.2: the last buffered segment
 * carries it when no more queued data is to be sent) goes on the queue's
 * last segment, a short one, and, with `push`, on the last segment that
 * can go before an ACK comes.  Linux's receiver (tcp_measure_rcv_mss)
 * acknowledges a full segment with PSH as soon as its application has
 * read it; one without waits for its delayed-ACK timer, and a flight
 * that ends in one in-order segment (a probe, or the survivor of two)
 * then stalls for 40 ms.  Linux's sender has PSH there too: at the end
 * of each write (tcp_push), which a sender refilling its socket buffer
 * as ACKs free it does once a flight.
 */
static int xmit_seg(struct sl_engine *eng, struct sl_conn *c, struct tcp_seg *s, bool push)
{
	struct sl_xsk *x = &eng->xsk;
	uint8_t opts[12], flags = TH_ACK, *buf;
	uint32_t optlen = 0, len;
	uint16_t wnd;

	uint32_t frame = s->frame, chunk = SL_NO_FRAME;

	if (c->file_err)
		return -EIO;	/* aborted at the next poll */
	if (s->file) {
		/* read into a frame that goes when sent, its sum computed now */
		frame = send_frame(eng, c);
		if (frame == SL_NO_FRAME)
			return -ENOBUFS;
		buf = xsk_frame_data(x, frame);
		if (file_read(eng, c, s->file, s->foff, buf + s->hdr_len, s->len)) {
			xsk_frame_free(x, frame);
			return -EIO;
		}
		eng->ctr.file_reads++;
		if (s->xmits)
			eng->ctr.file_reads_retransmit++;
		s->csum = csum_partial(buf + s->hdr_len, s->len, 0);
		s->flags |= SEG_CSUM;
	} else if (s->flags & SEG_STATIC) {
		/* a frame that goes when sent: headers only if the payload can
		 * stay in the file's shared chunk frame (multi-buffer), else
		 * headers and one copy of the stored bytes; the checksum sum
		 * came precomputed with the segment either way */
		if (x->sg && !eng->impair)
			chunk = s->payload->frame(eng, s->payload, s->pfirst, c->mss, s->poff,
						  s->len);
		frame = send_frame(eng, c);
		if (frame == SL_NO_FRAME)
			return -ENOBUFS;
		buf = xsk_frame_data(x, frame);
		if (chunk == SL_NO_FRAME)
			memcpy(buf + s->hdr_len, s->payload->data + s->poff, s->len);
	} else {
		if (x->meta[frame].tx_pending) {
			eng->ctr.tx_frame_busy++;
			return -EBUSY;
		}
		buf = xsk_frame_data(x, frame);
		if (!(s->flags & SEG_CSUM)) {
			s->csum = csum_partial(buf + s->hdr_len, s->len, 0);
			s->flags |= SEG_CSUM;
		}
	}
	if (c->ts_on)
		optlen = put_ts(eng, c, opts);
	if (s->flags & SEG_FIN)
		flags |= TH_FIN;
	if (s->len && (push || s->next == SL_NONE || s->len < c->mss))
		flags |= TH_PSH;
	wnd = window_field(eng, c, false);
	len = build_packet(eng, buf, c->peer_mac, c->peer_ip, c->local_port,
			   c->peer_port, s->seq, c->rcv_nxt, flags, wnd, opts, optlen,
			   s->len, s->csum);
	if (chunk != SL_NO_FRAME) {
		if (xsk_tx_submit_sg(eng, frame, len - s->len, chunk, s->len)) {
			xsk_frame_free(x, frame);
			return -EAGAIN;
		}
		goto sent;
	}
	if (!(s->flags & SEG_STATIC) && !s->file)
		x->meta[frame].keep = 1;
	if (engine_tx_submit(eng, frame, 0, len)) {
		if ((s->flags & SEG_STATIC) || s->file)
			xsk_frame_free(x, frame);
		return -EAGAIN;
	}
sent:
	/* a super-frame of this connection waits until this batch left */
	c->xdp_gen = x->tx_queued ? x->tx_gen : x->tx_gen - 1;
	if (eng->tx_budget)
		eng->tx_budget--;
	s->xmits++;
	s->xmit_us = eng->now_us;
	s->flags |= SEG_SENT;
	if (c->in_recovery)
		c->prr_out++;	/* RFC 9937 §6.3 */
	tcp_rack_sent(eng, c, (uint32_t)(s - eng->tcp->segs));
	ack_sent(eng, c);
	return 0;
}

/* Cuts segment i at `keep` payload bytes, the rest into a new segment
 * (a peer window smaller than a segment and nothing in flight; a smaller
 * path MTU, fit_mss). */
static int split_seg(struct sl_engine *eng, struct sl_conn *c, uint32_t i, uint32_t keep)
{
	struct sl_xsk *x = &eng->xsk;
	struct tcp_seg *segs = eng->tcp->segs, *a = &segs[i], *b;
	uint32_t bi;

	if (!keep || keep >= a->len)
		return -EINVAL;
	if ((a->flags & SEG_STATIC) || a->file) {
		/* a stored or file segment splits by reference: a stored one's
		 * sums come from the store now, a file one's when it is read */
		bi = seg_alloc(eng);
		if (bi == SL_NONE)
			return -ENOBUFS;
		a = &segs[i];
		b = &segs[bi];
		*b = *a;
		b->seq = a->seq + keep;
		b->len = a->len - keep;
		b->ts_prev = b->ts_next = SL_NONE;
		b->next = a->next;
		a->next = bi;
		a->len = keep;
		if (c->sq_tail == i)
			c->sq_tail = bi;
		if (a->file) {
			b->foff = a->foff + keep;
			b->flags = a->flags & SEG_FIN;
			a->file->refs++;
			a->flags &= (uint8_t)~(SEG_FIN | SEG_CSUM);
			return 0;
		}
		b->poff = a->poff + keep;
		b->flags = (uint8_t)(SEG_STATIC | SEG_CSUM | (a->flags & SEG_FIN));
		b->csum = csum_partial(a->payload->data + b->poff, b->len, 0);
		payload_get(a->payload);
		a->flags &= (uint8_t)~SEG_FIN;
		a->csum = csum_partial(a->payload->data + a->poff, a->len, 0);
		return 0;
	}
	if (x->meta[a->frame].tx_pending)
		return -EINVAL;
	bi = seg_alloc_frame(eng, false, a->hdr_len);
	if (bi == SL_NONE)
		return -ENOBUFS;
	a = &segs[i];
	b = &segs[bi];
	b->seq = a->seq + keep;
	b->len = a->len - keep;
	b->flags = a->flags & SEG_FIN;
	memcpy(xsk_frame_data(x, b->frame) + b->hdr_len,
	       xsk_frame_data(x, a->frame) + a->hdr_len + keep, b->len);
	a->len = keep;
	a->flags &= (uint8_t)~(SEG_FIN | SEG_CSUM);
	b->next = a->next;
	a->next = bi;
	if (c->sq_tail == i)
		c->sq_tail = bi;
	return 0;
}

/*
 * A segment longer than the MSS, queued or sent before the path MTU shrank
 * (tcp_pmtu.c), is cut to the MSS before it goes, as Linux's
 * tcp_fragment on retransmission.  The rest keeps the segment's standing:
 * sent and lost (to be retransmitted), or not sent yet.  0; -EBUSY while
 * its frame is in the TX ring (a later flush cuts it); -ENOBUFS.
 */
static int fit_mss(struct sl_engine *eng, struct sl_conn *c, uint32_t i)
{
	struct tcp_seg *segs = eng->tcp->segs, *b;
	uint8_t keep = segs[i].flags & (SEG_SENT | SEG_LOST);
	int rc;

	if (segs[i].len <= c->mss)
		return 0;
	rc = split_seg(eng, c, i, c->mss);
	if (rc)
		return rc == -EINVAL ? -EBUSY : rc;
	b = &segs[segs[i].next];
	b->flags |= keep;
	b->xmits = segs[i].xmits;
	b->xmit_us = segs[i].xmit_us;
	if (keep & SEG_SENT)
		c->packets_out++;
	if (keep & SEG_LOST)
		c->lost_out++;
	eng->ctr.pmtu_splits++;
	return 0;
}

/* RFC 896 / RFC 9293 §3.7.4: hold a small segment while data is unacked. */
static bool nagle_holds(const struct sl_conn *c, const struct tcp_seg *s)
{
	return !c->nodelay && s->len < c->mss && !(s->flags & SEG_FIN) &&
	       s->next == SL_NONE && c->packets_out > 0;
}

/* Retransmits segments marked lost while the congestion window allows. */
static void retransmit_lost(struct sl_engine *eng, struct sl_conn *c)
{
	struct tcp_seg *segs = eng->tcp->segs;
	uint32_t i;
	int rc;

	for (i = c->sq_head; i != SL_NONE && i != c->sq_send; i = segs[i].next) {
		struct tcp_seg *s = &segs[i];

		if (c->lost_out <= c->retrans_out)
			break;
		if (!(s->flags & SEG_LOST) || (s->flags & (SEG_RETRANS | SEG_SACKED)))
			continue;
		if (tcp_in_flight(c) >= c->cwnd && !c->force_rexmit)
			break;
		if (!eng->tx_budget) {
			conn_dirty(eng, c);	/* the next flush goes on */
			break;
		}
		rc = fit_mss(eng, c, i);
		if (rc) {
			conn_dirty(eng, c);	/* cut at a later flush */
			if (rc == -EBUSY)
				continue;
			break;
		}
		c->force_rexmit = false;
		rc = xmit_seg(eng, c, s, false);
		if (rc == -EBUSY) {
			conn_dirty(eng, c);	/* try again at the next flush */
			continue;
		}
		if (rc == -EIO)
			break;		/* a file segment could not be read: abort */
		s->flags |= SEG_RETRANS;
		c->retrans_out++;
		eng->ctr.retransmits++;
	}
}

/* Sends the next new segment if the peer's window allows (not cwnd: the
 * caller decides that).  Returns true if one was sent. */
static bool send_new_one(struct sl_engine *eng, struct sl_conn *c)
{
	struct tcp_seg *segs = eng->tcp->segs;

	while (c->sq_send != SL_NONE) {
		uint32_t i = c->sq_send;
		struct tcp_seg *s = &segs[i];
		uint32_t end, right = c->snd_una + c->snd_wnd;
		int rc = fit_mss(eng, c, i);

		if (rc) {
			conn_dirty(eng, c);	/* cut at a later flush */
			return false;
		}
		end = seg_end(s);
		if (seq_gt(end, right)) {
			/* a window narrower than the segment, nothing in flight */
			if (c->packets_out == 0 && seq_lt(s->seq, right) &&
			    split_seg(eng, c, i, right - s->seq) == 0)
				continue;
			return false;
		}
		if (nagle_holds(c, s))
			return false;
		if (xmit_seg(eng, c, s, ends_flight(eng, c, s, 1)))
			return false;
		c->packets_out++;
		c->sq_send = s->next;
		c->snd_nxt = seq_max(c->snd_nxt, end);
		c->snd_max = seq_max(c->snd_max, end);
		if (s->flags & SEG_FIN)
			c->fin_sent = true;
		return true;
	}
	return false;
}

/* ---- GSO super-frames (sent by tx_gso.c) ---------------------------------- */

/*
 * The run that may leave now as one super-frame: consecutive unsent
 * segments from sq_send, each a full MSS but the last, none a SYN or a
 * bare FIN, a FIN only on the last, all inside the peer's window, at most
 * max of them and what one packet may hold.  File segments go only with
 * file segments of the same file, in file order, spanning at most
 * splice_pages pages unless the file is mapped (what one splice to the
 * packet socket sends as one packet, tx_gso.c).  Returns how many (0 when
 * fewer than two: a single segment goes as a frame of its own).
 */
static uint32_t gso_run_length(const struct sl_engine *eng, const struct sl_conn *c,
			       uint32_t max)
{
	const struct tcp_seg *segs = eng->tcp->segs;
	const struct sl_xsk *x = &eng->xsk;
	uint32_t right = c->snd_una + c->snd_wnd, i, k = 0, bytes = 0;
	/* RFC 791: the total length is 16 bits; and the kernel segments a GSO
	 * packet of gso_max_size (64 KiB) or more in software, header included */
	uint32_t room = 65535 - FRAME_HDR_LEN(c->ts_on);
	const struct tcp_file *file = NULL;
	uint64_t foff = 0;
	uint32_t page = eng->gso.page, lead = 0;

	if (c->sq_send != SL_NONE && segs[c->sq_send].file &&
	    (segs[c->sq_send].file->map || eng->gso.splice_pages)) {
		file = segs[c->sq_send].file;
		foff = segs[c->sq_send].foff;
		lead = (uint32_t)(foff % page);
		/* a mapped file's run is one piece of memory; a spliced one
		 * spans splice_pages pages at most */
		if (!file->map && eng->gso.splice_pages * page - lead < room)
			room = eng->gso.splice_pages * page - lead;
	}
	for (i = c->sq_send; i != SL_NONE && k < max; i = segs[i].next) {
		const struct tcp_seg *s = &segs[i];

		if ((s->flags & SEG_SYN) || !s->len || s->len > c->mss ||
		    bytes + s->len > room || seq_gt(seg_end(s), right) || nagle_holds(c, s))
			break;
		if (s->file != file || (file && s->foff != foff + bytes))
			break;
		if (!(s->flags & SEG_STATIC) && !file && x->meta[s->frame].tx_pending)
			break;
		k++;
		bytes += s->len;
		if (s->len < c->mss || (s->flags & SEG_FIN))
			break;		/* only the last may be short or carry the FIN */
	}
	return k >= 2 ? k : 0;
}

/*
 * Sends the k segments from sq_send (a run, gso_run_length) as one
 * super-frame and accounts for each as send_new_one does, with the same
 * send time: RACK, SACK and recovery see k segments sent together, and a
 * lost one is retransmitted alone (xmit_seg).  The payload stays where it
 * is: UMEM frames, the static store.  Returns false when the super-frame
 * could not go now; nothing changed then and the caller sends the
 * segments as frames of their own.
 */
static bool send_run(struct sl_engine *eng, struct sl_conn *c, uint32_t k)
{
	struct sl_xsk *x = &eng->xsk;
	struct tcp_seg *segs = eng->tcp->segs, *s = NULL;
	struct tcp_file *file = segs[c->sq_send].file;
	uint64_t foff = segs[c->sq_send].foff;
	struct gso_frame g;
	uint8_t opts[12], flags = TH_ACK, *copy = NULL;
	uint32_t optlen = 0, payload = 0, i, n;
	uint16_t wnd, sum;
	int rc;

	/* one connection's data never reorders across the two paths: its
	 * AF_XDP frames leave at the kick, a super-frame at once */
	if (!xsk_tx_gone(eng, c->xdp_gen))
		return false;
	g.niov = 1;
	for (i = c->sq_send, n = 0; n < k; n++, i = s->next) {
		const uint8_t *p;
		struct iovec *prev = &g.iov[g.niov - 1];

		s = &segs[i];
		payload += s->len;
		if (file)
			continue;	/* one piece of the file (gso_run_length) */
		p = (s->flags & SEG_STATIC) ? s->payload->data + s->poff :
					      xsk_frame_data(x, s->frame) + s->hdr_len;
		/* a stored body's consecutive segments are one piece */
		if (g.niov > 1 && (const uint8_t *)prev->iov_base + prev->iov_len == p) {
			prev->iov_len += s->len;
		} else {
			g.iov[g.niov].iov_base = (void *)p;
			g.iov[g.niov].iov_len = s->len;
			g.niov++;
		}
	}
	if (c->ts_on)
		optlen = put_ts(eng, c, opts);
	/* the segmenter leaves FIN and PSH on the last segment only */
	if (s->flags & SEG_FIN)
		flags |= TH_FIN;
	if (ends_flight(eng, c, s, k))
		flags |= TH_PSH;
	wnd = window_field(eng, c, false);
	g.hdr_len = build_headers(eng, g.buf + GSO_VNET_HLEN, c->peer_mac, c->peer_ip,
				  c->local_port, c->peer_port, segs[c->sq_send].seq,
				  c->rcv_nxt, flags, wnd, opts, optlen, payload);
	/* virtio NEEDS_CSUM: the checksum field holds the folded, not
	 * complemented, pseudo-header sum of the whole TCP length; the
	 * segmenter adjusts it per segment and adds the rest */
	sum = (uint16_t)~csum_fold(csum_pseudo(eng->cfg.ipv4, c->peer_ip,
					       g.hdr_len - ETH_HLEN - IP_HLEN + payload));
	memcpy(g.buf + GSO_VNET_HLEN + ETH_HLEN + IP_HLEN + 16, &sum, 2);
	g.gso_size = c->mss;
	g.payload_len = payload;
	if (file && file->map && !eng->impair) {
		/* one sendmsg() from the file's mapping (tx_gso.c) */
		rc = gso_xmit_mapped(eng, &g, file, foff);
		if (rc)
			return false;	/* frames now; a failed map is not used again */
	} else if (file && !eng->gso.capture && !eng->impair && !file->nosplice) {
		/* page cache → skb in the kernel, nothing copied here */
		rc = gso_xmit_file(eng, &g, file->fd, foff);
		if (rc && rc != -EAGAIN)
			file->nosplice = true;	/* its runs are read from now on */
		if (rc)
			return false;
	} else {
		if (file) {
			/* a test's capture or link impairment, or a file that does
			 * not splice: the run's bytes read into a buffer */
			copy = malloc(payload);
			if (!copy)
				return false;
			if (file_read(eng, c, file, foff, copy, payload)) {
				free(copy);
				return false;	/* aborted at the next poll */
			}
			eng->ctr.file_reads++;
			g.iov[1].iov_base = copy;
			g.iov[1].iov_len = payload;
			g.niov = 2;
		}
		rc = gso_xmit(eng, &g);
		free(copy);
		if (rc)
			return false;
	}
	eng->tcp->ip_id = (uint16_t)(eng->tcp->ip_id + k - 1);	/* one IPv4 id per segment */
	for (n = 0; n < k; n++) {
		s = &segs[c->sq_send];
		s->xmits++;
		s->xmit_us = eng->now_us;
		s->flags |= SEG_SENT;
		tcp_rack_sent(eng, c, c->sq_send);
		c->packets_out++;
		c->sq_send = s->next;
		c->snd_nxt = seq_max(c->snd_nxt, seg_end(s));
		c->snd_max = seq_max(c->snd_max, seg_end(s));
		if (s->flags & SEG_FIN)
			c->fin_sent = true;
	}
	if (c->in_recovery)
		c->prr_out += k;
	eng->tx_budget = eng->tx_budget > k ? eng->tx_budget - k : 0;
	eng->ctr.tx_gso_segments += k;
	ack_sent(eng, c);
	return true;
}

/*
 * Sends new segments within the peer's window and the congestion window:
 * runs of them as GSO super-frames where the engine has those, the rest
 * (and everything when a super-frame fails) one frame each.
 */
static bool send_new(struct sl_engine *eng, struct sl_conn *c)
{
	bool sent = false, runs = eng->gso.want;

	while (c->sq_send != SL_NONE && tcp_in_flight(c) < c->cwnd) {
		if (!eng->tx_budget) {
			conn_dirty(eng, c);	/* the next flush goes on */
			break;
		}
		if (runs) {
			uint32_t max = c->cwnd - tcp_in_flight(c), k;

			if (max > eng->tx_budget)
				max = eng->tx_budget;
			if (max > GSO_MAX_SEGS)
				max = GSO_MAX_SEGS;
			if (max >= 2 && eng->tcp->segs[c->sq_send].file && !eng->impair)
				(void)gso_file_mapped(eng, eng->tcp->segs[c->sq_send].file);
			k = max >= 2 ? gso_run_length(eng, c, max) : 0;
			if (k && eng->gso.on && send_run(eng, c, k)) {
				sent = true;
				continue;
			}
			if (k) {
				/* this flush sends the connection's rest frame by frame */
				eng->ctr.tx_gso_fallback_segments += k;
				runs = false;
			}
		}
		if (!send_new_one(eng, c))
			break;
		sent = true;
	}
	return sent;
}

/*
 * How many unsent bytes the fast path may have queued before sending:
 * with super-frames what the windows and this flush's budget let go at
 * once (one super-frame at most), else 1 (a segment when none is unsent).
 */
static uint32_t app_fill_target(const struct sl_engine *eng, const struct sl_conn *c)
{
	uint32_t in_flight = tcp_in_flight(c), right = c->snd_una + c->snd_wnd, n, wnd;

	if (!eng->gso.on)
		return 1;
	n = c->cwnd > in_flight ? c->cwnd - in_flight : 0;
	if (n > eng->tx_budget)
		n = eng->tx_budget;
	if (n > GSO_MAX_SEGS)
		n = GSO_MAX_SEGS;
	n *= c->mss;
	wnd = seq_gt(right, c->snd_nxt) ? right - c->snd_nxt : 0;
	if (n > wnd)
		n = wnd;
	if (n > 65535 - FRAME_HDR_LEN(c->ts_on))
		n = 65535 - FRAME_HDR_LEN(c->ts_on);
	return n ? n : 1;
}

/* New data, as far as the windows let it go: the send queue's, then the
 * fast path's responses. */
static void output_new(struct sl_engine *eng, struct sl_conn *c)
{
	send_new(eng, c);
	/* the fast path's responses: queued a super-frame's worth ahead
	 * (headers written, the body referenced in the static store), else
	 * a segment at a time */
	while (app_pending(c) && eng->tx_budget && tcp_in_flight(c) < c->cwnd) {
		uint32_t want = app_fill_target(eng, c);

		/* whole segments only: a short one would go alone */
		while (app_pending(c) &&
		       (c->sq_send == SL_NONE ||
			c->write_seq - c->snd_nxt + c->mss <= want) &&
		       c->app->fill(eng, c))
			;
		if (c->sq_send == SL_NONE || !send_new(eng, c))
			break;
	}
	if (app_pending(c) && !eng->tx_budget)
		conn_dirty(eng, c);
}

/*
 * An ACK with SACK blocks, which may start a fast recovery, came after
 * other ACKs of the same receive batch: first the new data those let go.
 * The engine reads a batch's ACKs before its flush sends; Linux sends
 * after each ACK (tcp_data_snd_check), so when a later ACK starts the
 * recovery, the earlier ones' new data is already in flight, below the
 * recovery point (RFC 6582 "recover") and in RecoverFS (RFC 9937).
 * Without this that data would leave after the reduction, a loss among it
 * would be a second congestion event, and PRR would start from a pipe the
 * earlier ACKs had emptied.  The ACK's own SACKs come after: in recovery
 * its retransmission goes first, as Linux's.
 */
void tcp_output_before_recovery(struct sl_engine *eng, struct sl_conn *c)
{
	if (c->id && !c->file_err && tcp_state_sends_data(c->state)) {
		output_new(eng, c);
		conn_dirty(eng, c);	/* the flush arms timers, sees a file error */
	}
}

/* Sends what the connection may send now: lost segments, new data, the
 * FIN, and an ACK if one is owed and nothing else carried it. */
void tcp_output(struct sl_engine *eng, struct sl_conn *c)
{
	if (!c->id)
		return;
	if (c->file_err)
		goto out_file_err;
	if (tcp_state_sends_data(c->state)) {
		if (c->fin_queued && !c->fin_in_queue && !app_pending(c))
			make_fin(eng, c);
		if (c->lost_out > c->retrans_out)
			retransmit_lost(eng, c);
		output_new(eng, c);
		if (c->fin_queued && !c->fin_in_queue && !app_pending(c)) {
			make_fin(eng, c);
			send_new(eng, c);
		}
		if (c->packets_out && !c->timer[T_REXMIT])
			tcp_arm_rexmit_or_tlp(eng, c);
		/* RFC 9293 §3.8.6.1: data waits on a closed window: probe it */
		if (!c->packets_out && c->sq_send != SL_NONE && !c->timer[T_REXMIT])
			tcp_rearm_rexmit(eng, c);
	}
	/* data segments carry the ACK but no SACK blocks: with a hole in the
	 * reassembly queue the peer needs them in a pure ACK (RFC 2018 §4) */
	if (c->file_err)
		goto out_file_err;
	if (c->ack_now || c->window_update || (c->sack_pending && c->sack_on))
		tcp_send_ack(eng, c);
	return;

out_file_err:
	/* a file segment could not be read (file_failed): nothing more goes,
	 * the next poll aborts it with the error for the transport */
	conn_abort_later(eng, c);
}

void tcp_output_dirty(struct sl_engine *eng)
{
	struct tcp_state_all *t = eng->tcp;
	uint32_t i = t->dirty_head;

	t->dirty_head = SL_NONE;
	t->dirty_tail = SL_NONE;
	while (i != SL_NONE) {
		struct sl_conn *c = &t->conns[i];

		i = c->dirty_next;
		c->in_dirty = false;
		c->dirty_next = SL_NONE;
		tcp_output(eng, c);
	}
}
