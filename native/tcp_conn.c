/* SPDX-License-Identifier: MIT */
/*
 * tcp_conn.c - the connection table, listeners, and the sl_conn_* API.
 *
 * Connections live in one array; an id is index | generation << 20, so a
 * stale id from Python never reaches a reused slot.  Lookup is a chained
 * hash on (peer address, peer port, local port) keyed with SipHash, so a
 * peer cannot choose colliding tuples.
 *
 * Events: a connection emits ACCEPT once established (if its listener is
 * accepting; else it waits, counted against the backlog), DATA for
 * in-order bytes, EOF for the peer's FIN, WRITABLE after a short write
 * when room appears, CLOSED when it ends under Python's feet (reset,
 * timeout).  A connection Python closed or aborted is "detached": it may
 * live on (FIN-WAIT, TIME-WAIT) but emits nothing.
 */
#include <stdlib.h>
#include <sys/random.h>

#include "tcp.h"

#define ID_INDEX_BITS 20
#define ID_INDEX_MASK ((1u << ID_INDEX_BITS) - 1)

static int byteq_append(struct byteq *q, const uint8_t *data, uint32_t len);

static uint32_t hash_tuple(const struct sl_engine *eng, uint32_t peer_ip,
			   uint16_t peer_port, uint16_t local_port)
{
	uint8_t key[8];

	memcpy(key, &peer_ip, 4);
	put_be16(key + 4, peer_port);
	put_be16(key + 6, local_port);
	return (uint32_t)siphash13(eng->tcp->key, key, sizeof(key)) & eng->tcp->hash_mask;
}

/* The connection goes: its app, if any, lets go of it. */
static void app_release(struct sl_engine *eng, struct sl_conn *c)
{
	if (c->app)
		c->app->release(eng, c);
	c->app = NULL;
	c->app_ctx = NULL;
}

int tcp_init(struct sl_engine *eng, char *err, size_t errlen)
{
	struct tcp_state_all *t;
	uint32_t i, hsize = 16;

	if (eng->cfg.max_conns < 1 || eng->cfg.max_conns > ID_INDEX_MASK) {
		sl_errf(err, errlen, "max_conns %u: must be from 1 to %u",
			eng->cfg.max_conns, ID_INDEX_MASK);
		return -EINVAL;
	}
	t = calloc(1, sizeof(*t));
	if (!t)
		goto oom;
	eng->tcp = t;
	t->max_conns = eng->cfg.max_conns;
	while (hsize < 2 * t->max_conns)
		hsize <<= 1;
	t->hash_mask = hsize - 1;
	t->conns = calloc(t->max_conns, sizeof(*t->conns));
	t->hash = malloc(hsize * sizeof(*t->hash));
	t->nsegs = eng->cfg.frame_count + 256;
	t->segs = calloc(t->nsegs, sizeof(*t->segs));
	t->port_refs = calloc(65536, sizeof(*t->port_refs));
	t->heap = calloc(t->max_conns, sizeof(*t->heap));
	t->deferred_cap = 256;
	t->deferred = calloc(t->deferred_cap, sizeof(*t->deferred));
	if (!t->conns || !t->hash || !t->segs || !t->port_refs || !t->heap ||
	    !t->deferred)
		goto oom;
	for (i = 0; i <= t->hash_mask; i++)
		t->hash[i] = SL_NONE;
	for (i = 0; i < t->max_conns; i++) {
		t->conns[i].next_free = i + 1 < t->max_conns ? i + 1 : SL_NONE;
		t->conns[i].heap_idx = SL_NONE;
		t->conns[i].hnext = SL_NONE;
	}
	t->free_head = 0;
	for (i = 0; i < t->nsegs; i++)
		t->segs[i].next = i + 1 < t->nsegs ? i + 1 : SL_NONE;
	t->seg_free = 0;
	t->dirty_head = SL_NONE;
	t->dirty_tail = SL_NONE;
	t->deliver_head = SL_NONE;
	t->starved_head = SL_NONE;
	t->starved_tail = SL_NONE;
	t->gen = 1;
	if (eng->cfg.seed) {
		t->key[0] = eng->cfg.seed;
		t->key[1] = eng->cfg.seed * 0x9e3779b97f4a7c15ULL + 1;
	} else if (getrandom(t->key, sizeof(t->key), 0) != sizeof(t->key)) {
		sl_errf(err, errlen, "getrandom for the TCP secret failed");
		return -errno ? -errno : -EIO;
	}
	return 0;
oom:
	sl_errf(err, errlen, "out of memory for %u connections", eng->cfg.max_conns);
	return -ENOMEM;
}

void tcp_fini(struct sl_engine *eng)
{
	struct tcp_state_all *t = eng->tcp;
	uint32_t i;

	if (!t)
		return;
	if (t->conns) {
		for (i = 0; i < t->max_conns; i++) {
			struct sl_conn *c = &t->conns[i];
			struct ooo_seg *o, *n;

			uint32_t si;

			if (!c->id)
				continue;
			app_release(eng, c);
			tcp_sendfile_end(eng, c);
			for (si = c->sq_head; si != SL_NONE; si = t->segs[si].next)
				if (t->segs[si].flags & SEG_STATIC)
					payload_put(eng, t->segs[si].payload);
				else if (t->segs[si].file)
					tcp_file_put(eng, t->segs[si].file);
			for (o = c->ooo; o; o = n) {
				n = o->next;
				free(o);
			}
			free(c->rxq.buf);
		}
	}
	tcp_free_deferred(eng);
	free(t->conns);
	free(t->hash);
	free(t->segs);
	free(t->port_refs);
	free(t->heap);
	free(t->deferred);
	free(t);
	eng->tcp = NULL;
}

