/* SPDX-License-Identifier: MIT */
/*
 * tcp_timer.c - every TCP timer of every connection in one structure.
 *
 * A connection has five timers (enum tcp_timer: retransmission/persist/
 * tail loss probe, delayed ACK, keep-alive, TIME-WAIT/FIN-WAIT-2, RACK
 * reordering); its earliest one is its key in a
 * binary min-heap of connections.  The loop asks sl_engine_next_timer()
 * for the heap's top (tcp_next_timer) and polls the engine then;
 * tcp_timers_run() fires what is due.
 *
 * The heap is lazy, as Linux's sk_reset_timer on a timer wheel is cheap:
 * every request re-arms the retransmission timer a little later and every
 * ACK of all data stops it, so a connection's key (heap_key) only moves
 * earlier at once.  A later deadline or none leaves the key where it was;
 * when that key comes due, tcp_timers_run() re-keys the connection to its
 * real deadline or takes it out.  A key is never later than its deadline,
 * so nothing fires late; the loop may wake once early instead.
 */
#include "tcp.h"

static bool heap_less(const struct tcp_state_all *t, uint32_t a, uint32_t b)
{
	return t->conns[t->heap[a]].heap_key < t->conns[t->heap[b]].heap_key;
}

static void heap_swap(struct tcp_state_all *t, uint32_t a, uint32_t b)
{
	uint32_t ca = t->heap[a], cb = t->heap[b];

	t->heap[a] = cb;
	t->heap[b] = ca;
	t->conns[cb].heap_idx = a;
	t->conns[ca].heap_idx = b;
}

static void sift_up(struct tcp_state_all *t, uint32_t i)
{
	while (i > 0) {
		uint32_t parent = (i - 1) / 2;

		if (!heap_less(t, i, parent))
			break;
		heap_swap(t, i, parent);
		i = parent;
	}
}

static void sift_down(struct tcp_state_all *t, uint32_t i)
{
	for (;;) {
		uint32_t l = 2 * i + 1, r = l + 1, m = i;

		if (l < t->heap_len && heap_less(t, l, m))
			m = l;
		if (r < t->heap_len && heap_less(t, r, m))
			m = r;
		if (m == i)
			break;
		heap_swap(t, i, m);
		i = m;
	}
}

static void heap_remove(struct tcp_state_all *t, struct sl_conn *c)
{
	uint32_t i = c->heap_idx, last;

	if (i == SL_NONE)
		return;
	last = --t->heap_len;
	c->heap_idx = SL_NONE;
	if (i == last)
		return;
	t->heap[i] = t->heap[last];
	t->conns[t->heap[i]].heap_idx = i;
	sift_down(t, i);
	sift_up(t, i);
}

/* Sets (at_us > 0) or clears (0) one timer; the heap key moves only
 * earlier (see the top of this file). */
void timer_set(struct sl_engine *eng, struct sl_conn *c, int which, uint64_t at_us)
{
	struct tcp_state_all *t = eng->tcp;
	uint64_t old = c->timer[which], d = c->deadline;
	int k;

	c->timer[which] = at_us;
	/* the earliest of the connection's timers: the new one if it comes
	 * first, the old earliest if this timer was not it; a scan only when
	 * the earliest moved later or stopped (several per request) */
	if (at_us && (!d || at_us <= d)) {
		d = at_us;
	} else if (old && old == d) {
		d = 0;
		for (k = 0; k < T_COUNT; k++)
			if (c->timer[k] && (!d || c->timer[k] < d))
				d = c->timer[k];
	}
	c->deadline = d;
	if (!d)
		return;		/* the key comes due and finds nothing */
	if (c->heap_idx == SL_NONE) {
		c->heap_key = d;
		c->heap_idx = t->heap_len;
		t->heap[t->heap_len++] = conn_index(eng, c);
		sift_up(t, c->heap_idx);
	} else if (d < c->heap_key) {
		c->heap_key = d;
		sift_up(t, c->heap_idx);
	}
}

/* A connection whose key came due: keyed to its real deadline, or out. */
static void rekey(struct tcp_state_all *t, struct sl_conn *c)
{
	if (c->heap_idx == SL_NONE)
		return;
	if (!c->deadline) {
		heap_remove(t, c);
		return;
	}
	if (c->heap_key == c->deadline)
		return;
	c->heap_key = c->deadline;
	sift_down(t, c->heap_idx);
	sift_up(t, c->heap_idx);
}

