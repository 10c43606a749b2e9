/* SPDX-License-Identifier: MIT */
/*
 * specloop.h - the only C API that Python sees.
 *
 * An engine is an opaque handle owning one AF_XDP socket (UMEM, fill,
 * completion, RX and TX rings), the XDP steering program attached to the
 * interface through a bpf_link, and the TCP connections that run over them.
 * There is no global state: everything hangs off the handle.
 *
 * Conventions: functions return >= 0 (success or a count) or -errno.  Output
 * goes through pointers.  Nothing here calls back into Python: the engine
 * queues events, Python reads them after sl_engine_poll() returns.
 *
 * The part between the cdef markers is read by native/build.py and handed to
 * cffi, so it must stay plain declarations (no macros, no inline code).
 */
#ifndef SPECLOOP_H
#define SPECLOOP_H

#include <stddef.h>
#include <stdint.h>

/* cdef-begin */

enum sl_xdp_mode {
	SL_XDP_AUTO = 0,	/* native if the driver has it, else generic */
	SL_XDP_NATIVE = 1,
	SL_XDP_GENERIC = 2,
};

struct sl_config {
	const char *ifname;
	uint32_t queues[16];	/* RX queue ids, one AF_XDP socket each */
	uint32_t nqueues;	/* 1..16 */
	uint32_t xdp_mode;	/* enum sl_xdp_mode */
	uint32_t frame_size;	/* 2048 or 4096 */
	uint32_t frame_count;	/* UMEM frames */
	uint32_t ring_size;	/* descriptors per ring, a power of two */
	uint8_t mac[6];		/* the interface's MAC address */
	uint32_t ipv4;		/* the interface's IPv4 address, network order */
	uint32_t mtu;
	uint32_t max_conns;	/* connection table size */
	uint32_t sndbuf;	/* bytes queued per connection before write() is short */
	uint32_t rcvbuf;	/* receive window per connection, bytes */
	uint32_t time_wait_ms;	/* TIME-WAIT length (2*MSL) */
	uint32_t rto_min_ms;
	uint32_t rto_max_ms;
	uint32_t retries;	/* RTO expiries before a connection is dropped */
	uint32_t syn_retries;	/* SYN-ACK retransmissions before giving up */
	uint32_t delack_ms;	/* delayed-ACK timeout */
	uint32_t fin_timeout_ms;/* FIN-WAIT-2 after close(), as tcp_fin_timeout */
	uint64_t seed;		/* ISN/SYN-cookie secret seed; 0 = from getrandom */
	uint64_t rx_budget;	/* bytes all connections may hold unread */
	uint32_t tx_multibuffer;	/* static segments as header + shared payload
					 * frame (XDP_USE_SG); 0 = one copied frame */
	uint32_t tx_gso;	/* enum sl_tx_gso: GSO super-frames for runs of
				 * full segments (a packet socket, tx_gso.c) */
	uint32_t cc;		/* enum sl_cc: congestion control (tcp_cc.c) */
};

enum sl_cc {
	SL_CC_CUBIC = 0,	/* RFC 9438, Linux's default */
	SL_CC_RENO = 1,		/* NewReno, RFC 5681 + RFC 6582 */
};

enum sl_tx_gso {
	SL_TX_GSO_AUTO = 0,	/* on where the interface takes them, else off
				 * (test engines: off) */
	SL_TX_GSO_ON = 1,	/* on; opening fails where it cannot be */
	SL_TX_GSO_OFF = 2,
};

/* What happened on a connection; read by Python after sl_engine_poll(). */
enum sl_event_type {
	SL_EV_ACCEPT = 1,	/* conn: a new established connection; arg: listener */
	SL_EV_DATA = 2,		/* conn: in-order bytes at data[0..len) */
	SL_EV_EOF = 3,		/* conn: the peer sent FIN */
	SL_EV_CLOSED = 4,	/* conn: gone; err: 0, -ECONNRESET, -ETIMEDOUT, ... */
	SL_EV_WRITABLE = 5,	/* conn: send-buffer space after a short write */
	SL_EV_CONNECTED = 6,	/* conn: an active open completed */
	SL_EV_RETURNED = 7,	/* conn: the fast path, which answers it since
				 * Python's last answer, ended it: Python's transport
				 * for it is done (connection_lost(None)) */
};