static void port_ref(struct sl_engine *eng, uint16_t port)
{
	if (eng->tcp->port_refs[port]++ == 0)
		steer_port(&eng->steer, port, true);
}

static void port_unref(struct sl_engine *eng, uint16_t port)
{
	if (eng->tcp->port_refs[port] && --eng->tcp->port_refs[port] == 0)
		steer_port(&eng->steer, port, false);
}

struct sl_conn *conn_lookup(struct sl_engine *eng, uint32_t peer_ip,
			    uint16_t peer_port, uint16_t local_port)
{
	struct tcp_state_all *t = eng->tcp;
	uint32_t i = t->hash[hash_tuple(eng, peer_ip, peer_port, local_port)];

	while (i != SL_NONE) {
		struct sl_conn *c = &t->conns[i];

		if (c->peer_ip == peer_ip && c->peer_port == peer_port &&
		    c->local_port == local_port)
			return c;
		i = c->hnext;
	}
	return NULL;
}

struct sl_conn *conn_by_id(struct sl_engine *eng, uint32_t id)
{
	uint32_t idx = id & ID_INDEX_MASK;

	if (!id || idx >= eng->tcp->max_conns)
		return NULL;
	if (eng->tcp->conns[idx].id != id)
		return NULL;
	return &eng->tcp->conns[idx];
}

uint32_t tcp_isn(struct sl_engine *eng, uint32_t peer_ip, uint16_t peer_port,
		 uint16_t local_port)
{
	/* RFC 6528 §3: ISN = M + F(localip, localport, remoteip, remoteport,
	 * secretkey), M a 4-microsecond timer */
	uint8_t key[12];

	memcpy(key, &eng->cfg.ipv4, 4);
	memcpy(key + 4, &peer_ip, 4);
	put_be16(key + 8, local_port);
	put_be16(key + 10, peer_port);
	return (uint32_t)(eng->now_us / 4) +
	       (uint32_t)siphash24(eng->tcp->key, key, sizeof(key));
}

struct sl_conn *conn_new(struct sl_engine *eng, const struct pkt *p)
{
	struct tcp_state_all *t = eng->tcp;
	struct sl_conn *c;
	uint32_t idx, h, dirty_next, deliver_next, starved_next;
	bool in_dirty, on_deliver, on_starved;

	if (t->free_head == SL_NONE)
		return NULL;
	idx = t->free_head;
	c = &t->conns[idx];
	t->free_head = c->next_free;
	/* a freed slot may still be linked on the dirty or deliver list: keep
	 * the links, the list walkers skip what is not theirs any more */
	in_dirty = c->in_dirty;
	dirty_next = c->dirty_next;
	on_deliver = c->on_deliver;
	deliver_next = c->deliver_next;
	on_starved = c->on_starved;
	starved_next = c->starved_next;
	memset(c, 0, sizeof(*c));
	c->in_dirty = in_dirty;
	c->dirty_next = dirty_next;
	c->on_deliver = on_deliver;
	c->deliver_next = deliver_next;
	c->on_starved = on_starved;
	c->starved_next = starved_next;
	c->heap_idx = SL_NONE;
	c->next_free = SL_NONE;
	if (++t->gen >= (1u << (32 - ID_INDEX_BITS)))
		t->gen = 1;
	c->id = idx | t->gen << ID_INDEX_BITS;
	c->peer_ip = p->saddr;
	c->peer_port = p->sport;
	c->local_port = p->dport;
	memcpy(c->peer_mac, p->src_mac, 6);
	c->listener = SL_NONE;
	c->sq_head = c->sq_tail = c->sq_send = SL_NONE;
	c->ts_head = c->ts_tail = SL_NONE;
	c->reo_mult = 1;		/* RFC 8985 §6.2: RACK.reo_wnd_mult starts at 1 */
	c->rcvbuf = eng->cfg.rcvbuf;
	c->rto_us = 1000000;	/* RFC 6298 §2.1: initial RTO of one second */
	c->cwnd = TCP_INIT_CWND;
	c->ssthresh = UINT32_MAX;
	c->quickacks = TCP_QUICKACKS;
	c->ka_idle_s = 7200;
	c->ka_intvl_s = 75;
	c->ka_probes = 9;
	c->last_rx_us = eng->now_us;
	h = hash_tuple(eng, c->peer_ip, c->peer_port, c->local_port);
	c->hnext = t->hash[h];
	t->hash[h] = idx;
	t->nconns++;
	port_ref(eng, c->local_port);
	return c;
}

static void hash_remove(struct sl_engine *eng, struct sl_conn *c)
{
	struct tcp_state_all *t = eng->tcp;
	uint32_t idx = conn_index(eng, c);
	uint32_t *pp = &t->hash[hash_tuple(eng, c->peer_ip, c->peer_port, c->local_port)];

	while (*pp != SL_NONE) {
		if (*pp == idx) {
			*pp = c->hnext;
			return;
		}
		pp = &t->conns[*pp].hnext;
	}
}

static struct tcp_listener *listener_of(struct sl_engine *eng, const struct sl_conn *c)
{
	if (c->listener == SL_NONE || c->listener >= SL_MAX_LISTENERS)
		return NULL;
	return &eng->tcp->listeners[c->listener];
}

