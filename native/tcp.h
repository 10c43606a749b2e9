/* SPDX-License-Identifier: MIT */
/*
 * tcp.h - the TCP control block, send segments, listeners, and the
 * helpers shared by tcp_conn.c, tcp_in.c, tcp_out.c, tcp_recovery.c,
 * tcp_pmtu.c, tcp_cc.c and tcp_timer.c.
 *
 * Call chains:
 *   RX:    sl_engine_poll → tcp_input (tcp_in.c) → tcp_segment_arrives
 *          → tcp_ack → loss detection and recovery (tcp_recovery.c)
 *   ICMP:  sl_engine_poll → tcp_icmp_input (tcp_pmtu.c): path MTU
 *   TX:    sl_engine_flush → tcp_output_dirty → tcp_output (tcp_out.c)
 *   Timer: sl_engine_poll → tcp_timers_run (tcp_timer.c)
 *   API:   sl_conn_* / sl_listen_* (tcp_conn.c)
 */
#ifndef SPECLOOP_TCP_H
#define SPECLOOP_TCP_H

#include "internal.h"

/* RFC 9293 §3.3.2 states */
enum tcp_state {
	TCP_CLOSED = 0,
	TCP_LISTEN,
	TCP_SYN_SENT,
	TCP_SYN_RECEIVED,
	TCP_ESTABLISHED,
	TCP_FIN_WAIT_1,
	TCP_FIN_WAIT_2,
	TCP_CLOSE_WAIT,
	TCP_CLOSING,
	TCP_LAST_ACK,
	TCP_TIME_WAIT,
};

#define SL_NONE UINT32_MAX
#define TCP_HDR_MAX 60
#define FRAME_HDR_LEN(ts) (14 + 20 + 20 + ((ts) ? 12 : 0))
#define TCP_DEFAULT_MSS 536	/* RFC 9293 §3.7.1: no MSS option */
#define TCP_INIT_CWND 10	/* RFC 6928 */
#define TCP_DUPTHRESH 3
#define TCP_MAX_SACK 4
#define TCP_QUICKACKS 16	/* segments ACKed at once at the start */
#define TCP_MAX_OOO_SEGS 4096	/* reassembly queue entries per connection */
#define TCP_CHALLENGE_ACK_LIMIT 1000	/* per second, engine-wide (RFC 5961 §7) */
#define TCP_TIMER_SLACK_US 2000	/* added to the probe timeout of a flight of
				 * more than one segment (Linux: 2 jiffies) */

/* Wrap-safe sequence comparisons (RFC 9293 §3.4). */
static inline bool seq_lt(uint32_t a, uint32_t b) { return (int32_t)(a - b) < 0; }
static inline bool seq_le(uint32_t a, uint32_t b) { return (int32_t)(a - b) <= 0; }
static inline bool seq_gt(uint32_t a, uint32_t b) { return (int32_t)(a - b) > 0; }
static inline bool seq_ge(uint32_t a, uint32_t b) { return (int32_t)(a - b) >= 0; }
/* lo <= x < hi */
static inline bool seq_in(uint32_t x, uint32_t lo, uint32_t hi)
{
	return seq_ge(x, lo) && seq_lt(x, hi);
}
static inline uint32_t seq_max(uint32_t a, uint32_t b) { return seq_gt(a, b) ? a : b; }
static inline uint32_t seq_min(uint32_t a, uint32_t b) { return seq_lt(a, b) ? a : b; }

/* Segment flags (struct tcp_seg.flags) */
#define SEG_SYN 0x01
#define SEG_FIN 0x02
#define SEG_SACKED 0x04		/* the peer SACKed it (RFC 2018) */
#define SEG_LOST 0x08		/* deemed lost: to be retransmitted */
#define SEG_RETRANS 0x10	/* retransmitted since marked lost */
#define SEG_SENT 0x20		/* transmitted at least once */
#define SEG_STATIC 0x40		/* payload is stored (struct tcp_payload), no frame */
#define SEG_CSUM 0x80		/* csum holds the payload's partial sum */

struct sl_conn;

/*
 * Stored payload: bytes that outlive a write (a static file's body, see
 * static.c), which send-queue segments reference instead of copying
 * (SEG_STATIC), so the store is the retransmission buffer.  Its owner
 * embeds it and frees it when the last reference is put.
 */