struct sl_event {
	uint32_t type;
	uint32_t conn;
	uint32_t arg;
	int32_t err;
	const uint8_t *data;	/* valid until the next poll or flush */
	uint32_t len;
};

/* Engine counters.  Every drop has a field named for its reason. */
struct sl_counters {
	uint64_t rx_packets;
	uint64_t rx_bytes;
	uint64_t tx_packets;
	uint64_t tx_bytes;
	uint64_t tx_kicks;
	uint64_t rx_batches;
	uint64_t rx_tcp_syn;
	uint64_t drop_short;		/* shorter than its headers say */
	uint64_t drop_not_ipv4;		/* ethertype we do not handle */
	uint64_t drop_bad_mac;		/* not for our MAC */
	uint64_t drop_bad_ip_header;	/* version, IHL or total length wrong */
	uint64_t drop_bad_ip_checksum;
	uint64_t drop_ip_fragment;
	uint64_t drop_not_tcp;
	uint64_t drop_not_our_ip;
	uint64_t drop_bad_source;	/* broadcast, multicast, 0/8, 127/8 */
	uint64_t drop_bad_tcp_header;	/* data offset wrong */
	uint64_t drop_bad_tcp_checksum;
	uint64_t drop_bad_tcp_options;
	uint64_t drop_bad_tcp_flags;
	uint64_t drop_bad_desc;		/* RX descriptor outside UMEM */
	uint64_t drop_bad_icmp;		/* short, bad checksum, not quoting our TCP */
	uint64_t drop_icmp_ignored;	/* an ICMP type other than "fragmentation needed" */
	uint64_t drop_icmp_no_conn;	/* quotes no connection that sends data */
	uint64_t drop_icmp_out_of_window;	/* quotes a sequence number not in flight */
	uint64_t icmp_frag_needed;	/* taken: "fragmentation needed" for a connection */
	uint64_t pmtu_reductions;	/* a connection's MSS lowered for a smaller path MTU */
	uint64_t pmtu_splits;		/* segments cut to a lowered MSS before they went */
	uint64_t pmtu_cached;		/* connections that began with a known path MTU */
	uint64_t fill_ring_empty;	/* wanted to refill RX and had no frame */
	uint64_t tx_ring_full;		/* a segment waited for a TX slot */
	uint64_t tx_no_frame;		/* a segment waited for a free frame */
	uint64_t kernel_rx_dropped;	/* XDP_STATISTICS, read on demand */
	uint64_t kernel_rx_invalid_descs;
	uint64_t kernel_tx_invalid_descs;
	uint64_t kernel_rx_ring_full;
	uint64_t kernel_rx_fill_ring_empty;
	uint64_t kernel_tx_ring_empty;
	uint64_t rx_queue_packets[16];	/* by socket, in the order of cfg.queues */
	/* frames by owner; they always add up to frame_count */
	uint64_t frames_total;
	uint64_t frames_free;
	uint64_t frames_fill;		/* in the fill ring or RX ring */
	uint64_t frames_rx_held;	/* received, referenced by an event */
	uint64_t frames_tx;		/* in the TX ring, awaiting completion */
	uint64_t frames_sndq;		/* held by send queues (not in TX) */
	uint64_t frames_static;		/* static payload kept in UMEM (multi-buffer TX) */
	uint64_t tx_multibuffer_segments;	/* sent as header + shared payload frame */
	/* GSO super-frames (tx_gso.c): one packet of up to 64 KiB for a run
	 * of segments, cut by the kernel or the NIC */
	uint64_t tx_gso_available;	/* 1: super-frames are being used */
	uint64_t tx_gso_frames;		/* super-frames handed to the kernel */
	uint64_t tx_gso_segments;	/* segments they carried */
	uint64_t tx_gso_bytes;		/* their payload bytes */
	uint64_t tx_gso_fallback_segments;	/* a run that went as separate frames
						 * (unavailable, failed, ordering) */
	uint64_t tx_gso_errors;		/* sendmsg() failures */
	uint64_t tx_gso_software;	/* 1: the interface has no TSO and tx_gso
					 * is on: the kernel cuts super-frames
					 * (its GSO, on the qdisc path) */
	/* sendfile's file-backed segments (tcp_queue_file) */
	uint64_t tx_gso_splice_frames;	/* super-frames spliced from the file
					 * (page cache → skb, no user copy) */
	uint64_t tx_gso_mapped_frames;	/* super-frames sent from a mapping of
					 * the file (one sendmsg, no pipe) */
	uint64_t files_mapped;		/* mappings made (one per sendfile at most) */
	uint64_t tx_gso_map_failures;	/* a file's mmap() failed, or it grew past
					 * its mapping: spliced from then on */
	uint64_t file_reads;		/* file segments read (pread) into a frame,
					 * or a run for a test capture/impairment */
	uint64_t file_reads_retransmit;	/* of which retransmissions */
	uint64_t file_short_reads;	/* a file ended (truncated) or failed under
					 * its segments: the connection aborted */
	uint64_t files_open;		/* files referenced by send queues now */
	/* TCP */
	uint64_t conns;			/* connections in the table now */
	uint64_t conns_time_wait;	/* of which in TIME-WAIT */
	uint64_t conn_slot_bytes;	/* table memory per connection (preallocated) */
	uint64_t conns_opened;		/* reached ESTABLISHED */
	uint64_t conns_reset;		/* ended by a RST from the peer */
	uint64_t conns_timed_out;	/* ended by the retry limit */
	uint64_t listeners;
	uint64_t segs_in_use;		/* send-queue segments */
	uint64_t timers_armed;		/* connections with a timer */
	uint64_t ooo_bytes;		/* held in reassembly queues */
	uint64_t rxq_bytes;		/* held for paused readers */
	uint64_t rx_held;		/* rxq + reassembly bytes, engine-wide */
	uint64_t rst_sent;
	uint64_t rst_received;
	uint64_t syn_received;
	uint64_t synack_retransmits;
	uint64_t retransmits;		/* data segments sent again */
	uint64_t fast_retransmits;	/* recovery episodes entered */
	uint64_t rto_expired;
	uint64_t dupacks_in;
	uint64_t ooo_segments;		/* arrived out of order */
	uint64_t sack_blocks_in;
	uint64_t challenge_acks;	/* RFC 5961 */
	uint64_t challenge_acks_throttled;	/* RFC 5961 §7 limit reached */
	uint64_t syncookies_sent;	/* RFC 4987: SYN queue full */
	uint64_t syncookies_ok;		/* connections made from a cookie */
	uint64_t zero_window_probes;
	uint64_t keepalive_probes;
	uint64_t delayed_acks;		/* ACKs sent by the delayed-ACK timer */
	uint64_t pure_acks_sent;
	uint64_t tx_frame_busy;		/* retransmit waited for its frame's TX */
	uint64_t drop_no_listener;	/* answered with RST */
	uint64_t drop_listen_overflow;	/* SYN beyond backlog */
	uint64_t drop_conn_table_full;
	uint64_t drop_out_of_window;	/* RFC 9293 §3.10.7.4 acceptability */
	uint64_t drop_paws;		/* RFC 7323 §5 */
	uint64_t drop_no_ack;
	uint64_t drop_ack_too_new;	/* acks what we never sent */
	uint64_t drop_ack_too_old;	/* RFC 5961 §5.2 */
	uint64_t drop_ooo_full;
	uint64_t drop_data_after_close;	/* answered with RST */
	uint64_t drop_bad_sack;
	uint64_t dsack_in;		/* RFC 2883 duplicate reports */
	uint64_t dsack_sent;		/* RFC 2883: duplicates we reported */
	uint64_t tail_loss_probes;	/* RFC 8985 §7 */
	uint64_t retransmits_lost;	/* a retransmission found lost again
					 * by RACK (RFC 8985 §6.2) */
	uint64_t tlp_recoveries;	/* a resent probe repaired a loss: the
					 * window reduced (RFC 8985 §7.4.2) */
	/* fault injection (sl_engine_impair) */
	uint64_t impair_rx_dropped;
	uint64_t impair_rx_duplicated;
	uint64_t impair_rx_reordered;
	uint64_t impair_tx_dropped;
	uint64_t impair_tx_duplicated;
	uint64_t impair_tx_reordered;
	/* the HTTP fast path */
	uint64_t fast_requests;		/* answered in C */
	uint64_t fast_status_200;
	uint64_t fast_status_206;
	uint64_t fast_status_304;
	uint64_t fast_status_416;
	uint64_t fast_encoded;		/* of which a precompressed variant (.br, .gz) */
	uint64_t fast_handovers;	/* requests handed to Python (each an ACCEPT) */
	uint64_t fast_handbacks;	/* connections back from Python (RETURNED) */
	/* why a connection stays with Python (http_frame.h, enum hf_stay) */
	uint64_t fast_stay_close;		/* Connection: close, HTTP/1.0 */
	uint64_t fast_stay_upgrade;		/* Upgrade, CONNECT, 101 */
	uint64_t fast_stay_request_chunked;	/* a request body with Transfer-Encoding */
	uint64_t fast_stay_request_unframed;	/* a request we cannot frame */
	uint64_t fast_stay_close_delimited;	/* a response without a length */
	uint64_t fast_stay_cl_and_te;		/* a response with both */
	uint64_t fast_stay_bad_length;		/* invalid or repeated Content-Length */
	uint64_t fast_stay_bad_chunk;		/* malformed chunked coding */
	uint64_t fast_stay_extra_bytes;		/* more than the response announced */
	uint64_t fast_stay_malformed;		/* a malformed status line or field */
	uint64_t fast_stay_opt_out;		/* hand-back off for the listener */
	uint64_t fast_stay_eof;			/* the peer closed while Python had it */
	uint64_t fast_stay_backlog;		/* input piled up while Python had it */
	uint64_t fast_body_segments;	/* sent from the static store */
	uint64_t static_files;
	uint64_t static_bytes;
};