void timer_clear_all(struct sl_engine *eng, struct sl_conn *c)
{
	memset(c->timer, 0, sizeof(c->timer));
	c->deadline = 0;
	heap_remove(eng->tcp, c);
}

/* RFC 6298 §2: SRTT/RTTVAR from one sample, RTO from them. */
void tcp_rtt_sample(struct sl_conn *c, uint32_t rtt_us, const struct sl_config *cfg)
{
	uint64_t rto, var4;

	if (!rtt_us)
		rtt_us = 1;
	if (!c->min_rtt_us || rtt_us < c->min_rtt_us)
		c->min_rtt_us = rtt_us;
	if (!c->srtt_us) {
		/* §2.2: first measurement */
		c->srtt_us = rtt_us;
		c->rttvar_us = rtt_us / 2;
	} else {
		/* §2.3: beta = 1/4, alpha = 1/8 */
		uint32_t delta = c->srtt_us > rtt_us ? c->srtt_us - rtt_us : rtt_us - c->srtt_us;

		c->rttvar_us = (3 * c->rttvar_us + delta) / 4;
		c->srtt_us = (7 * c->srtt_us + rtt_us) / 8;
	}
	/* RTO = SRTT + max(G, 4*RTTVAR), G = 1 ms; clamped as Linux does to
	 * [rto_min, rto_max] (RFC 6298 §2.4 allows a smaller minimum) */
	var4 = 4ull * c->rttvar_us;
	rto = c->srtt_us + (var4 > 1000 ? var4 : 1000);
	if (rto < (uint64_t)cfg->rto_min_ms * 1000)
		rto = (uint64_t)cfg->rto_min_ms * 1000;
	if (rto > (uint64_t)cfg->rto_max_ms * 1000)
		rto = (uint64_t)cfg->rto_max_ms * 1000;
	c->rto_us = (uint32_t)rto;
}

static uint64_t backed_off_rto(const struct sl_engine *eng, const struct sl_conn *c)
{
	uint64_t rto = c->rto_us, max = (uint64_t)eng->cfg.rto_max_ms * 1000;
	uint32_t i;

	for (i = 0; i < c->backoff && rto < max; i++)
		rto *= 2;	/* RFC 6298 §5.5 */
	return rto < max ? rto : max;
}

/* (Re)starts the retransmission timer, RFC 6298 §5.1/§5.3. */
void tcp_rearm_rexmit(struct sl_engine *eng, struct sl_conn *c)
{
	c->tlp_armed = false;
	timer_set(eng, c, T_REXMIT, eng->now_us + backed_off_rto(eng, c));
}

/* The retransmission timer after new data: the tail loss probe's timeout
 * when one is due before the RTO (RFC 8985 §7.2, tcp_tlp_timeout), else
 * the RTO. */
void tcp_arm_rexmit_or_tlp(struct sl_engine *eng, struct sl_conn *c)
{
	uint64_t pto = tcp_tlp_timeout(eng, c);

	if (pto && pto < backed_off_rto(eng, c)) {
		c->tlp_armed = true;
		timer_set(eng, c, T_REXMIT, eng->now_us + pto);
		return;
	}
	tcp_rearm_rexmit(eng, c);
}

static void synack_timeout(struct sl_engine *eng, struct sl_conn *c)
{
	if (c->backoff >= eng->cfg.syn_retries) {
		conn_free(eng, c);
		return;
	}
	c->backoff++;
	eng->ctr.synack_retransmits++;
	tcp_send_synack(eng, c);
	tcp_rearm_rexmit(eng, c);
}