struct tcp_payload {
	const uint8_t *data;
	uint32_t refs;
	void (*put)(struct sl_engine *eng, struct tcp_payload *p);
	/* multi-buffer TX: a UMEM frame holding data[off, off+len) of the cut
	 * whose first segment has `first` bytes, or SL_NO_FRAME */
	uint32_t (*frame)(struct sl_engine *eng, struct tcp_payload *p, uint32_t first,
			  uint32_t mss, uint32_t off, uint32_t len);
};

static inline void payload_get(struct tcp_payload *p)
{
	p->refs++;
}

static inline void payload_put(struct sl_engine *eng, struct tcp_payload *p)
{
	p->put(eng, p);
}

/*
 * A file that send-queue segments reference instead of a copy (loop.sendfile:
 * tcp_queue_file): its own dup() of the caller's descriptor, who may close
 * theirs once sendfile returns.  The file is the retransmission buffer: a
 * segment's bytes are read (pread into a frame, or spliced into a super-
 * frame) each time it is sent.  Closed when the last segment is freed
 * (acknowledged, or the connection gone).
 */
struct tcp_file {
	int fd;
	uint32_t refs;
	bool nosplice;		/* splice() failed on it: its runs are read */
	bool nomap;		/* not mapped, or a send from the map failed */
	uint64_t dev, ino;	/* which file (fstat), for the next sendfile call */
	uint64_t size;		/* at open: what map covers */
	const uint8_t *map;	/* the file, read-only (tx_gso.c), or NULL */
};

struct stat;
struct tcp_file *tcp_file_open(struct sl_engine *eng, int fd, const struct stat *st);
void conn_abort_later(struct sl_engine *eng, struct sl_conn *c);
void tcp_file_put(struct sl_engine *eng, struct tcp_file *f);
void tcp_sendfile_end(struct sl_engine *eng, struct sl_conn *c);

/*
 * An application that owns a connection's input above TCP (as an httpd is a
 * client of lwIP's TCP through tcp_recv/tcp_sent): a listener's app is
 * attached when a connection is established.  The HTTP fast path
 * (http_fast.c) is one.  While the app holds a connection (holds()),
 * Python has no say in it: at most a transport kept from an earlier
 * request, idle (its writes wait, its close lets go of it alone).  The app
 * hands requests to Python (an ACCEPT the first time) and, where it frames
 * what Python answers, takes the connection back; ending it, it tells an
 * idle transport (a RETURNED event).  A connection without an app, or
 * whose app gave up its input (owns() false), is Python's, through events.
 */
struct tcp_app {
	/* takes the connection (its state in c->app_ctx); <0: it stays Python's */
	int (*attach)(struct sl_engine *eng, struct sl_conn *c);
	/* in-order bytes; false when they could not be taken (not ACKed then) */
	bool (*input)(struct sl_engine *eng, struct sl_conn *c, const uint8_t *data,
		      uint32_t len);
	void (*eof)(struct sl_engine *eng, struct sl_conn *c);		/* the peer's FIN */
	bool (*fill)(struct sl_engine *eng, struct sl_conn *c);		/* queue more: true if it did */
	bool (*owns)(const struct sl_conn *c);		/* its input is the app's */
	bool (*holds)(const struct sl_conn *c);		/* Python has no transport for it */
	bool (*pending)(const struct sl_conn *c);	/* has data to fill */
	/* keep-alive timer fired: true if it was the app's (else TCP's own) */
	bool (*idle)(struct sl_engine *eng, struct sl_conn *c);
	void (*shutdown)(struct sl_engine *eng, struct sl_conn *c);	/* its listener closed */
	void (*release)(struct sl_engine *eng, struct sl_conn *c);	/* the connection goes */
	/* Python queued bytes on a connection the app handed it (data NULL:
	 * `len` bytes of a file) */
	void (*output)(struct sl_engine *eng, struct sl_conn *c, const uint8_t *data,
		       uint32_t len);
	/* at the next poll, as asked with conn_app_later() */
	void (*later)(struct sl_engine *eng, struct sl_conn *c);
};

/*
 * One segment of the send queue.  Its frame holds the finished packet:
 * headers are rewritten at each transmission (ACK, window, timestamps
 * change), the payload never moves.  The frame *is* the send buffer.
 */