void conn_free(struct sl_engine *eng, struct sl_conn *c)
{
	struct tcp_state_all *t = eng->tcp;
	struct tcp_listener *l = listener_of(eng, c);
	struct ooo_seg *o, *n;

	if (!c->id)
		return;
	if (l && !c->accepted && l->pending)
		l->pending--;
	timer_clear_all(eng, c);
	tcp_free_sendq(eng, c);
	app_release(eng, c);
	t->rx_held -= (uint64_t)c->rxq.len + c->ooo_bytes;
	for (o = c->ooo; o; o = n) {
		n = o->next;
		free(o);
	}
	c->ooo = NULL;
	free(c->rxq.buf);
	c->rxq.buf = NULL;
	hash_remove(eng, c);
	port_unref(eng, c->local_port);
	c->id = 0;
	c->state = TCP_CLOSED;
	c->next_free = t->free_head;
	t->free_head = conn_index(eng, c);
	t->nconns--;
}

/* The connection ends under Python: tell it (unless detached), free it. */
void conn_reset_close(struct sl_engine *eng, struct sl_conn *c, int err)
{
	if (c->accepted && !c->detached) {
		struct sl_event *ev = engine_event(eng, SL_EV_CLOSED, c->id);

		if (ev)
			ev->err = err;
	}
	conn_free(eng, c);
}

void conn_dirty(struct sl_engine *eng, struct sl_conn *c)
{
	if (c->in_dirty)
		return;
	c->in_dirty = true;
	c->dirty_next = SL_NONE;
	if (eng->tcp->dirty_tail == SL_NONE)
		eng->tcp->dirty_head = conn_index(eng, c);
	else
		eng->tcp->conns[eng->tcp->dirty_tail].dirty_next = conn_index(eng, c);
	eng->tcp->dirty_tail = conn_index(eng, c);
}

/* On the deliver list: tcp_deliver_pending visits it at the next poll. */
static void visit_later(struct sl_engine *eng, struct sl_conn *c)
{
	if (c->on_deliver)
		return;
	c->on_deliver = true;
	c->deliver_next = eng->tcp->deliver_head;
	eng->tcp->deliver_head = conn_index(eng, c);
}

/* c->file_err is set: aborted at the next poll (tcp_deliver_pending). */
void conn_abort_later(struct sl_engine *eng, struct sl_conn *c)
{
	visit_later(eng, c);
}

/* Held data or EOF to hand over at the next poll (after resume/accept). */
static void deliver_later(struct sl_engine *eng, struct sl_conn *c)
{
	c->deliver_pending = true;
	visit_later(eng, c);
}

static void emit_accept(struct sl_engine *eng, struct sl_conn *c, struct tcp_listener *l)
{
	struct sl_event *ev = engine_event(eng, SL_EV_ACCEPT, c->id);

	if (!ev)
		return;		/* stays pending; the next poll tries again */
	ev->arg = l->id;
	c->accepted = true;
	if (l->pending)
		l->pending--;
	if (c->rxq.len || c->eof_pending)
		deliver_later(eng, c);
}

void conn_established(struct sl_engine *eng, struct sl_conn *c)
{
	struct tcp_listener *l = listener_of(eng, c);

	c->state = TCP_ESTABLISHED;
	eng->ctr.conns_opened++;
	if (l && l->port && l->app && l->accepting && l->app->attach(eng, c) == 0) {
		/* the app owns it until it hands it to Python */
		c->app = l->app;
		if (l->pending)
			l->pending--;
		return;
	}
	if (l && l->port && l->accepting)
		emit_accept(eng, c, l);
}

/*
 * An app (the fast path) gives its connection to Python: an ACCEPT (as if
 * it had just been established) and then `rest` as its first DATA.
 */
bool conn_hand_to_python(struct sl_engine *eng, struct sl_conn *c, const uint8_t *rest,
			 uint32_t len)
{
	struct tcp_listener *l = listener_of(eng, c);

	if (len && byteq_append(&c->rxq, rest, len))
		return false;
	eng->tcp->rx_held += len;
	timer_set(eng, c, T_KEEPALIVE, 0);
	if (!l || !l->port) {
		/* the server is gone: nobody can answer this request */
		conn_app_close(eng, c);
		return true;
	}
	l->pending++;
	if (l->accepting)
		emit_accept(eng, c, l);
	return true;
}

/* RFC 9293 §3.10.4 CLOSE: ESTABLISHED → FIN-WAIT-1, CLOSE-WAIT →
 * LAST-ACK; the FIN follows the queued data.  -ENOTCONN in other states. */
static int shutdown_write(struct sl_engine *eng, struct sl_conn *c)
{
	if (c->state == TCP_ESTABLISHED)
		c->state = TCP_FIN_WAIT_1;
	else if (c->state == TCP_CLOSE_WAIT)
		c->state = TCP_LAST_ACK;
	else
		return -ENOTCONN;
	return tcp_queue_fin(eng, c);
}

/* An app closes its connection (what it queued goes out first). */
void conn_app_close(struct sl_engine *eng, struct sl_conn *c)
{
	c->detached = true;
	shutdown_write(eng, c);
}

struct tcp_listener *listener_for_port(struct sl_engine *eng, uint16_t port)
{
	uint32_t i;

	for (i = 0; i < SL_MAX_LISTENERS; i++)
		if (eng->tcp->listeners[i].port == port)
			return &eng->tcp->listeners[i];
	return NULL;
}

static int byteq_append(struct byteq *q, const uint8_t *data, uint32_t len)
{
	if (q->len + len > q->cap) {
		uint32_t cap = q->cap ? q->cap : 4096;
		uint8_t *nb;

		while (cap < q->len + len)
			cap *= 2;
		nb = realloc(q->buf, cap);
		if (!nb)
			return -ENOMEM;
		q->buf = nb;
		q->cap = cap;
	}
	memcpy(q->buf + q->len, data, len);
	q->len += len;
	return 0;
}