/* RFC 6298 §5.4-5.7 and RFC 5681 §3.1 (loss window), or a persist probe. */
static void rexmit_timeout(struct sl_engine *eng, struct sl_conn *c)
{
	if (c->state == TCP_SYN_RECEIVED) {
		synack_timeout(eng, c);
		return;
	}
	if (!c->packets_out) {
		if (c->sq_send == SL_NONE)
			return;
		/* RFC 9293 §3.8.6.1: zero-window probe, backing off; a peer
		 * that answers keeps the connection, one that never does not */
		if (c->probes >= eng->cfg.retries) {
			eng->ctr.conns_timed_out++;
			conn_reset_close(eng, c, -ETIMEDOUT);
			return;
		}
		c->probes++;
		eng->ctr.zero_window_probes++;
		tcp_send_probe(eng, c);
		if (c->backoff < 30)
			c->backoff++;
		tcp_rearm_rexmit(eng, c);
		conn_dirty(eng, c);
		return;
	}
	if (c->tlp_armed) {
		/* RFC 8985 §7.3: the probe, then the RTO proper */
		tcp_send_tlp(eng, c);
		tcp_rearm_rexmit(eng, c);
		conn_dirty(eng, c);
		return;
	}
	if (!c->backoff)
		c->retrans_stamp_us = eng->now_us;
	/* the retry limit, or TCP_USER_TIMEOUT (RFC 5482): give up */
	if (c->backoff >= eng->cfg.retries ||
	    (c->user_timeout_ms &&
	     eng->now_us - c->retrans_stamp_us >= (uint64_t)c->user_timeout_ms * 1000)) {
		eng->ctr.conns_timed_out++;
		conn_reset_close(eng, c, -ETIMEDOUT);
		return;
	}
	eng->ctr.rto_expired++;
	tcp_enter_loss(eng, c);
	c->backoff++;
	tcp_rearm_rexmit(eng, c);
	conn_dirty(eng, c);
}

static void keepalive_timeout(struct sl_engine *eng, struct sl_conn *c)
{
	uint64_t idle_us = (uint64_t)c->ka_idle_s * 1000000u;

	if (c->app && c->app->idle(eng, c))
		return;		/* the app's own keep-alive (HTTP's) */
	if (!c->keepalive || c->state != TCP_ESTABLISHED)
		return;
	if (c->packets_out || c->sq_send != SL_NONE) {
		/* data in flight: the retransmission timer watches the peer */
		timer_set(eng, c, T_KEEPALIVE, eng->now_us + idle_us);
		return;
	}
	if (eng->now_us - c->last_rx_us < idle_us && !c->probes) {
		timer_set(eng, c, T_KEEPALIVE, c->last_rx_us + idle_us);
		return;
	}
	/* RFC 9293 §3.8.4 / RFC 1122 §4.2.3.6 */
	if (c->probes >= c->ka_probes) {
		eng->ctr.conns_timed_out++;
		conn_reset_close(eng, c, -ETIMEDOUT);
		return;
	}
	c->probes++;
	eng->ctr.keepalive_probes++;
	tcp_send_probe(eng, c);
	timer_set(eng, c, T_KEEPALIVE, eng->now_us + (uint64_t)c->ka_intvl_s * 1000000u);
}

static void fire(struct sl_engine *eng, struct sl_conn *c, int which)
{
	switch (which) {
	case T_REXMIT:
		rexmit_timeout(eng, c);
		break;
	case T_DELACK:
		if (c->acks_pending || c->ack_now) {
			c->ack_now = true;
			eng->ctr.delayed_acks++;
			conn_dirty(eng, c);
		}
		break;
	case T_KEEPALIVE:
		keepalive_timeout(eng, c);
		break;
	case T_STATE:
		/* TIME-WAIT over (2*MSL), or FIN-WAIT-2 of a closed socket */
		conn_free(eng, c);
		break;
	case T_RACK:
		tcp_rack_timeout(eng, c);
		break;
	}
}

/* The earliest deadline of any connection (absolute µs), 0 if none. */
uint64_t tcp_next_timer(const struct sl_engine *eng)
{
	const struct tcp_state_all *t = eng->tcp;

	return t && t->heap_len ? t->conns[t->heap[0]].heap_key : 0;
}

void tcp_timers_run(struct sl_engine *eng)
{
	struct tcp_state_all *t = eng->tcp;
	uint32_t budget = t->heap_len;

	while (t->heap_len && budget--) {
		struct sl_conn *c = &t->conns[t->heap[0]];
		uint32_t id = c->id;
		int k;

		if (c->heap_key > eng->now_us)
			break;
		if (!c->deadline || c->deadline > eng->now_us) {
			rekey(t, c);	/* stopped or moved later since keyed */
			continue;
		}
		/* keep room for the CLOSED events a timeout may queue */
		if (eng->nevents + 4 > SL_MAX_EVENTS)
			break;
		for (k = 0; k < T_COUNT && c->id == id; k++) {
			if (!c->timer[k] || c->timer[k] > eng->now_us)
				continue;
			timer_set(eng, c, k, 0);
			fire(eng, c, k);
		}
		if (c->id == id)
			rekey(t, c);
	}
}