struct sl_engine;

/*
 * Opens an engine on cfg->ifname: UMEM, AF_XDP socket, XDP program attached
 * through a bpf_link.  On failure returns -errno and writes what failed into
 * err (errlen bytes, NUL-terminated).
 */
int sl_engine_open(const struct sl_config *cfg, struct sl_engine **out,
		   char *err, size_t errlen);
void sl_engine_close(struct sl_engine *eng);

/*
 * A test engine: the same stack with no interface, socket or XDP program,
 * for unit tests and fuzzers.  Frames go in with sl_engine_inject (it polls,
 * then processes the frame; returns the events, as sl_engine_poll), what
 * the stack sends comes out of sl_engine_tx_take (length of the oldest
 * frame, copied up to cap; 0 when none).  sl_engine_set_clock pins the
 * clock (microseconds; 0 = the real one).  With tx_gso = SL_TX_GSO_ON a
 * test engine captures super-frames too (sl_engine_tx_next tells them
 * apart); otherwise it sends every segment as a frame of its own.
 */
int sl_engine_open_test(const struct sl_config *cfg, struct sl_engine **out,
			char *err, size_t errlen);
int sl_engine_inject(struct sl_engine *eng, const uint8_t *frame, size_t len);
int sl_engine_tx_take(struct sl_engine *eng, uint8_t *buf, size_t cap);
/* As sl_engine_tx_take, and *flags says what the frame is: SL_TX_GSO when
 * it is a super-frame (it starts with its 10-byte struct virtio_net_hdr;
 * test engines capture them with tx_gso = SL_TX_GSO_ON). */
