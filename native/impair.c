/* SPDX-License-Identifier: MIT */
/*
 * impair.c - fault injection at the engine's RX/TX boundary, for tests.
 *
 * This kernel has no netem, so the tests impair the link here: each
 * received or transmitted frame may be dropped, duplicated, delayed or
 * reordered (delayed a little longer than the rest), with probabilities in
 * parts per million and a seeded PRNG.  Held frames are copies, released
 * when due by sl_engine_poll (RX) and sl_engine_flush (TX).  Off (NULL) it
 * costs one pointer test per frame.
 */
#include <stdlib.h>

#include "tcp.h"

struct held {
	struct held *next;
	uint64_t due_us;
	uint32_t len;
	bool gso;		/* a super-frame, virtio header first (tx_gso.c) */
	uint8_t data[];
};

struct sl_impair_state {
	struct sl_impair cfg;
	uint64_t rng;
	struct held *rx, *tx;	/* sorted by due time */
};

static uint64_t next_rand(struct sl_impair_state *s)
{
	/* xorshift64* */
	uint64_t x = s->rng;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	s->rng = x;
	return x * 0x2545F4914F6CDD1DULL;
}

static bool chance(struct sl_impair_state *s, uint32_t ppm)
{
	return ppm && (next_rand(s) >> 32) % 1000000u < ppm;
}

static void hold(struct held **q, const uint8_t *data, uint32_t len, uint64_t due,
		 bool gso)
{
	struct held *h = malloc(sizeof(*h) + len), **pp = q;

	if (!h)
		return;
	h->due_us = due;
	h->len = len;
	h->gso = gso;
	memcpy(h->data, data, len);
	while (*pp && (*pp)->due_us <= due)
		pp = &(*pp)->next;
	h->next = *pp;
	*pp = h;
}

static uint64_t delay_for(struct sl_impair_state *s, const struct sl_engine *eng,
			  bool reorder)
{
	uint64_t d = s->cfg.delay_us;

	if (reorder)
		d += s->cfg.reorder_delay_us ? s->cfg.reorder_delay_us : 1000;
	return eng->now_us + d;
}

int sl_engine_impair(struct sl_engine *eng, const struct sl_impair *cfg)
{
	struct sl_impair_state *s = eng->impair;

	if (!cfg) {
		impair_free(eng);
		return 0;
	}
	if (cfg->rx_loss > 1000000 || cfg->rx_dup > 1000000 || cfg->rx_reorder > 1000000 ||
	    cfg->tx_loss > 1000000 || cfg->tx_dup > 1000000 || cfg->tx_reorder > 1000000)
		return -EINVAL;
	if (!s) {
		s = calloc(1, sizeof(*s));
		if (!s)
			return -ENOMEM;
		eng->impair = s;
	}
	s->cfg = *cfg;
	s->rng = cfg->seed ? cfg->seed : 0x9e3779b97f4a7c15ULL;
	return 0;
}

void impair_free(struct sl_engine *eng)
{
	struct sl_impair_state *s = eng->impair;
	struct held *h, *n;

	if (!s)
		return;
	for (h = s->rx; h; h = n) {
		n = h->next;
		free(h);
	}
	for (h = s->tx; h; h = n) {
		n = h->next;
		free(h);
	}
	free(s);
	eng->impair = NULL;
}

/* Returns true when the frame was taken (dropped or held for later). */
bool impair_rx(struct sl_engine *eng, const uint8_t *frame, uint32_t len)
{
	struct sl_impair_state *s = eng->impair;
	bool reorder;

	if (chance(s, s->cfg.rx_loss)) {
		eng->ctr.impair_rx_dropped++;
		return true;
	}
	if (chance(s, s->cfg.rx_dup)) {
		eng->ctr.impair_rx_duplicated++;
		hold(&s->rx, frame, len, delay_for(s, eng, false), false);
	}
	reorder = chance(s, s->cfg.rx_reorder);
	if (reorder || s->cfg.delay_us) {
		if (reorder)
			eng->ctr.impair_rx_reordered++;
		hold(&s->rx, frame, len, delay_for(s, eng, reorder), false);
		return true;
	}
	return false;
}

static bool take_tx(struct sl_engine *eng, const uint8_t *frame, uint32_t len, bool gso)
{
	struct sl_impair_state *s = eng->impair;
	bool reorder;

	if (chance(s, s->cfg.tx_loss)) {
		eng->ctr.impair_tx_dropped++;
		return true;
	}
	if (chance(s, s->cfg.tx_dup)) {
		eng->ctr.impair_tx_duplicated++;
		hold(&s->tx, frame, len, delay_for(s, eng, false), gso);
	}
	reorder = chance(s, s->cfg.tx_reorder);
	if (reorder || s->cfg.delay_us) {
		if (reorder)
			eng->ctr.impair_tx_reordered++;
		hold(&s->tx, frame, len, delay_for(s, eng, reorder), gso);
		return true;
	}
	return false;
}

/* Returns true when the frame must not be submitted now. */
bool impair_tx(struct sl_engine *eng, const uint8_t *frame, uint32_t len)
{
	return take_tx(eng, frame, len, false);
}

/* The same for a GSO super-frame (virtio header first): it is one packet
 * to the link, lost, duplicated or delayed whole. */
bool impair_tx_gso(struct sl_engine *eng, const uint8_t *frame, uint32_t len)
{
	return take_tx(eng, frame, len, true);
}

/* Feeds held RX copies that are due into the stack. */
void impair_release_rx(struct sl_engine *eng)
{
	struct sl_impair_state *s = eng->impair;

	while (s && s->rx && s->rx->due_us <= eng->now_us &&
	       eng->nevents + 8 <= SL_MAX_EVENTS) {
		struct held *h = s->rx;
		struct pkt p;

		s->rx = h->next;
		/* events may point into the copy: free it with the events */
		if (tcp_defer_free(eng, h)) {
			free(h);
			continue;
		}
		memset(&p, 0, sizeof(p));
		p.frame = h->data;
		p.len = h->len;
		p.frame_idx = SL_NO_FRAME;
		if (net_parse(eng, &p) == 0)
			tcp_input(eng, &p);
	}
}

/* Sends held TX copies that are due, each in a frame of its own (a
 * super-frame through the packet socket; if that fails now, it is lost). */
void impair_release_tx(struct sl_engine *eng)
{
	struct sl_impair_state *s = eng->impair;

	while (s && s->tx && s->tx->due_us <= eng->now_us) {
		struct held *h = s->tx;
		uint32_t f;

		if (h->gso) {
			s->tx = h->next;
			(void)gso_xmit_copy(eng, h->data, h->len);
			free(h);
			continue;
		}
		f = xsk_frame_alloc(&eng->xsk, true);
		if (f == SL_NO_FRAME)
			break;
		s->tx = h->next;
		memcpy(xsk_frame_data(&eng->xsk, f), h->data, h->len);
		eng->xsk.meta[f].keep = 0;
		if (xsk_tx_submit_raw(eng, f, 0, h->len))
			xsk_frame_free(&eng->xsk, f);
		free(h);
	}
}

uint64_t impair_next_due(const struct sl_engine *eng)
{
	const struct sl_impair_state *s = eng->impair;
	uint64_t d = 0;

	if (!s)
		return 0;
	if (s->rx)
		d = s->rx->due_us;
	if (s->tx && (!d || s->tx->due_us < d))
		d = s->tx->due_us;
	return d;
}