int tcp_defer_free(struct sl_engine *eng, void *buf)
{
	struct tcp_state_all *t = eng->tcp;

	if (t->ndeferred == t->deferred_cap) {
		void **n = realloc(t->deferred, 2 * t->deferred_cap * sizeof(*n));

		if (!n) {
			return -ENOMEM;
		}
		t->deferred = n;
		t->deferred_cap *= 2;
	}
	t->deferred[t->ndeferred++] = buf;
	return 0;
}

void tcp_free_deferred(struct sl_engine *eng)
{
	struct tcp_state_all *t = eng->tcp;
	uint32_t i;

	for (i = 0; i < t->ndeferred; i++)
		free(t->deferred[i]);
	t->ndeferred = 0;
}

/*
 * In-order bytes for Python.  They go out as a DATA event pointing at
 * `data` (valid until the next poll/flush), or, when Python is not reading
 * (paused, not yet accepted), into the connection's byte queue: the one
 * place receive data is copied inside the stack.  Returns false when the
 * bytes could not be taken (out of memory): the caller must not ACK them.
 */
bool conn_deliver(struct sl_engine *eng, struct sl_conn *c, const uint8_t *data,
		  uint32_t len)
{
	if (!len)
		return true;
	if (app_owns(c))
		return c->app->input(eng, c, data, len);
	return conn_to_python(eng, c, data, len);
}

/* In-order bytes for Python, past any app (conn_deliver's second half;
 * an app calls it for what it hands on). */
bool conn_to_python(struct sl_engine *eng, struct sl_conn *c, const uint8_t *data,
		    uint32_t len)
{
	struct sl_event *ev;

	if (!len)
		return true;
	if (c->accepted && !c->rx_paused && !c->rxq.len && !c->deliver_pending) {
		ev = engine_event(eng, SL_EV_DATA, c->id);
		if (ev) {
			ev->data = data;
			ev->len = len;
			return true;
		}
	}
	return conn_to_python_copy(eng, c, data, len);
}

/* As conn_to_python, for bytes that do not outlive the call (an app's own
 * buffer, which a DATA event must not point into): copied, handed over at
 * the end of this poll. */
bool conn_to_python_copy(struct sl_engine *eng, struct sl_conn *c, const uint8_t *data,
			 uint32_t len)
{
	if (!len)
		return true;
	if (byteq_append(&c->rxq, data, len))
		return false;
	eng->tcp->rx_held += len;
	if (c->accepted && !c->rx_paused)
		deliver_later(eng, c);
	return true;
}

/*
 * An app gives Python bytes it held (already ACKed), ahead of any later
 * input: the queue itself when Python holds nothing, so that it cannot
 * fail then.  false only when appending found no memory (q unchanged).
 */
bool conn_give_python(struct sl_engine *eng, struct sl_conn *c, struct byteq *q)
{
	uint32_t len = q->len;

	if (!len)
		return true;
	if (!c->rxq.len) {
		free(c->rxq.buf);
		c->rxq = *q;
		memset(q, 0, sizeof(*q));
	} else if (byteq_append(&c->rxq, q->buf, len)) {
		return false;
	} else {
		q->len = 0;
	}
	eng->tcp->rx_held += len;
	if (c->accepted && !c->rx_paused)
		deliver_later(eng, c);
	return true;
}

/* Python lets go of a connection its app holds (the app answers it):
 * its transport is done, the connection lives on; a later hand is a new
 * ACCEPT. */
static void python_lets_go(struct sl_conn *c)
{
	c->accepted = false;
	c->rx_paused = false;
	c->want_writable = false;
	c->writable_pending = false;
}

/*
 * The app ends a connection it holds while Python still has a transport
 * for it (idle since its last answer): that transport's connection is
 * over (a RETURNED event: connection_lost(None)).  false when the event
 * does not fit in this poll (the app tries again at the next).
 */
bool conn_python_gone(struct sl_engine *eng, struct sl_conn *c)
{
	if (!c->accepted)
		return true;
	if (!engine_event(eng, SL_EV_RETURNED, c->id))
		return false;
	python_lets_go(c);
	return true;
}

/* The app's later() runs at the next poll (from tcp_deliver_pending). */
void conn_app_later(struct sl_engine *eng, struct sl_conn *c)
{
	c->app_later = true;
	visit_later(eng, c);
}

void conn_eof(struct sl_engine *eng, struct sl_conn *c)
{
	if (app_owns(c)) {
		c->app->eof(eng, c);
		return;
	}
	if (c->detached)
		return;
	if (c->accepted && !c->rx_paused && !c->rxq.len && !c->deliver_pending) {
		if (engine_event(eng, SL_EV_EOF, c->id))
			return;
	}
	c->eof_pending = true;
	if (c->accepted && !c->rx_paused)
		deliver_later(eng, c);
}

/*
 * The send buffer follows the congestion window, as Linux's
 * tcp_sndbuf_expand() makes it: room for twice the window's payload, so
 * that a window wider than the configured buffer (a long fat path: 1 MiB
 * is 20 ms at 400 Mbit/s) can be filled and refilled while its ACKs come.
 * The configured sndbuf is the floor, SNDBUF_GROWN_MAX the ceiling
 * (Linux's tcp_wmem[2], 4 MiB).
 */
#define SNDBUF_GROWN_MAX (4u << 20)