enum sl_tx_flags {
	SL_TX_GSO = 1,
};
int sl_engine_tx_next(struct sl_engine *eng, uint8_t *buf, size_t cap, uint32_t *flags);
int sl_engine_set_clock(struct sl_engine *eng, uint64_t now_us);

/* Every queue's xsk fd (up to max) into fds; returns how many. */
int sl_engine_fds(const struct sl_engine *eng, int *fds, int max);
/* Non-zero when the RX ring has frames (for busy polling; no syscall). */
int sl_engine_rx_ready(const struct sl_engine *eng);
/* How many connections received segments in the last millisecond or so
 * (the larger of the last whole millisecond's count and the current one's):
 * 1 when one connection's request-response turns pace the loop. */
uint32_t sl_engine_active_conns(struct sl_engine *eng);
/* The XDP attach mode in use: SL_XDP_NATIVE or SL_XDP_GENERIC. */
int sl_engine_xdp_mode(const struct sl_engine *eng);

/*
 * Processes up to `budget` received frames.  Returns the number of events
 * now in sl_engine_events() (0 if none), or -errno.
 */
int sl_engine_poll(struct sl_engine *eng, int budget);
const struct sl_event *sl_engine_events(const struct sl_engine *eng);

/*
 * End of a loop iteration: sends what is queued, releases frames of the
 * last poll's events, reaps completions, refills RX, kicks TX once.
 * Returns the number of TX descriptors kicked, or -errno.
 */