struct tcp_seg {
	uint32_t seq;
	uint32_t len;		/* payload bytes */
	uint32_t frame;
	uint32_t next;		/* seg index */
	uint32_t csum;		/* payload partial sum, valid with SEG_CSUM */
	uint16_t hdr_len;	/* payload offset in the frame */
	uint8_t flags;
	uint8_t xmits;
	uint64_t xmit_us;	/* last transmission */
	uint32_t ts_prev, ts_next;	/* in flight, by send time (RFC 8985 §6.2):
					 * seg indexes, SL_NONE at the ends */
	struct tcp_payload *payload;	/* SEG_STATIC: data[poff, poff+len) */
	uint32_t poff;
	uint32_t pfirst;		/* the cut it belongs to (see static.c) */
	/* a file segment (file set, frame SL_NO_FRAME): bytes [foff, foff+len)
	 * of the file, read when sent (tcp_queue_file) */
	struct tcp_file *file;
	uint64_t foff;
};

/* The sequence number after the segment (SYN and FIN count one each). */
static inline uint32_t seg_end(const struct tcp_seg *s)
{
	return s->seq + s->len + ((s->flags & SEG_SYN) ? 1 : 0) +
	       ((s->flags & SEG_FIN) ? 1 : 0);
}

/* Out-of-order data, copied out of the RX frame (RFC 9293 §3.10.7.4). */
struct ooo_seg {
	struct ooo_seg *next;
	uint32_t seq;
	uint32_t len;
	uint8_t data[];
};

/* A byte queue for data that Python is not reading now (paused). */
struct byteq {
	uint8_t *buf;
	uint32_t len;
	uint32_t cap;
};

enum tcp_timer {
	T_REXMIT = 0,	/* RTO, SYN-ACK retransmit, zero-window probe */
	T_DELACK,
	T_KEEPALIVE,
	T_STATE,	/* TIME-WAIT, FIN-WAIT-2 */
	T_RACK,		/* RFC 8985 §6.3 reordering timer */
	T_COUNT,
};

struct sl_conn {
	uint32_t id;		/* index | generation << 20; 0 when free */
	uint8_t state;		/* enum tcp_state */
	uint8_t peer_mac[6];
	uint32_t peer_ip;	/* network order */
	uint16_t peer_port;	/* host order */
	uint16_t local_port;
	uint32_t listener;	/* listener index, SL_NONE if none */
	uint32_t hnext;		/* hash chain, conn index */
	uint32_t next_free;
	uint32_t act_epoch;	/* engine act.epoch of its last segment */

	/* send sequence space, RFC 9293 §3.3.1 */
	uint32_t iss, snd_una, snd_nxt, snd_max, snd_wl1, snd_wl2;
	uint32_t snd_wnd, max_snd_wnd;
	uint16_t mss;		/* payload bytes per segment, options excluded */
	uint16_t rcv_mss;	/* mss as the handshake set it, before any path MTU
				 * reduction: a full segment from the peer */
	uint8_t snd_wscale, rcv_wscale;

	/* receive sequence space */
	uint32_t irs, rcv_nxt, rcv_adv;	/* rcv_adv: right edge advertised */
	uint32_t last_ack_sent;

	/* RFC 7323 */
	uint32_t ts_recent, ts_offset;
	uint64_t ts_recent_us;
	bool ts_on, sack_on, ws_on;

	/* RFC 6298 */
	uint32_t srtt_us, rttvar_us, rto_us;
	uint8_t backoff;		/* consecutive RTO expiries */
	uint8_t probes;			/* keepalive / zero-window probes unanswered */