uint32_t conn_sndbuf(const struct sl_engine *eng, const struct sl_conn *c)
{
	uint64_t grown = 2ull * c->cwnd * c->mss;
	uint32_t base = eng->cfg.sndbuf;

	if (grown > SNDBUF_GROWN_MAX)
		grown = SNDBUF_GROWN_MAX;
	return grown > base ? (uint32_t)grown : base;
}

void conn_writable(struct sl_engine *eng, struct sl_conn *c)
{
	if (!c->want_writable || c->detached || !c->accepted || app_holds(c))
		return;		/* (held: its turn comes with its next request) */
	if (c->sq_bytes >= conn_sndbuf(eng, c))
		return;
	if (engine_event(eng, SL_EV_WRITABLE, c->id))
		c->want_writable = false;
}

/*
 * A write found no free frame or segment (other connections hold them):
 * its WRITABLE cannot come from its own ACKs, so it waits in line here
 * for the shared pool to free up.
 */
void conn_starved(struct sl_engine *eng, struct sl_conn *c)
{
	struct tcp_state_all *t = eng->tcp;
	uint32_t idx = conn_index(eng, c);

	c->want_writable = true;
	if (c->on_starved)
		return;
	c->on_starved = true;
	c->starved_next = SL_NONE;
	if (t->starved_tail == SL_NONE)
		t->starved_head = idx;
	else
		t->conns[t->starved_tail].starved_next = idx;
	t->starved_tail = idx;
}

/* A starved writer is woken with at least this much of the pool free for
 * it (frames and segments each), so that what it queues is worth its
 * wake-up; under heavy sharing it is a fair share of the pool, not a
 * race of every waiter for the last few frames. */
#define STARVED_SHARE 32

/*
 * Frames and segments are free again: wake the starved writers, oldest
 * first, as many as the free pool gives a share to.  Each poll calls
 * this, so with the pool still short nobody is woken only to find it
 * short again (a WRITABLE that queues nothing costs a Python callback).
 */
void tcp_feed_starved(struct sl_engine *eng)
{
	struct tcp_state_all *t = eng->tcp;
	uint32_t frames = eng->xsk.free_top, segs = t->nsegs - t->segs_used;
	uint32_t floor = SL_FRAME_RESERVE + eng->xsk.frame_count / 8, shares;

	if (t->starved_head == SL_NONE || frames < floor || segs < floor)
		return;
	shares = (frames < segs ? frames : segs) - SL_FRAME_RESERVE;
	shares /= STARVED_SHARE;
	while (t->starved_head != SL_NONE && shares &&
	       eng->nevents + 1 <= SL_MAX_EVENTS) {
		uint32_t idx = t->starved_head;
		struct sl_conn *c = &t->conns[idx];

		t->starved_head = c->starved_next;
		if (t->starved_head == SL_NONE)
			t->starved_tail = SL_NONE;
		c->on_starved = false;
		if (!c->id)
			continue;
		if (app_pending(c))
			conn_dirty(eng, c);	/* its responses wait for frames */
		conn_writable(eng, c);
		shares--;
	}
}

/* The engine is closing: every connection still open gets a RST so that
 * no peer is left half-open. */
void tcp_reset_all(struct sl_engine *eng)
{
	struct tcp_state_all *t = eng->tcp;
	uint32_t i;

	if (!t)
		return;
	for (i = 0; i < t->max_conns; i++) {
		struct sl_conn *c = &t->conns[i];

		if (c->id && c->state != TCP_TIME_WAIT && c->state != TCP_CLOSED)
			tcp_send_rst(eng, c);
	}
}

/* WRITABLE from outside a poll (the flush): events are only read after a
 * poll, so it waits on the deliver list for the next one. */
void conn_writable_later(struct sl_engine *eng, struct sl_conn *c)
{
	c->writable_pending = true;
	deliver_later(eng, c);
}

/* Connections wait for the next poll (events to hand over) or flush
 * (output the last flush's budget left queued). */
bool tcp_pending(const struct sl_engine *eng)
{
	return eng->tcp && (eng->tcp->deliver_head != SL_NONE ||
			    eng->tcp->dirty_head != SL_NONE);
}

/* Hands held data (resume, accept) to Python: one DATA event per queue. */
void tcp_deliver_pending(struct sl_engine *eng)
{
	struct tcp_state_all *t = eng->tcp;
	uint32_t idx = t->deliver_head;

	t->deliver_head = SL_NONE;
	while (idx != SL_NONE) {
		struct sl_conn *c = &t->conns[idx];
		struct sl_event *ev;
		uint32_t old_wnd;

		idx = c->deliver_next;
		c->on_deliver = false;
		if (c->id && c->file_err) {
			/* tcp_output could not read a file segment: RFC 9293
			 * §3.10.5 ABORT, the error to the transport (a poll's
			 * events are Python's; a flush's would be lost) */
			if (eng->nevents + 1 > SL_MAX_EVENTS) {
				visit_later(eng, c);
				continue;
			}
			tcp_send_rst(eng, c);
			conn_reset_close(eng, c, -c->file_err);
			continue;
		}
		if (!c->id || (!c->deliver_pending && !c->writable_pending && !c->app_later))
			continue;
		if (c->app_later) {
			/* room for what it may emit: RETURNED, ACCEPT, DATA, EOF */
			if (eng->nevents + 4 > SL_MAX_EVENTS) {
				visit_later(eng, c);
				continue;
			}
			c->app_later = false;
			if (c->app && c->app->later)
				c->app->later(eng, c);
			if (!c->id)
				continue;
		}
		if (c->writable_pending && c->accepted && !c->detached &&
		    eng->nevents + 3 <= SL_MAX_EVENTS) {
			c->writable_pending = false;
			conn_writable(eng, c);
		}
		if (!c->deliver_pending || c->rx_paused || !c->accepted || c->detached)
			continue;	/* resume or accept puts it back */
		if (eng->nevents + 2 > SL_MAX_EVENTS) {
			deliver_later(eng, c);
			continue;
		}
		c->deliver_pending = false;
		if (c->rxq.len) {
			if (tcp_defer_free(eng, c->rxq.buf)) {
				deliver_later(eng, c);
				continue;
			}
			old_wnd = conn_rcv_window(eng, c);
			ev = engine_event(eng, SL_EV_DATA, c->id);
			ev->data = c->rxq.buf;
			ev->len = c->rxq.len;
			t->rx_held -= c->rxq.len;
			memset(&c->rxq, 0, sizeof(c->rxq));
			/* RFC 9293 §3.8.6.2.2: the window reopened; say so */
			if (conn_rcv_window(eng, c) > old_wnd) {
				c->window_update = true;
				conn_dirty(eng, c);
			}
		}
		if (c->eof_pending) {
			c->eof_pending = false;
			engine_event(eng, SL_EV_EOF, c->id);
		}
	}
}