int sl_engine_flush(struct sl_engine *eng);

/* Non-zero when something waits for the next poll or flush (iterate
 * soon): events to hand over, or output a flush's budget left queued. */
int sl_engine_pending(const struct sl_engine *eng);

/* When to poll next: the earliest TCP timer or frame held by the link
 * impairment, CLOCK_MONOTONIC microseconds; 0 if none. */
uint64_t sl_engine_next_timer(struct sl_engine *eng);

/* Copies the counters into *out (kernel XDP statistics refreshed). */
int sl_engine_counters(struct sl_engine *eng, struct sl_counters *out);

/* Steering: TCP port (host order) to this engine, or back to the kernel. */
int sl_engine_steer_port(struct sl_engine *eng, uint32_t port);
int sl_engine_unsteer_port(struct sl_engine *eng, uint32_t port);

/* TCP listeners: a port of the interface address steered to this engine. */
int sl_listen(struct sl_engine *eng, uint32_t port, uint32_t backlog, int accepting);
int sl_listen_set_accepting(struct sl_engine *eng, uint32_t listener, int accepting);
int sl_listen_close(struct sl_engine *eng, uint32_t listener);

/*
 * Connections.  sl_conn_write copies into UMEM segments and returns how
 * many bytes it took (short when the send buffer is full; a WRITABLE event
 * follows when there is room).  Nothing is sent before sl_engine_flush.
 */
int sl_conn_write(struct sl_engine *eng, uint32_t conn, const uint8_t *data, size_t len);
int sl_conn_sendfile(struct sl_engine *eng, uint32_t conn, int fd, uint64_t offset,
		     uint32_t count);
/* after the last sl_conn_sendfile of one loop.sendfile(): the engine holds
 * the file between the calls, and lets go here */
int sl_conn_sendfile_end(struct sl_engine *eng, uint32_t conn);
int sl_conn_shutdown_write(struct sl_engine *eng, uint32_t conn);
int sl_conn_close(struct sl_engine *eng, uint32_t conn);
int sl_conn_abort(struct sl_engine *eng, uint32_t conn);
int sl_conn_pause_reading(struct sl_engine *eng, uint32_t conn);
int sl_conn_resume_reading(struct sl_engine *eng, uint32_t conn);

enum sl_conn_option {
	SL_OPT_NODELAY = 1,
	SL_OPT_KEEPALIVE = 2,
	SL_OPT_KEEPIDLE = 3,	/* seconds */
	SL_OPT_KEEPINTVL = 4,	/* seconds */
	SL_OPT_KEEPCNT = 5,
	SL_OPT_RCVBUF = 6,
	SL_OPT_SNDBUF = 7,
	SL_OPT_USER_TIMEOUT = 8,	/* ms, as TCP_USER_TIMEOUT; 0 = off */
};
int sl_conn_setopt(struct sl_engine *eng, uint32_t conn, int opt, int value);
int sl_conn_getopt(struct sl_engine *eng, uint32_t conn, int opt);

struct sl_conn_info {
	uint32_t state;		/* RFC 9293 state, enum order of tcp.h */
	uint32_t peer_ip;	/* network order */
	uint32_t peer_port;
	uint32_t local_port;
	uint32_t mss;
	uint32_t snd_wnd;
	uint32_t cwnd;		/* segments */
	uint32_t ssthresh;
	uint32_t srtt_us;
	uint32_t rto_us;
	uint32_t send_queued;	/* bytes in the send queue (sent or not) */
	uint32_t send_space;	/* bytes sl_conn_write would take now */
	uint32_t rcv_wnd;
	uint32_t rxq_bytes;
	uint32_t ooo_bytes;
	uint32_t retransmits;
	uint32_t flags;		/* 1 ts, 2 sack, 4 wscale, 8 fast path, 16 detached, 32 accepted */
	uint32_t snd_una, snd_nxt, rcv_nxt, rcv_adv;
	uint32_t packets_out, sacked_out, lost_out, retrans_out;
	uint32_t ooo_count, ts_recent, last_ack_sent, backoff;
	uint32_t idle_ms;	/* since the last segment received */
	uint32_t timer_ms;	/* until its next timer, UINT32_MAX if none */
	uint32_t reo_wnd_mult;	/* RACK's reordering window, in min_RTT/4 steps */
	uint32_t reord_seen;	/* 1 once RACK saw a segment reordered */
};
int sl_conn_info(struct sl_engine *eng, uint32_t conn, struct sl_conn_info *out);
/* The ids of every connection in the table (any state, fast-path ones too),
 * as `ss -t` lists them: up to max into ids; returns how many there are. */