	/* RFC 5681/6582/6675, in packets as Linux counts them */
	uint32_t cwnd, ssthresh, cwnd_cnt, recover;
	uint32_t packets_out, sacked_out, lost_out, retrans_out;
	uint32_t dupacks;
	bool in_recovery;
	bool after_rto;
	/* RFC 8985 RACK-TLP */
	uint64_t rack_xmit_us;		/* RACK.xmit_ts: latest send time delivered */
	uint32_t rack_end_seq;		/* RACK.end_seq: that segment's end */
	uint32_t rack_rtt_us;		/* RACK.rtt: that segment's round trip */
	uint32_t rack_fack;		/* RACK.fack: highest end seq delivered */
	uint32_t rack_prior_fack;	/* RACK.fack before the ACK in hand */
	uint32_t ack_tsecr;		/* TSecr of the ACK in hand, 0 if none */
	uint32_t ts_head, ts_tail;	/* segments in flight by send time, oldest
					 * first (sent, not SACKed, not waiting to
					 * be retransmitted) */
	uint32_t min_rtt_us;
	uint8_t reo_mult;		/* §6.2 step 4 RACK.reo_wnd_mult, from 1 */
	uint8_t reo_persist;		/* RACK.reo_wnd_persist: recoveries to go */
	bool reo_round_on;		/* RACK.dsack_round is set */
	uint32_t reo_round;		/* RACK.dsack_round: SND.NXT when the
					 * window last grew */
	bool reord_seen;		/* RACK.reordering_seen (§6.2 step 3) */
	bool tlp_armed;			/* T_REXMIT is a probe timeout, not an RTO */
	bool force_rexmit;		/* the first retransmission of a recovery */
	/* RFC 9937 PRR, in packets */
	uint32_t prr_delivered;		/* delivered since the recovery began */
	uint32_t prr_out;		/* sent since the recovery began */
	uint32_t recover_fs;		/* RecoverFS: outstanding when it began */
	uint32_t lost_marks;		/* segments ever marked lost */
	/* RFC 9438 CUBIC (tcp_cc.c), in packets and seconds */
	double cubic_wmax;		/* W_max: the window before the last reduction */
	double cubic_prior;		/* cwnd_prior, for W_est's alpha */
	double cubic_west;		/* W_est, the Reno-friendly estimate */
	double cubic_k;			/* K: seconds from epoch to W_max */
	double cubic_frac;		/* growth not yet a whole packet */
	uint64_t cubic_epoch_us;	/* start of this avoidance stage, 0: none */
	bool tlp_sent;			/* one probe per flight until an ACK moves */
	/* RFC 8985 §7.4: the probe's episode, until its ACK says whether it
	 * repaired a loss (Linux's tlp_high_seq, tlp_retrans) */
	bool tlp_episode;		/* TLP.end_seq is set: no other probe */
	bool tlp_retrans;		/* TLP.is_retrans: the probe resent data */
	uint32_t tlp_end_seq;		/* TLP.end_seq: SND.NXT after the probe */

	/* send queue: head = oldest unacked; send = next to transmit */
	uint32_t sq_head, sq_tail, sq_send;
	uint32_t sq_bytes;		/* payload bytes queued, sent or not */
	uint32_t write_seq;		/* sequence number of the next byte queued */
	/* the file of the loop.sendfile() under way, held between its calls
	 * (sl_conn_sendfile_end lets go): the queue empties between two calls
	 * at speed, and would close and map the file again each time */
	struct tcp_file *sendfile_file;
	uint32_t reno_sacked;		/* dupACKs counted as SACKs without SACK */
	uint32_t sack_recent[8];	/* latest out-of-order arrivals, newest
					 * first: the order of SACK blocks */
	uint8_t sack_nrecent;
	uint32_t dsack_start, dsack_end;	/* a duplicate to report (dsack) */
	uint32_t ooo_fin_seq;		/* sequence number of a FIN beyond a hole */
	bool ooo_fin;
	uint64_t synack_us;		/* first SYN-ACK sent, for the first RTT */
	bool fin_in_queue;		/* the FIN is a segment of the queue */
	uint32_t highest_sack;		/* end of the highest SACKed seq */

	/* receive side */
	struct ooo_seg *ooo;
	uint32_t ooo_bytes;
	uint32_t ooo_count;
	struct byteq rxq;		/* in-order data held while paused */
	uint16_t acks_pending;		/* full segments received, not ACKed */
	uint16_t quickacks;
	uint32_t rcvbuf;

	/* timers (absolute µs, 0 = off), one heap entry per conn */
	uint64_t timer[T_COUNT];
	uint64_t deadline;		/* the earliest timer, 0 if none */
	uint64_t heap_key;		/* in the heap: <= deadline (see tcp_timer.c) */
	uint32_t heap_idx;		/* SL_NONE when not in the heap */

	/* keep-alive (Linux defaults) */
	uint32_t ka_idle_s, ka_intvl_s, ka_probes;
	uint32_t user_timeout_ms;	/* TCP_USER_TIMEOUT (RFC 5482 UTO), 0 = off */
	uint64_t retrans_stamp_us;	/* first RTO of the current episode */