/*
 * Receive window we can offer now: buffer minus what we hold.  When the
 * engine as a whole holds more than its receive budget (readers paused,
 * holes everywhere), a connection that holds data itself offers no new
 * window until its reader catches up: backpressure instead of memory.
 */
uint32_t conn_rcv_window(const struct sl_engine *eng, const struct sl_conn *c)
{
	uint64_t held = (uint64_t)c->rxq.len + c->ooo_bytes;

	if (held && eng->cfg.rx_budget && eng->tcp->rx_held > eng->cfg.rx_budget)
		return 0;
	return held >= c->rcvbuf ? 0 : c->rcvbuf - (uint32_t)held;
}

/* ---- listeners ---------------------------------------------------- */

int sl_listen(struct sl_engine *eng, uint32_t port, uint32_t backlog, int accepting)
{
	struct tcp_state_all *t = eng->tcp;
	uint32_t i;
	int rc;

	if (port == 0 || port > 65535)
		return -EINVAL;
	if (listener_for_port(eng, (uint16_t)port))
		return -EADDRINUSE;
	for (i = 0; i < SL_MAX_LISTENERS; i++)
		if (!t->listeners[i].port)
			break;
	if (i == SL_MAX_LISTENERS)
		return -ENOSPC;
	if (t->port_refs[port] == 0) {
		rc = steer_port(&eng->steer, (uint16_t)port, true);
		if (rc)
			return rc;
	}
	t->port_refs[port]++;
	t->listeners[i].port = (uint16_t)port;
	t->listeners[i].backlog = backlog ? backlog : 1;
	t->listeners[i].pending = 0;
	t->listeners[i].id = i;
	t->listeners[i].accepting = accepting != 0;
	return (int)i;
}

struct tcp_listener *listener_by_id(struct sl_engine *eng, uint32_t id)
{
	if (id >= SL_MAX_LISTENERS || !eng->tcp->listeners[id].port)
		return NULL;
	return &eng->tcp->listeners[id];
}


int sl_listen_set_accepting(struct sl_engine *eng, uint32_t id, int accepting)
{
	struct tcp_listener *l = listener_by_id(eng, id);
	uint32_t i;

	if (!l)
		return -EBADF;
	l->accepting = accepting != 0;
	if (!l->accepting)
		return 0;
	/* connections that completed while we were not accepting */
	for (i = 0; i < eng->tcp->max_conns; i++) {
		struct sl_conn *c = &eng->tcp->conns[i];

		if (c->id && c->listener == id && !c->accepted && !c->detached &&
		    c->state != TCP_SYN_RECEIVED && !app_holds(c))
			emit_accept(eng, c, l);
	}
	return 0;
}

/*
 * Like closing a listening socket: connections not yet accepted are reset,
 * accepted ones live on.  The port stays steered while any of them does.
 */
int sl_listen_close(struct sl_engine *eng, uint32_t id)
{
	struct tcp_listener *l = listener_by_id(eng, id);
	uint16_t port;
	uint32_t i;

	if (!l)
		return -EBADF;
	port = l->port;
	for (i = 0; i < eng->tcp->max_conns; i++) {
		struct sl_conn *c = &eng->tcp->conns[i];

		if (!c->id || c->listener != id)
			continue;
		if (app_holds(c)) {
			/* served without Python: the app finishes what was asked */
			c->listener = SL_NONE;
			c->app->shutdown(eng, c);
		} else if (!c->accepted) {
			tcp_send_rst(eng, c);
			conn_free(eng, c);
		} else {
			c->listener = SL_NONE;
		}
	}
	memset(l, 0, sizeof(*l));
	port_unref(eng, port);
	return 0;
}

/* ---- the connection API ---------------------------------------------- */

static struct sl_conn *api_conn(struct sl_engine *eng, uint32_t id)
{
	struct sl_conn *c = conn_by_id(eng, id);

	if (!c || c->detached || !c->accepted)
		return NULL;
	return c;
}

static uint32_t send_space(const struct sl_engine *eng, const struct sl_conn *c)
{
	uint32_t sndbuf = conn_sndbuf(eng, c);

	return c->sq_bytes >= sndbuf ? 0 : sndbuf - c->sq_bytes;
}

/* The connection Python may write to now: 0 and *out, or -errno. */
static int writable_conn(struct sl_engine *eng, uint32_t id, struct sl_conn **out)
{
	struct sl_conn *c = api_conn(eng, id);

	if (!c)
		return -ENOTCONN;
	if (c->fin_queued)
		return -EPIPE;
	if (c->state != TCP_ESTABLISHED && c->state != TCP_CLOSE_WAIT)
		return -ENOTCONN;
	*out = c;
	return 0;
}

