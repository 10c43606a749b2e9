/* SPDX-License-Identifier: MIT */
/*
 * engine.c - the engine handle: open/close, one RX batch per poll, one TX
 * kick per flush, events for Python, counters; the frame boundary, where
 * a test's link impairment (impair.c) sits, on the way in (handle_frame)
 * and out (engine_tx_submit; a GSO super-frame's is in gso_xmit).
 *
 * Per loop iteration Python calls sl_engine_poll() when the xsk fd is
 * readable (peek RX → parse → TCP input → events → release RX), dispatches
 * the events, and calls sl_engine_flush() once at the end of the iteration
 * (TCP output → release frames → reap completions → refill → one kick).
 */
#include <net/if.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "http_fast.h"

void sl_errf(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static uint64_t monotonic_us(const struct sl_engine *eng)
{
	struct timespec ts;

	if (eng->fake_now_us)
		return eng->fake_now_us;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* What every engine's configuration is checked for (a test engine's too). */
static int check_modes(const struct sl_config *cfg, char *err, size_t errlen)
{
	if (cfg->xdp_mode > SL_XDP_GENERIC) {
		sl_errf(err, errlen, "xdp_mode %u: must be auto, native or generic",
			cfg->xdp_mode);
		return -EINVAL;
	}
	if (cfg->tx_gso > SL_TX_GSO_OFF) {
		sl_errf(err, errlen, "tx_gso %u: must be auto, on or off", cfg->tx_gso);
		return -EINVAL;
	}
	if (cfg->cc > SL_CC_RENO) {
		sl_errf(err, errlen, "cc %u: must be cubic or reno", cfg->cc);
		return -EINVAL;
	}
	return 0;
}

static int check_config(const struct sl_config *cfg, char *err, size_t errlen)
{
	if (!cfg || !cfg->ifname || !cfg->ifname[0]) {
		sl_errf(err, errlen, "no interface given");
		return -EINVAL;
	}
	if (strlen(cfg->ifname) >= IF_NAMESIZE) {
		sl_errf(err, errlen, "interface name too long: %s", cfg->ifname);
		return -EINVAL;
	}
	return check_modes(cfg, err, errlen);
}

/* A new engine with its own copy of cfg, named ifname, nothing open yet. */
static struct sl_engine *engine_new(const struct sl_config *cfg, const char *ifname,
				    char *err, size_t errlen)
{
	struct sl_engine *eng = calloc(1, sizeof(*eng));

	if (!eng) {
		sl_errf(err, errlen, "out of memory for the engine");
		return NULL;
	}
	eng->cfg = *cfg;
	snprintf(eng->ifname, sizeof(eng->ifname), "%s", ifname);
	eng->cfg.ifname = eng->ifname;
	eng->steer.prog_fd = eng->steer.link_fd = eng->steer.ports_fd = eng->steer.xsks_fd = -1;
	eng->gso.fd = -1;
	eng->now_us = monotonic_us(eng);
	return eng;
}

/* What every engine has above its frames: TCP and the static store.  On
 * failure nothing of them is left. */
static int open_stack(struct sl_engine *eng, char *err, size_t errlen)
{
	int rc = tcp_init(eng, err, errlen);

	if (rc)
		goto out_tcp;
	rc = static_init(eng);
	if (rc) {
		sl_errf(err, errlen, "out of memory for the static store");
		goto out_tcp;
	}
	eng->ctr.frames_total = eng->xsk.frame_count;
	return 0;

out_tcp:
	tcp_fini(eng);
	return rc;
}

int sl_engine_open(const struct sl_config *cfg, struct sl_engine **out,
		   char *err, size_t errlen)
{
	struct sl_engine *eng;
	int ifindex, rc;
	uint32_t i;

	if (!out)
		return -EINVAL;
	*out = NULL;
	rc = check_config(cfg, err, errlen);
	if (rc)
		return rc;
	ifindex = (int)if_nametoindex(cfg->ifname);
	if (!ifindex) {
		rc = -errno;
		sl_errf(err, errlen, "interface %s not found in this network namespace",
			cfg->ifname);
		return rc;
	}
	eng = engine_new(cfg, cfg->ifname, err, errlen);
	if (!eng)
		return -ENOMEM;

	rc = steer_open(&eng->steer, eng->ifname, ifindex, (int)cfg->xdp_mode,
			err, errlen);
	if (rc)
		goto out_engine;
	rc = xsk_open(&eng->xsk, &eng->cfg, XDP_COPY | XDP_USE_NEED_WAKEUP |
		      (cfg->tx_multibuffer ? XDP_USE_SG : 0), err, errlen);
	if (rc)
		goto out_steer;
	for (i = 0; i < eng->xsk.nq; i++) {
		rc = steer_add_socket(&eng->steer, eng->xsk.q[i].queue_id, eng->xsk.q[i].fd);
		if (rc) {
			sl_errf(err, errlen, "adding the XDP socket of queue %u to the XSKMAP",
				eng->xsk.q[i].queue_id);
			goto out_xsk;
		}
	}
	rc = gso_open(eng, ifindex, err, errlen);
	if (rc)
		goto out_xsk;
	rc = open_stack(eng, err, errlen);
	if (rc)
		goto out_gso;
	xsk_refill(eng);
	*out = eng;
	return 0;

out_gso:
	gso_close(eng);
out_xsk:
	xsk_close(&eng->xsk);
out_steer:
	steer_close(&eng->steer);
out_engine:
	free(eng);
	return rc;
}

/*
 * A test engine: the whole stack, without an interface, a socket or an XDP
 * program.  Frames go in through sl_engine_inject() and come out through
 * sl_engine_tx_take(); the clock can be set (sl_engine_set_clock).  This is
 * what the unit tests and the fuzzers drive.
 */
int sl_engine_open_test(const struct sl_config *cfg, struct sl_engine **out,
			char *err, size_t errlen)
{
	struct sl_engine *eng;
	int rc;

	if (!out || !cfg)
		return -EINVAL;
	*out = NULL;
	rc = check_modes(cfg, err, errlen);
	if (rc)
		return rc;
	eng = engine_new(cfg, cfg->ifname ? cfg->ifname : "test", err, errlen);
	if (!eng)
		return -ENOMEM;
	rc = xsk_open_test(&eng->xsk, &eng->cfg, err, errlen);
	if (rc)
		goto out_engine;
	gso_open_test(eng);
	rc = open_stack(eng, err, errlen);
	if (rc)
		goto out_xsk;
	*out = eng;
	return 0;

out_xsk:
	xsk_close(&eng->xsk);
out_engine:
	free(eng);
	return rc;
}

void sl_engine_close(struct sl_engine *eng)
{
	if (!eng)
		return;
	/* no peer left half-open: RST what is still open, send it now */
	eng->now_us = monotonic_us(eng);
	tcp_reset_all(eng);
	xsk_kick(eng);
	/* the program goes first, so no frame is steered to a closing socket */
	steer_close(&eng->steer);
	tcp_fini(eng);
	static_fini(eng);
	impair_free(eng);
	gso_close(eng);
	xsk_close(&eng->xsk);
	free(eng);
}

int sl_engine_fds(const struct sl_engine *eng, int *fds, int max)
{
	int n;

	for (n = 0; n < (int)eng->xsk.nq && n < max; n++)
		fds[n] = eng->xsk.q[n].fd;
	return n;
}

/* Busy polling: is anything in the RX ring (or due for a poll)?  One
 * acquire load, no system call. */
int sl_engine_rx_ready(const struct sl_engine *eng)
{
	const struct sl_xsk *x = &eng->xsk;

	uint32_t q;

	for (q = 0; q < x->nq; q++)
		/* acquire: pairs with the kernel's release of the RX producer */
		if (__atomic_load_n(x->q[q].rx.producer, __ATOMIC_ACQUIRE) !=
		    x->q[q].rx.cached_cons)
			return 1;
	return 0;
}

uint32_t sl_engine_active_conns(struct sl_engine *eng)
{
	eng->now_us = monotonic_us(eng);
	active_roll(eng);
	return eng->act.count > eng->act.prev ? eng->act.count : eng->act.prev;
}

/* Something waits for the next poll or flush (Python should iterate soon):
 * events to hand over, or output the last flush's budget left queued. */
int sl_engine_pending(const struct sl_engine *eng)
{
	return tcp_pending(eng);
}

/* When to poll next: the earliest TCP timer or frame the link impairment
 * holds (absolute µs), 0 if none. */
uint64_t sl_engine_next_timer(struct sl_engine *eng)
{
	uint64_t d = tcp_next_timer(eng);
	uint64_t held = impair_next_due(eng);

	if (held && (!d || held < d))
		d = held;
	return d;
}

int sl_engine_xdp_mode(const struct sl_engine *eng)
{
	return eng->steer.mode;
}

const struct sl_event *sl_engine_events(const struct sl_engine *eng)
{
	return eng->events;
}

/* Appends an event; NULL when the array is full (callers stop taking RX). */
struct sl_event *engine_event(struct sl_engine *eng, uint32_t type, uint32_t conn)
{
	struct sl_event *ev;

	if (eng->nevents >= SL_MAX_EVENTS)
		return NULL;
	ev = &eng->events[eng->nevents++];
	memset(ev, 0, sizeof(*ev));
	ev->type = type;
	ev->conn = conn;
	return ev;
}

/* One received frame, [off, off+len) of UMEM frame f: parse, TCP. */
static void handle_frame(struct sl_engine *eng, uint32_t f, uint64_t off, uint32_t len)
{
	struct sl_xsk *x = &eng->xsk;
	struct pkt p;

	if (f >= x->frame_count || off + len > x->frame_size) {
		eng->ctr.drop_bad_desc++;
		return;
	}
	x->meta[f].owner = FRAME_RX_HELD;
	x->held[x->held_count++] = f;
	eng->ctr.rx_packets++;
	eng->ctr.rx_bytes += len;
	if (eng->impair && impair_rx(eng, xsk_frame_data(x, f) + off, len))
		return;
	memset(&p, 0, sizeof(p));
	p.frame = xsk_frame_data(x, f) + off;
	p.len = len;
	p.frame_idx = f;
	switch (net_parse(eng, &p)) {
	case 0:
		tcp_input(eng, &p);
		break;
	case 1:
		tcp_icmp_input(eng, &p);
		break;
	default:
		break;	/* counted */
	}
}

static void handle_desc(struct sl_engine *eng, const struct xdp_desc *d)
{
	struct sl_xsk *x = &eng->xsk;

	handle_frame(eng, xsk_addr_frame(x, d->addr), d->addr & (x->frame_size - 1), d->len);
}

/*
 * The engine's frame boundary on the way out: frame[off, off+len) goes to
 * the TX ring (xsk_tx_submit_raw), unless the test's link impairment
 * takes it; such a frame is reported sent (and freed if nobody keeps it).
 * Returns 0 or -EAGAIN when the TX ring is full even after a kick.
 */
int engine_tx_submit(struct sl_engine *eng, uint32_t frame, uint32_t off, uint32_t len)
{
	if (eng->impair &&
	    impair_tx(eng, xsk_frame_data(&eng->xsk, frame) + off, len)) {
		if (!eng->xsk.meta[frame].keep && !eng->xsk.meta[frame].tx_pending)
			xsk_frame_free(&eng->xsk, frame);
		eng->ctr.tx_packets++;
		return 0;
	}
	return xsk_tx_submit_raw(eng, frame, off, len);
}

int sl_engine_poll(struct sl_engine *eng, int budget)
{
	struct sl_xsk *x = &eng->xsk;
	uint32_t idx, n, i, q, idle;

	eng->now_us = monotonic_us(eng);
	xsk_release_held(x);
	tcp_free_deferred(eng);
	eng->nevents = 0;
	tcp_deliver_pending(eng);
	tcp_feed_starved(eng);
	tcp_timers_run(eng);
	if (eng->impair)
		impair_release_rx(eng);
	if (budget <= 0)
		budget = SL_RX_BATCH;
	/* a frame makes at most a few events (ACCEPT, DATA, EOF, WRITABLE);
	 * the queues take turns, a batch each */
	for (q = 0, idle = 0; x->nq && idle < x->nq && budget > 0 &&
	     eng->nevents + 4 * SL_RX_BATCH <= SL_MAX_EVENTS; q = (q + 1) % x->nq) {
		struct xsk_ring_cons *rx = &x->q[q].rx;

		n = xsk_ring_cons__peek(rx, budget < SL_RX_BATCH ? (uint32_t)budget : SL_RX_BATCH,
					&idx);
		if (!n) {
			idle++;
			continue;
		}
		idle = 0;
		eng->ctr.rx_batches++;
		eng->ctr.rx_queue_packets[q] += n;
		for (i = 0; i < n; i++)
			handle_desc(eng, xsk_ring_cons__rx_desc(rx, idx + i));
		/* release: we are done reading these descriptors */
		xsk_ring_cons__release(rx, n);
		budget -= (int)n;
		xsk_refill(eng);
	}
	/* data and EOF of connections accepted in this batch */
	tcp_deliver_pending(eng);
	return (int)eng->nevents;
}

/*
 * Test engines: processes one frame as if it had been received, within a
 * poll (timers and held data first).  Returns the number of events.
 */
int sl_engine_inject(struct sl_engine *eng, const uint8_t *frame, size_t len)
{
	struct sl_xsk *x = &eng->xsk;
	uint32_t f;
	int n = sl_engine_poll(eng, 0);

	if (n < 0)
		return n;
	if (!x->test)
		return -EOPNOTSUPP;
	if (!frame || len > x->frame_size - 256) {
		eng->ctr.drop_short++;
		return n;
	}
	f = xsk_frame_alloc(x, true);
	if (f == SL_NO_FRAME) {
		eng->ctr.fill_ring_empty++;
		return n;
	}
	/* copy mode puts frames 256 bytes into their UMEM frame */
	memcpy(xsk_frame_data(x, f) + 256, frame, len);
	handle_frame(eng, f, 256, (uint32_t)len);
	tcp_deliver_pending(eng);
	return (int)eng->nevents;
}

int sl_engine_tx_take(struct sl_engine *eng, uint8_t *buf, size_t cap)
{
	if (!buf)
		return -EINVAL;
	return xsk_tx_take(&eng->xsk, buf, cap, NULL);
}

int sl_engine_tx_next(struct sl_engine *eng, uint8_t *buf, size_t cap, uint32_t *flags)
{
	if (!buf || !flags)
		return -EINVAL;
	*flags = 0;
	return xsk_tx_take(&eng->xsk, buf, cap, flags);
}

int sl_engine_set_clock(struct sl_engine *eng, uint64_t now_us)
{
	if (!eng->xsk.test)
		return -EOPNOTSUPP;
	eng->fake_now_us = now_us;
	return 0;
}

int sl_engine_flush(struct sl_engine *eng)
{
	struct sl_xsk *x = &eng->xsk;
	uint32_t queued;
	int rc;

	eng->now_us = monotonic_us(eng);
	xsk_reap_completions(x);
	/*
	 * What one flush sends is bounded by what the fill rings can take
	 * back: the peer's ACKs to it arrive while we transmit (on veth, in
	 * our very sendto), and an empty fill ring would drop them.  The rest
	 * waits for the next iteration, after those ACKs are read.
	 */
	eng->tx_budget = x->test ? UINT32_MAX : (x->fill_target / 4 > 64 ? x->fill_target / 4 : 64);
	tcp_output_dirty(eng);
	if (eng->impair)
		impair_release_tx(eng);
	xsk_release_held(x);
	tcp_free_deferred(eng);
	xsk_refill(eng);
	queued = x->tx_queued;
	rc = xsk_kick(eng);
	return rc < 0 ? rc : (int)queued;
}

int sl_engine_counters(struct sl_engine *eng, struct sl_counters *out)
{
	struct sl_xsk *x = &eng->xsk;
	uint64_t by_owner[FRAME_OWNERS] = { 0 };
	uint32_t i;

	for (i = 0; i < x->frame_count; i++)
		by_owner[x->meta[i].owner < FRAME_OWNERS ? x->meta[i].owner : 0]++;
	if (x->test)
		by_owner[FRAME_FILL] = 0;
	eng->ctr.frames_free = by_owner[FRAME_FREE];
	eng->ctr.frames_fill = by_owner[FRAME_FILL];
	eng->ctr.frames_rx_held = by_owner[FRAME_RX_HELD];
	eng->ctr.frames_tx = by_owner[FRAME_TX];
	eng->ctr.frames_sndq = by_owner[FRAME_SNDQ];
	eng->ctr.frames_static = by_owner[FRAME_STATIC];
	eng->ctr.conns = eng->tcp->nconns;
	eng->ctr.segs_in_use = eng->tcp->segs_used;
	eng->ctr.timers_armed = 0;	/* the lazy heap also holds stopped ones */
	for (i = 0; i < eng->tcp->heap_len; i++)
		eng->ctr.timers_armed += eng->tcp->conns[eng->tcp->heap[i]].deadline != 0;
	eng->ctr.listeners = 0;
	for (i = 0; i < SL_MAX_LISTENERS; i++)
		eng->ctr.listeners += eng->tcp->listeners[i].port != 0;
	eng->ctr.ooo_bytes = 0;
	eng->ctr.rxq_bytes = 0;
	eng->ctr.conns_time_wait = 0;
	for (i = 0; i < eng->tcp->max_conns; i++) {
		const struct sl_conn *c = &eng->tcp->conns[i];

		if (c->id) {
			eng->ctr.conns_time_wait += c->state == TCP_TIME_WAIT;
			eng->ctr.ooo_bytes += c->ooo_bytes;
			eng->ctr.rxq_bytes += c->rxq.len;
		}
	}
	eng->ctr.rx_held = eng->tcp->rx_held;
	eng->ctr.conn_slot_bytes = sizeof(struct sl_conn) + 2 * sizeof(uint32_t) +
				   sizeof(uint32_t);	/* + hash bucket share + heap slot */
	eng->ctr.static_files = eng->stat ? eng->stat->count : 0;
	eng->ctr.static_bytes = eng->stat ? eng->stat->bytes : 0;
	xsk_read_kernel_stats(eng);
	*out = eng->ctr;
	return 0;
}

int sl_engine_steer_port(struct sl_engine *eng, uint32_t port)
{
	if (port == 0 || port > 65535)
		return -EINVAL;
	return steer_port(&eng->steer, (uint16_t)port, true);
}

int sl_engine_unsteer_port(struct sl_engine *eng, uint32_t port)
{
	if (port == 0 || port > 65535)
		return -EINVAL;
	if (eng->tcp->port_refs[port])
		return -EBUSY;	/* a listener or connection uses it */
	return steer_port(&eng->steer, (uint16_t)port, false);
}