	uint64_t xdp_gen;		/* TX batch of its latest AF_XDP data frame
					 * (a super-frame waits until it left) */
	uint32_t dirty_next;		/* output list, conn index */
	uint32_t deliver_next;		/* deliver list, conn index */
	uint32_t starved_next;		/* waiting for free frames, conn index */
	uint64_t last_rx_us;

	const struct tcp_app *app;	/* owns its input while app->owns() */
	void *app_ctx;			/* the app's state for it */

	/* flags */
	bool in_dirty;
	bool on_deliver;
	bool on_starved;
	bool ack_now;
	bool rx_paused;
	bool eof_pending;		/* FIN seen; EOF event after rxq drains */
	bool deliver_pending;		/* rxq to deliver after resume */
	bool fin_queued;		/* write side shut: FIN after the data */
	bool fin_sent;
	bool detached;			/* Python is done with it: no events */
	bool want_writable;
	bool accepted;			/* ACCEPT event emitted */
	bool nodelay;
	bool keepalive;
	bool window_update;
	int file_err;			/* a file segment could not be read (errno):
					 * tcp_output aborts the connection */
	bool sack_pending;		/* OOO news only a pure ACK can carry */
	bool dsack;			/* RFC 2883: report dsack_start..end */
	bool writable_pending;		/* WRITABLE to emit at the next poll */
	bool app_later;			/* app->later() at the next poll */
};

struct tcp_listener {
	uint16_t port;		/* host order; 0 = slot free */
	uint16_t pad;
	uint32_t backlog;
	uint32_t pending;	/* SYN-RECEIVED + established, not accepted */
	uint32_t id;
	bool accepting;
	const struct tcp_app *app;	/* attached to its connections (NULL: Python's) */
	uint32_t app_flags;		/* how (enum sl_fast_flags for the fast path) */
};

#define SL_MAX_LISTENERS 64

#define TCP_PMTU_SLOTS 256	/* destinations whose path MTU is kept */

/* engine.c sees the TCP state through this */
struct tcp_state_all {
	struct sl_conn *conns;
	uint32_t max_conns;
	uint32_t nconns;
	uint32_t free_head;
	uint32_t gen;
	uint32_t *hash;			/* bucket heads, conn index */
	uint32_t hash_mask;
	struct tcp_seg *segs;
	uint32_t nsegs;
	uint32_t seg_free;
	uint32_t segs_used;
	struct tcp_listener listeners[SL_MAX_LISTENERS];
	uint16_t *port_refs;		/* listeners + conns per local port */
	uint32_t *heap;			/* conn indices, min-heap on deadline */
	uint32_t heap_len;
	uint32_t dirty_head, dirty_tail;	/* output list, FIFO: no conn starves
					 * behind newer ones when a flush's
					 * budget runs out */
	uint32_t deliver_head;		/* conns with rxq to deliver */
	uint32_t starved_head, starved_tail;	/* writes short of frames or
					 * segments, FIFO: the longest wait goes first */
	uint64_t key[2];		/* SipHash key: ISN, hash */
	uint16_t ip_id;
	uint64_t challenge_window_us;	/* RFC 5961 §7 throttle */
	uint32_t challenge_count;
	uint64_t cookies_sent_us;	/* last SYN cookie; 0: never */
	uint64_t rx_held;		/* bytes in all rxq and reassembly queues */
	void **deferred;		/* buffers events point into */
	uint32_t ndeferred, deferred_cap;
	/* path MTUs learnt from ICMP, by destination (tcp_pmtu.c) */
	struct tcp_pmtu {
		uint32_t peer_ip;	/* network order; 0: empty */
		uint16_t mtu;
		uint64_t expires_us;
	} pmtu[TCP_PMTU_SLOTS];
};

/* siphash.c */
uint64_t siphash24(const uint64_t key[2], const void *data, size_t len);
uint64_t siphash13(const uint64_t key[2], const void *data, size_t len);

/* tcp_conn.c */
int tcp_init(struct sl_engine *eng, char *err, size_t errlen);
void tcp_fini(struct sl_engine *eng);
struct sl_conn *conn_lookup(struct sl_engine *eng, uint32_t peer_ip,
			    uint16_t peer_port, uint16_t local_port);