int sl_conn_write(struct sl_engine *eng, uint32_t id, const uint8_t *data, size_t len)
{
	struct sl_conn *c;
	uint32_t want;
	int n = writable_conn(eng, id, &c);

	if (n)
		return n;
	if (!len)
		return 0;
	if (!data)
		return -EINVAL;
	if (app_pending(c) || app_holds(c)) {
		/* fast-path responses to earlier requests are still going out,
		 * or the app answers the connection now: Python's turn comes */
		c->want_writable = true;
		return 0;
	}
	want = len > send_space(eng, c) ? send_space(eng, c) : (uint32_t)len;
	n = want ? tcp_queue_data(eng, c, data, want) : 0;
	if (n < 0)
		return n;
	if (n && c->app && c->app->output)
		c->app->output(eng, c, data, (uint32_t)n);	/* it frames Python's answer */
	if ((uint32_t)n < want)
		conn_starved(eng, c);	/* short for want of frames */
	else if ((size_t)n < len)
		c->want_writable = true;	/* short for want of sndbuf */
	if (n)
		conn_dirty(eng, c);
	return n;
}

/* loop.sendfile() is over (done, failed or cancelled): the engine stops
 * holding its file between calls; segments still queued keep it.  0, or
 * -ENOTCONN when the connection is gone (its file went with it). */
int sl_conn_sendfile_end(struct sl_engine *eng, uint32_t id)
{
	struct sl_conn *c = api_conn(eng, id);

	if (!c)
		return -ENOTCONN;
	tcp_sendfile_end(eng, c);
	return 0;
}

/* loop.sendfile(): reads the file straight into segments.  Returns bytes
 * queued, 0 at end of file, -EAGAIN when there is no room now (a WRITABLE
 * event follows). */
int sl_conn_sendfile(struct sl_engine *eng, uint32_t id, int fd, uint64_t offset,
		     uint32_t count)
{
	struct sl_conn *c;
	uint32_t want;
	int n = writable_conn(eng, id, &c);

	if (n)
		return n;
	if (fd < 0)
		return -EBADF;
	if (!count)
		return 0;
	if (app_pending(c) || app_holds(c)) {
		c->want_writable = true;
		return -EAGAIN;
	}
	want = send_space(eng, c);
	if (!want) {
		c->want_writable = true;
		return -EAGAIN;
	}
	if (want > count)
		want = count;
	/* whole segments while more follows: a short one would end a run
	 * of full ones (a super-frame) in the middle of the file */
	if (want < count && want > c->mss)
		want -= want % c->mss;
	n = tcp_queue_file(eng, c, fd, offset, want);
	if (n == -ENOBUFS) {
		conn_starved(eng, c);
		return -EAGAIN;
	}
	if (n > 0) {
		if (c->app && c->app->output)
			c->app->output(eng, c, NULL, (uint32_t)n);
		conn_dirty(eng, c);
	}
	return n;
}

int sl_conn_shutdown_write(struct sl_engine *eng, uint32_t id)
{
	struct sl_conn *c = api_conn(eng, id);

	if (!c)
		return -ENOTCONN;
	if (app_holds(c)) {
		python_lets_go(c);	/* the app answers it; no FIN of Python's */
		return 0;
	}
	if (c->fin_queued)
		return 0;
	return shutdown_write(eng, c);
}

int sl_conn_close(struct sl_engine *eng, uint32_t id)
{
	struct sl_conn *c = api_conn(eng, id);
	int rc;

	if (!c)
		return -ENOTCONN;
	if (app_holds(c)) {
		/* Python is done with a connection the app answers now (an
		 * idle keep-alive timer): only Python's side ends */
		python_lets_go(c);
		return 0;
	}
	/* RFC 2525 §2.17 (and Linux): closing with unread data resets */
	if (c->rxq.len) {
		tcp_send_rst(eng, c);
		c->detached = true;
		conn_free(eng, c);
		return 0;
	}
	if (!c->fin_queued) {
		rc = sl_conn_shutdown_write(eng, id);
		if (rc)
			return rc;
	}
	c->detached = true;
	c->rx_paused = false;
	if (c->state == TCP_FIN_WAIT_2)
		timer_set(eng, c, T_STATE, eng->now_us +
			  (uint64_t)eng->cfg.fin_timeout_ms * 1000);
	return 0;
}

int sl_conn_abort(struct sl_engine *eng, uint32_t id)
{
	struct sl_conn *c = conn_by_id(eng, id);

	if (!c || c->detached)
		return -ENOTCONN;
	if (c->accepted && app_holds(c)) {
		python_lets_go(c);	/* as close: the app answers it */
		return 0;
	}
	/* RFC 9293 §3.10.5 ABORT: send a reset, delete the TCB */
	if (c->state != TCP_TIME_WAIT && c->state != TCP_CLOSED)
		tcp_send_rst(eng, c);
	c->detached = true;
	conn_free(eng, c);
	return 0;
}

int sl_conn_pause_reading(struct sl_engine *eng, uint32_t id)
{
	struct sl_conn *c = api_conn(eng, id);

	if (!c)
		return -ENOTCONN;
	c->rx_paused = true;
	return 0;
}

int sl_conn_resume_reading(struct sl_engine *eng, uint32_t id)
{
	struct sl_conn *c = api_conn(eng, id);

	if (!c)
		return -ENOTCONN;
	c->rx_paused = false;
	if (c->rxq.len || c->eof_pending)
		deliver_later(eng, c);
	return 0;
}