uint32_t sl_conn_list(struct sl_engine *eng, uint32_t *ids, uint32_t max);

/*
 * Fault injection at the RX/TX boundary, for tests (this kernel has no
 * netem).  Probabilities in parts per million; NULL turns it off.
 */
struct sl_impair {
	uint32_t rx_loss, rx_dup, rx_reorder;
	uint32_t tx_loss, tx_dup, tx_reorder;
	uint32_t delay_us;		/* added to every frame */
	uint32_t reorder_delay_us;	/* extra for a reordered frame */
	uint64_t seed;
};
int sl_engine_impair(struct sl_engine *eng, const struct sl_impair *cfg);

/*
 * The HTTP fast path.  Files are registered per local port under their
 * decoded URL path with the header fields aiohttp's FileResponse sends;
 * listeners with the fast path on answer GET/HEAD for them in C.
 */
enum sl_fast_flags {
	SL_FAST_ON = 1,		/* the fast path in front of the listener */
	SL_FAST_STAY = 2,	/* a connection handed to Python stays Python's
				 * (no hand-back: connection-bound schemes) */
};
enum sl_static_flags {
	SL_STATIC_HAS_VARIANTS = 1,	/* .gz/.br siblings: Accept-Encoding matters (alone:
					 * such requests go to Python) */
	SL_STATIC_HAS_BR = 2,		/* a .br sibling exists (its variant, if put, is
					 * answered in C; else those requests go to Python) */
	SL_STATIC_HAS_GZIP = 4,		/* a .gz sibling exists */
};
int sl_static_put(struct sl_engine *eng, uint32_t port, const char *path,
		  const uint8_t *body, size_t size, const char *content_type,
		  const char *etag, const char *last_modified, int64_t mtime_ns,
		  const char *extra_headers, uint32_t flags);
/*
 * A precompressed variant of the file registered at `path` (put first):
 * `encoding` "br" or "gzip", its own bytes and validators, the original's
 * Content-Type.  Chosen as aiohttp's FileResponse chooses (Accept-Encoding).
 * Putting the file again drops its variants.
 */
int sl_static_put_variant(struct sl_engine *eng, uint32_t port, const char *path,
			  const char *encoding, const uint8_t *body, size_t size,
			  const char *content_type, const char *etag,
			  const char *last_modified, int64_t mtime_ns,
			  const char *extra_headers);
int sl_static_remove(struct sl_engine *eng, uint32_t port, const char *path);
int sl_static_config(struct sl_engine *eng, const char *server, uint64_t budget,
		     uint32_t keepalive_ms, const char *reason_416);
/* flags: 0 (off) or SL_FAST_ON, with SL_FAST_STAY to keep hand-back off */
int sl_listen_set_fast(struct sl_engine *eng, uint32_t listener, int flags);

/*
 * The engine's hot functions as a table, for the CPython extension that
 * runs the loop core (native/py/): it is handed this table's address once
 * and calls the engine through it, so the engine's code exists once, in
 * this library.  Fields are only ever appended; `size` says how many.
 */
struct sl_api {
	uint32_t size;		/* sizeof(struct sl_api) of the library */
	int (*engine_poll)(struct sl_engine *eng, int budget);
	const struct sl_event *(*engine_events)(const struct sl_engine *eng);
	int (*engine_flush)(struct sl_engine *eng);
	int (*engine_pending)(const struct sl_engine *eng);
	uint64_t (*engine_next_timer)(struct sl_engine *eng);
	int (*engine_rx_ready)(const struct sl_engine *eng);
	int (*conn_write)(struct sl_engine *eng, uint32_t conn, const uint8_t *data,
			  size_t len);
	int (*conn_setopt)(struct sl_engine *eng, uint32_t conn, int opt, int value);
	uint32_t (*engine_active_conns)(struct sl_engine *eng);
};
const struct sl_api *sl_api_get(void);

/* cdef-end */

#endif /* SPECLOOP_H */