struct sl_conn *conn_by_id(struct sl_engine *eng, uint32_t id);
struct sl_conn *conn_new(struct sl_engine *eng, const struct pkt *p);
void conn_free(struct sl_engine *eng, struct sl_conn *c);
void conn_reset_close(struct sl_engine *eng, struct sl_conn *c, int err);
void conn_dirty(struct sl_engine *eng, struct sl_conn *c);
void conn_established(struct sl_engine *eng, struct sl_conn *c);
struct tcp_listener *listener_for_port(struct sl_engine *eng, uint16_t port);
uint32_t tcp_isn(struct sl_engine *eng, uint32_t peer_ip, uint16_t peer_port,
		 uint16_t local_port);
bool conn_deliver(struct sl_engine *eng, struct sl_conn *c, const uint8_t *data,
		  uint32_t len);
void conn_eof(struct sl_engine *eng, struct sl_conn *c);
uint32_t conn_sndbuf(const struct sl_engine *eng, const struct sl_conn *c);
void conn_writable(struct sl_engine *eng, struct sl_conn *c);
void conn_writable_later(struct sl_engine *eng, struct sl_conn *c);
void tcp_deliver_pending(struct sl_engine *eng);
void conn_starved(struct sl_engine *eng, struct sl_conn *c);
bool conn_hand_to_python(struct sl_engine *eng, struct sl_conn *c, const uint8_t *rest,
			 uint32_t len);
bool conn_to_python(struct sl_engine *eng, struct sl_conn *c, const uint8_t *data,
		    uint32_t len);
bool conn_to_python_copy(struct sl_engine *eng, struct sl_conn *c, const uint8_t *data,
			 uint32_t len);
bool conn_give_python(struct sl_engine *eng, struct sl_conn *c, struct byteq *q);
bool conn_python_gone(struct sl_engine *eng, struct sl_conn *c);
void conn_app_later(struct sl_engine *eng, struct sl_conn *c);
void conn_app_close(struct sl_engine *eng, struct sl_conn *c);
struct tcp_listener *listener_by_id(struct sl_engine *eng, uint32_t id);
void tcp_feed_starved(struct sl_engine *eng);
void tcp_reset_all(struct sl_engine *eng);
bool tcp_pending(const struct sl_engine *eng);
void tcp_free_deferred(struct sl_engine *eng);
int tcp_defer_free(struct sl_engine *eng, void *buf);
uint32_t conn_rcv_window(const struct sl_engine *eng, const struct sl_conn *c);

/* tcp_in.c */
void tcp_input(struct sl_engine *eng, struct pkt *p);

/* tcp_out.c */
uint32_t tcp_ts_now(const struct sl_engine *eng, const struct sl_conn *c);
int tcp_queue_data(struct sl_engine *eng, struct sl_conn *c, const uint8_t *data,
		   uint32_t len);
int tcp_queue_fin(struct sl_engine *eng, struct sl_conn *c);
int tcp_queue_segment(struct sl_engine *eng, struct sl_conn *c, const uint8_t *a,
		      uint32_t alen, const uint8_t *b, uint32_t blen);
int tcp_queue_static(struct sl_engine *eng, struct sl_conn *c, struct tcp_payload *p,
		     uint32_t off, uint32_t len, uint32_t first, uint32_t csum);
int tcp_queue_file(struct sl_engine *eng, struct sl_conn *c, int fd, uint64_t offset,
		   uint32_t len);
void tcp_output(struct sl_engine *eng, struct sl_conn *c);
void tcp_output_before_recovery(struct sl_engine *eng, struct sl_conn *c);
void tcp_output_dirty(struct sl_engine *eng);
void tcp_send_ack(struct sl_engine *eng, struct sl_conn *c);
void tcp_send_synack(struct sl_engine *eng, struct sl_conn *c);
void tcp_send_synack_stateless(struct sl_engine *eng, const struct pkt *p, uint32_t isn,
			       uint32_t ack, const uint8_t *opts, uint32_t optlen);
void tcp_send_rst(struct sl_engine *eng, struct sl_conn *c);
void tcp_send_probe(struct sl_engine *eng, struct sl_conn *c);
void tcp_reply_rst(struct sl_engine *eng, const struct pkt *p);
void tcp_ack_segs(struct sl_engine *eng, struct sl_conn *c, uint32_t ack);
void tcp_send_tlp(struct sl_engine *eng, struct sl_conn *c);
void tcp_free_sendq(struct sl_engine *eng, struct sl_conn *c);
uint32_t tcp_in_flight(const struct sl_conn *c);

/* tcp_recovery.c: loss detection and recovery */
uint64_t tcp_sack_mark(struct sl_engine *eng, struct sl_conn *c, uint32_t start,
		       uint32_t end);