int sl_conn_setopt(struct sl_engine *eng, uint32_t id, int opt, int value)
{
	struct sl_conn *c = api_conn(eng, id);

	if (!c)
		return -ENOTCONN;
	switch (opt) {
	case SL_OPT_NODELAY:
		c->nodelay = value != 0;
		if (c->nodelay)
			conn_dirty(eng, c);
		return 0;
	case SL_OPT_KEEPALIVE:
		c->keepalive = value != 0;
		c->probes = 0;
		timer_set(eng, c, T_KEEPALIVE, c->keepalive ?
			  eng->now_us + (uint64_t)c->ka_idle_s * 1000000u : 0);
		return 0;
	case SL_OPT_KEEPIDLE:
		if (value < 1 || value > 32767)
			return -EINVAL;
		c->ka_idle_s = (uint32_t)value;
		if (c->keepalive)
			timer_set(eng, c, T_KEEPALIVE,
				  eng->now_us + (uint64_t)c->ka_idle_s * 1000000u);
		return 0;
	case SL_OPT_KEEPINTVL:
		if (value < 1 || value > 32767)
			return -EINVAL;
		c->ka_intvl_s = (uint32_t)value;
		return 0;
	case SL_OPT_KEEPCNT:
		if (value < 1 || value > 127)
			return -EINVAL;
		c->ka_probes = (uint32_t)value;
		return 0;
	case SL_OPT_USER_TIMEOUT:
		if (value < 0)
			return -EINVAL;
		c->user_timeout_ms = (uint32_t)value;
		return 0;
	case SL_OPT_RCVBUF:
		if (value < 4096)
			return -EINVAL;
		/* the window may grow, never shrink below what was offered */
		c->rcvbuf = (uint32_t)value > c->rcvbuf ? (uint32_t)value : c->rcvbuf;
		return 0;
	default:
		return -ENOPROTOOPT;
	}
}

int sl_conn_getopt(struct sl_engine *eng, uint32_t id, int opt)
{
	struct sl_conn *c = api_conn(eng, id);

	if (!c)
		return -ENOTCONN;
	switch (opt) {
	case SL_OPT_NODELAY:
		return c->nodelay;
	case SL_OPT_KEEPALIVE:
		return c->keepalive;
	case SL_OPT_KEEPIDLE:
		return (int)c->ka_idle_s;
	case SL_OPT_KEEPINTVL:
		return (int)c->ka_intvl_s;
	case SL_OPT_KEEPCNT:
		return (int)c->ka_probes;
	case SL_OPT_RCVBUF:
		return (int)c->rcvbuf;
	case SL_OPT_SNDBUF:
		return (int)conn_sndbuf(eng, c);
	case SL_OPT_USER_TIMEOUT:
		return (int)c->user_timeout_ms;
	default:
		return -ENOPROTOOPT;
	}
}

uint32_t sl_conn_list(struct sl_engine *eng, uint32_t *ids, uint32_t max)
{
	uint32_t i, n = 0;

	if (!eng || !eng->tcp)
		return 0;
	for (i = 0; i < eng->tcp->max_conns; i++) {
		const struct sl_conn *c = &eng->tcp->conns[i];

		if (!c->id)
			continue;
		if (ids && n < max)
			ids[n] = c->id;
		n++;
	}
	return n;
}

int sl_conn_info(struct sl_engine *eng, uint32_t id, struct sl_conn_info *out)
{
	struct sl_conn *c = conn_by_id(eng, id);

	if (!c || !out)
		return -ENOTCONN;
	memset(out, 0, sizeof(*out));
	out->state = c->state;
	out->peer_ip = c->peer_ip;
	out->peer_port = c->peer_port;
	out->local_port = c->local_port;
	out->mss = c->mss;
	out->snd_wnd = c->snd_wnd;
	out->cwnd = c->cwnd;
	out->ssthresh = c->ssthresh;
	out->srtt_us = c->srtt_us;
	out->rto_us = c->rto_us;
	out->send_queued = c->sq_bytes;
	out->send_space = send_space(eng, c);
	out->rcv_wnd = conn_rcv_window(eng, c);
	out->rxq_bytes = c->rxq.len;
	out->ooo_bytes = c->ooo_bytes;
	out->flags = (c->ts_on ? 1u : 0) | (c->sack_on ? 2u : 0) | (c->ws_on ? 4u : 0) |
		     (c->app ? 8u : 0) | (c->detached ? 16u : 0) | (c->accepted ? 32u : 0);
	out->snd_una = c->snd_una;
	out->snd_nxt = c->snd_nxt;
	out->rcv_nxt = c->rcv_nxt;
	out->rcv_adv = c->rcv_adv;
	out->packets_out = c->packets_out;
	out->sacked_out = c->sacked_out;
	out->lost_out = c->lost_out;
	out->retrans_out = c->retrans_out;
	out->ooo_count = c->ooo_count;
	out->ts_recent = c->ts_recent;
	out->last_ack_sent = c->last_ack_sent;
	out->backoff = c->backoff;
	out->reo_wnd_mult = c->reo_mult;
	out->reord_seen = c->reord_seen;
	out->idle_ms = eng->now_us > c->last_rx_us ?
		(uint32_t)((eng->now_us - c->last_rx_us) / 1000) : 0;
	if (!c->deadline)
		out->timer_ms = UINT32_MAX;
	else if (c->deadline <= eng->now_us)
		out->timer_ms = 0;
	else
		out->timer_ms = (uint32_t)((c->deadline - eng->now_us) / 1000);
	return 0;
}