void tcp_mark_lost_sack(struct sl_engine *eng, struct sl_conn *c);
void tcp_mark_head_lost(struct sl_engine *eng, struct sl_conn *c);
bool tcp_rack_detect_loss(struct sl_engine *eng, struct sl_conn *c);
void tcp_rack_sent(struct sl_engine *eng, struct sl_conn *c, uint32_t i);
void tcp_rack_forget(struct sl_engine *eng, struct sl_conn *c, uint32_t i);
void tcp_rack_delivered(struct sl_engine *eng, struct sl_conn *c, const struct tcp_seg *s);
void tcp_rack_timeout(struct sl_engine *eng, struct sl_conn *c);
uint64_t tcp_tlp_timeout(const struct sl_engine *eng, const struct sl_conn *c);
bool tcp_tlp_ack(struct sl_conn *c, uint32_t ack, bool dsack, bool pure_dupack);
void tcp_rack_dsack(struct sl_conn *c, bool dsack);
void tcp_rack_recovery_done(struct sl_conn *c);
void tcp_tlp_reduce(struct sl_engine *eng, struct sl_conn *c);
void tcp_enter_recovery(struct sl_engine *eng, struct sl_conn *c);
void tcp_enter_loss(struct sl_engine *eng, struct sl_conn *c);
void tcp_mark_lost(struct sl_engine *eng, struct sl_conn *c, uint32_t i);
void tcp_prr_ack(struct sl_conn *c, uint32_t delivered, bool newly_lost, bool una_advanced);

/* tcp_pmtu.c: path MTU discovery */
void tcp_icmp_input(struct sl_engine *eng, const struct pkt *p);
uint16_t tcp_pmtu_mss(struct sl_engine *eng, uint32_t peer_ip, uint16_t mss, bool ts_on);

/* tcp_cc.c: congestion control */
void tcp_cc_ack(const struct sl_engine *eng, struct sl_conn *c, uint32_t acked);
void tcp_cc_loss(const struct sl_engine *eng, struct sl_conn *c);

/* tcp_timer.c */
void timer_set(struct sl_engine *eng, struct sl_conn *c, int which, uint64_t at_us);
void timer_clear_all(struct sl_engine *eng, struct sl_conn *c);
void tcp_timers_run(struct sl_engine *eng);
uint64_t tcp_next_timer(const struct sl_engine *eng);
void tcp_rtt_sample(struct sl_conn *c, uint32_t rtt_us, const struct sl_config *cfg);
void tcp_rearm_rexmit(struct sl_engine *eng, struct sl_conn *c);
void tcp_arm_rexmit_or_tlp(struct sl_engine *eng, struct sl_conn *c);

static inline bool app_owns(const struct sl_conn *c)
{
	return c->app && c->app->owns(c);
}

static inline bool app_holds(const struct sl_conn *c)
{
	return c->app && c->app->holds(c);
}

static inline bool app_pending(const struct sl_conn *c)
{
	return c->app && c->app->pending(c);
}

static inline uint32_t conn_index(const struct sl_engine *eng, const struct sl_conn *c)
{
	return (uint32_t)(c - eng->tcp->conns);
}

/* States in which a connection sends data (and retransmits it). */
static inline bool tcp_state_sends_data(int state)
{
	return state == TCP_ESTABLISHED || state == TCP_CLOSE_WAIT ||
	       state == TCP_FIN_WAIT_1 || state == TCP_CLOSING ||
	       state == TCP_LAST_ACK;
}

/* Starts the next millisecond of the active-connection count when this one
 * is over (a millisecond with no segment at all counts 0). */
static inline void active_roll(struct sl_engine *eng)
{
	if (eng->now_us < eng->act.end_us)
		return;
	eng->act.prev = eng->now_us - eng->act.end_us < 1000 ? eng->act.count : 0;
	eng->act.count = 0;
	eng->act.epoch++;
	eng->act.end_us = eng->now_us + 1000;
}

/* c received a segment: counted once per millisecond (sl_engine_active_conns) */
static inline void active_note(struct sl_engine *eng, struct sl_conn *c)
{
	active_roll(eng);
	if (c->act_epoch != eng->act.epoch) {
		c->act_epoch = eng->act.epoch;
		eng->act.count++;
	}
}

#endif /* SPECLOOP_TCP_H */
