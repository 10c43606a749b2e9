/* SPDX-License-Identifier: MIT */
/*
 * xsk.c - the AF_XDP socket: UMEM, its four rings and the frame allocator.
 *
 * Reserving, submitting, peeking and releasing go through libxdp's
 * xsk_ring_* inlines, which do the acquire/release ordering against the
 * kernel (net/xdp/xsk_queue.h).  Three places read a ring's shared index
 * directly, each with its acquire load commented: how full the fill ring
 * is (fill_outstanding), whether the kernel has taken every TX descriptor
 * (tx_ring_empty) and whether RX has frames (sl_engine_rx_ready, engine.c);
 * libxdp has no inline for those questions.  We use libxdp only for the
 * socket and its rings; the XDP program is our own (steer.c), hence
 * XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD.
 *
 * Every UMEM frame has one owner at a time (enum frame_owner); the counters
 * report frames by owner and they always add up to frame_count.
 */
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#ifndef SOL_XDP
#define SOL_XDP 283
#endif

static int frame_shift_of(uint32_t frame_size)
{
	switch (frame_size) {
	case 2048:
		return 11;
	case 4096:
		return 12;
	default:
		return -1;
	}
}

static int open_area(struct sl_xsk *x, const struct sl_config *cfg, char *err,
		     size_t errlen)
{
	int shift = frame_shift_of(cfg->frame_size);
	uint32_t i;
	int rc;

	memset(x, 0, sizeof(*x));
	x->fd = -1;
	if (shift < 0) {
		sl_errf(err, errlen, "frame_size %u: must be 2048 or 4096",
			cfg->frame_size);
		return -EINVAL;
	}
	if (cfg->ring_size < 64 || (cfg->ring_size & (cfg->ring_size - 1))) {
		sl_errf(err, errlen, "ring_size %u: must be a power of two >= 64",
			cfg->ring_size);
		return -EINVAL;
	}
	if (cfg->frame_count < 2 * cfg->ring_size + SL_FRAME_RESERVE) {
		sl_errf(err, errlen,
			"frame_count %u: must be at least 2*ring_size+%d",
			cfg->frame_count, SL_FRAME_RESERVE);
		return -EINVAL;
	}
	x->frame_size = cfg->frame_size;
	x->frame_shift = (uint32_t)shift;
	x->frame_count = cfg->frame_count;
	x->ring_size = cfg->ring_size;
	x->fill_target = cfg->ring_size;
	x->tx_gen = 1;		/* batch 0 "left" before anything was queued */
	x->area_len = (size_t)cfg->frame_count * cfg->frame_size;

	x->area = mmap(NULL, x->area_len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (x->area == MAP_FAILED) {
		rc = -errno;
		x->area = NULL;
		sl_errf(err, errlen, "mmap of %zu bytes of UMEM failed", x->area_len);
		return rc;
	}
	x->meta = calloc(cfg->frame_count, sizeof(*x->meta));
	x->free_stack = calloc(cfg->frame_count, sizeof(*x->free_stack));
	x->held = calloc(cfg->frame_count, sizeof(*x->held));
	if (!x->meta || !x->free_stack || !x->held) {
		rc = -ENOMEM;
		sl_errf(err, errlen, "out of memory for frame tables");
		goto out_tables;
	}
	/* frame 0 on top of the stack: lowest addresses are used first */
	for (i = 0; i < cfg->frame_count; i++)
		x->free_stack[i] = cfg->frame_count - 1 - i;
	x->free_top = cfg->frame_count;
	return 0;

out_tables:
	free(x->meta);
	free(x->free_stack);
	free(x->held);
	x->meta = NULL;
	x->free_stack = NULL;
	x->held = NULL;
	munmap(x->area, x->area_len);
	x->area = NULL;
	return rc;
}

int xsk_open_test(struct sl_xsk *x, const struct sl_config *cfg, char *err, size_t errlen)
{
	int rc = open_area(x, cfg, err, errlen);

	if (rc)
		return rc;
	x->test = true;
	x->cap = calloc(SL_TEST_CAPTURE, sizeof(*x->cap));
	x->cap_len = calloc(SL_TEST_CAPTURE, sizeof(*x->cap_len));
	x->cap_flags = calloc(SL_TEST_CAPTURE, sizeof(*x->cap_flags));
	if (!x->cap || !x->cap_len || !x->cap_flags) {
		xsk_close(x);
		sl_errf(err, errlen, "out of memory for the TX capture");
		return -ENOMEM;
	}
	return 0;
}

/* Test engines: the oldest captured TX frame into buf, what it is into
 * *flags (enum sl_tx_flags); its length, or 0. */
int xsk_tx_take(struct sl_xsk *x, uint8_t *buf, size_t cap, uint32_t *flags)
{
	uint32_t len;

	if (!x->test || !x->cap_count)
		return 0;
	len = x->cap_len[x->cap_head];
	if (flags)
		*flags = x->cap_flags[x->cap_head];
	memcpy(buf, x->cap[x->cap_head], len < cap ? len : cap);
	free(x->cap[x->cap_head]);
	x->cap[x->cap_head] = NULL;
	x->cap_head = (x->cap_head + 1) % SL_TEST_CAPTURE;
	x->cap_count--;
	return (int)len;
}

int xsk_open(struct sl_xsk *x, const struct sl_config *cfg, int bind_flags,
	     char *err, size_t errlen)
{
	struct xsk_umem_config ucfg;
	struct xsk_socket_config scfg;
	uint32_t i, q;
	int rc = open_area(x, cfg, err, errlen);

	if (rc)
		return rc;
	if (cfg->nqueues < 1 || cfg->nqueues > SL_MAX_QUEUES) {
		sl_errf(err, errlen, "%u queues: must be 1 to %d", cfg->nqueues, SL_MAX_QUEUES);
		xsk_close(x);
		return -EINVAL;
	}
	/* each queue's fill ring gets a share; half the frames stay for TX.
	 * The fill ring is twice the RX ring: on veth the peer's ACKs to a TX
	 * burst arrive inside our own sendto(), before we read RX again */
	x->fill_target = cfg->frame_count / 2 / cfg->nqueues;
	if (x->fill_target > 2 * cfg->ring_size)
		x->fill_target = 2 * cfg->ring_size;
	memset(&ucfg, 0, sizeof(ucfg));
	ucfg.fill_size = 2 * cfg->ring_size;
	ucfg.comp_size = cfg->ring_size;
	ucfg.frame_size = cfg->frame_size;
	ucfg.frame_headroom = 0;
	rc = xsk_umem__create(&x->umem, x->area, x->area_len, &x->q[0].fill,
			      &x->q[0].comp, &ucfg);
	if (rc) {
		x->umem = NULL;
		sl_errf(err, errlen, "registering UMEM (xsk_umem__create)");
		xsk_close(x);
		return rc < 0 ? rc : -rc;
	}

	memset(&scfg, 0, sizeof(scfg));
	scfg.rx_size = 2 * cfg->ring_size;	/* room for the ACKs of a TX burst */
	scfg.tx_size = cfg->ring_size;
	scfg.libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD;
	scfg.bind_flags = (uint16_t)bind_flags;
	for (q = 0; q < cfg->nqueues; q++) {
		struct sl_xq *xq = &x->q[q];

		xq->queue_id = cfg->queues[q];
		/*
		 * The kernel frees a closed socket's claim on its queue from a
		 * workqueue, so a queue closed a moment ago can still say
		 * EBUSY: give it half a second before calling the queue taken.
		 */
		for (i = 0; i < 50; i++) {
			struct timespec pause = { 0, 10 * 1000 * 1000 };

			if (q == 0)
				rc = xsk_socket__create(&xq->socket, cfg->ifname, xq->queue_id,
							x->umem, &xq->rx, &xq->tx, &scfg);
			else	/* the same UMEM, a fill/completion pair of its own */
				rc = xsk_socket__create_shared(&xq->socket, cfg->ifname,
							       xq->queue_id, x->umem, &xq->rx,
							       &xq->tx, &xq->fill, &xq->comp,
							       &scfg);
			if (rc != -EBUSY)
				break;
			nanosleep(&pause, NULL);
		}
		if (rc) {
			xq->socket = NULL;
			sl_errf(err, errlen, "creating the XDP socket on %s queue %u",
				cfg->ifname, xq->queue_id);
			goto out_umem;
		}
		xq->fd = xsk_socket__fd(xq->socket);
		x->nq = q + 1;
	}
	x->tx = &x->q[0].tx;
	x->fd = x->q[0].fd;
	x->sg = (bind_flags & XDP_USE_SG) != 0;
	return 0;

out_umem:
	xsk_close(x);
	return rc < 0 ? rc : -rc;
}

void xsk_close(struct sl_xsk *x)
{
	uint32_t i;

	if (x->cap) {
		for (i = 0; i < SL_TEST_CAPTURE; i++)
			free(x->cap[i]);
	}
	free(x->cap);
	free(x->cap_len);
	free(x->cap_flags);
	for (i = x->nq; i-- > 0;)
		if (x->q[i].socket)
			xsk_socket__delete(x->q[i].socket);
	if (x->umem)
		xsk_umem__delete(x->umem);
	free(x->meta);
	free(x->free_stack);
	free(x->held);
	if (x->area)
		munmap(x->area, x->area_len);
	memset(x, 0, sizeof(*x));
	x->fd = -1;
}

/*
 * Takes a free frame.  Ordinary users leave SL_FRAME_RESERVE frames so that
 * ACKs and RSTs can still be built when data has taken everything else.
 */
uint32_t xsk_frame_alloc(struct sl_xsk *x, bool may_use_reserve)
{
	uint32_t idx;

	if (x->free_top == 0)
		return SL_NO_FRAME;
	if (!may_use_reserve && x->free_top <= SL_FRAME_RESERVE)
		return SL_NO_FRAME;
	idx = x->free_stack[--x->free_top];
	x->meta[idx].owner = FRAME_SNDQ;
	x->meta[idx].tx_pending = 0;
	x->meta[idx].keep = 0;
	return idx;
}

void xsk_frame_free(struct sl_xsk *x, uint32_t idx)
{
	x->meta[idx].owner = FRAME_FREE;
	x->meta[idx].keep = 0;
	x->meta[idx].dead = 0;
	x->free_stack[x->free_top++] = idx;
}

/* Frames handed to a queue's fill ring that the kernel has not returned. */
static uint32_t fill_outstanding(const struct sl_xq *xq)
{
	/* acquire: the kernel's consumer/producer moves, fill ring entries +
	 * RX ring entries we have not peeked */
	uint32_t in_fill = xq->fill.cached_prod -
			   __atomic_load_n(xq->fill.consumer, __ATOMIC_ACQUIRE);
	uint32_t in_rx = __atomic_load_n(xq->rx.producer, __ATOMIC_ACQUIRE) -
			 xq->rx.cached_cons;

	return in_fill + in_rx;
}

/* Tops every queue's fill ring up to fill_target frames, never touching
 * the reserve. */
void xsk_refill(struct sl_engine *eng)
{
	struct sl_xsk *x = &eng->xsk;
	uint32_t have, want, avail, idx, i, q;

	if (x->test)
		return;
	for (q = 0; q < x->nq; q++) {
		struct sl_xq *xq = &x->q[q];

		have = fill_outstanding(xq);
		if (have >= x->fill_target)
			continue;
		want = x->fill_target - have;
		avail = x->free_top > SL_FRAME_RESERVE ? x->free_top - SL_FRAME_RESERVE : 0;
		if (avail < want) {
			eng->ctr.fill_ring_empty++;
			want = avail;
		}
		/* no more than the fill ring has room for now */
		if (want > xsk_prod_nb_free(&xq->fill, want))
			want = xsk_prod_nb_free(&xq->fill, want);
		if (!want || xsk_ring_prod__reserve(&xq->fill, want, &idx) != want)
			continue;
		for (i = 0; i < want; i++) {
			uint32_t f = x->free_stack[--x->free_top];

			x->meta[f].owner = FRAME_FILL;
			*xsk_ring_prod__fill_addr(&xq->fill, idx + i) =
				(uint64_t)f << x->frame_shift;
		}
		/* release: the addresses are written before the kernel sees them */
		xsk_ring_prod__submit(&xq->fill, want);
	}
}

/* Frames of the last poll's events are no longer referenced: free them. */
void xsk_release_held(struct sl_xsk *x)
{
	uint32_t i;

	for (i = 0; i < x->held_count; i++) {
		uint32_t f = x->held[i];

		if (x->meta[f].owner == FRAME_RX_HELD)
			xsk_frame_free(x, f);
	}
	x->held_count = 0;
}

/*
 * Test engines: keeps a copy of what iov gathers, with its flags, as the
 * newest captured frame (the oldest goes when the capture is full).
 */
int xsk_capture(struct sl_engine *eng, const struct iovec *iov, uint32_t niov,
		uint32_t flags)
{
	struct sl_xsk *x = &eng->xsk;
	uint32_t slot, len = 0, off = 0, i;
	uint8_t *copy;

	for (i = 0; i < niov; i++)
		len += (uint32_t)iov[i].iov_len;
	copy = malloc(len ? len : 1);
	if (!copy)
		return -ENOMEM;
	for (i = 0; i < niov; i++) {
		memcpy(copy + off, iov[i].iov_base, iov[i].iov_len);
		off += (uint32_t)iov[i].iov_len;
	}
	if (x->cap_count == SL_TEST_CAPTURE) {
		free(x->cap[x->cap_head]);	/* the oldest goes */
		x->cap[x->cap_head] = NULL;
		x->cap_head = (x->cap_head + 1) % SL_TEST_CAPTURE;
		x->cap_count--;
	}
	slot = (x->cap_head + x->cap_count) % SL_TEST_CAPTURE;
	x->cap[slot] = copy;
	x->cap_len[slot] = len;
	x->cap_flags[slot] = (uint8_t)flags;
	x->cap_count++;
	return 0;
}

/* Test engines: keep a copy, and complete the frame at once. */
static int test_submit(struct sl_engine *eng, uint32_t frame, uint32_t off, uint32_t len)
{
	struct sl_xsk *x = &eng->xsk;
	struct iovec iov = { .iov_base = xsk_frame_data(x, frame) + off, .iov_len = len };
	int rc = xsk_capture(eng, &iov, 1, 0);

	if (rc)
		return rc;
	eng->ctr.tx_packets++;
	eng->ctr.tx_bytes += len;
	if (x->meta[frame].tx_pending)
		return 0;
	if (x->meta[frame].keep)
		x->meta[frame].owner = FRAME_SNDQ;
	else
		xsk_frame_free(x, frame);
	return 0;
}

/*
 * Queues frame[off, off+len) for transmission as it is (the engine's
 * fault injection is engine_tx_submit's).  The descriptor becomes visible
 * to the kernel at the next kick.  Returns 0 or -EAGAIN when the TX ring
 * is full even after a kick.
 */
int xsk_tx_submit_raw(struct sl_engine *eng, uint32_t frame, uint32_t off, uint32_t len)
{
	struct sl_xsk *x = &eng->xsk;
	struct xdp_desc *d;
	uint32_t idx;

	if (x->test)
		return test_submit(eng, frame, off, len);

	if (xsk_ring_prod__reserve(x->tx, 1, &idx) != 1) {
		eng->ctr.tx_ring_full++;
		xsk_kick(eng);
		if (xsk_ring_prod__reserve(x->tx, 1, &idx) != 1)
			return -EAGAIN;
	}
	d = xsk_ring_prod__tx_desc(x->tx, idx);
	d->addr = ((uint64_t)frame << x->frame_shift) + off;
	d->len = len;
	d->options = 0;
	x->meta[frame].tx_pending++;
	x->meta[frame].owner = FRAME_TX;
	x->tx_queued++;
	eng->ctr.tx_packets++;
	eng->ctr.tx_bytes += len;
	return 0;
}

#ifndef XDP_PKT_CONTD
#define XDP_PKT_CONTD (1 << 0)	/* this descriptor's packet continues in the next */
#endif

/*
 * Multi-buffer TX (XDP_USE_SG): a header frame, continued by a payload
 * frame that stays where it is (a static file's chunk, shared by every
 * connection).  Both descriptors are reserved together.
 */
int xsk_tx_submit_sg(struct sl_engine *eng, uint32_t hdr_frame, uint32_t hdr_len,
		     uint32_t payload_frame, uint32_t payload_len)
{
	struct sl_xsk *x = &eng->xsk;
	struct xdp_desc *d;
	uint32_t idx;

	if (xsk_ring_prod__reserve(x->tx, 2, &idx) != 2) {
		eng->ctr.tx_ring_full++;
		xsk_kick(eng);
		if (xsk_ring_prod__reserve(x->tx, 2, &idx) != 2)
			return -EAGAIN;
	}
	d = xsk_ring_prod__tx_desc(x->tx, idx);
	d->addr = (uint64_t)hdr_frame << x->frame_shift;
	d->len = hdr_len;
	d->options = XDP_PKT_CONTD;
	d = xsk_ring_prod__tx_desc(x->tx, idx + 1);
	d->addr = (uint64_t)payload_frame << x->frame_shift;
	d->len = payload_len;
	d->options = 0;
	x->meta[hdr_frame].tx_pending++;
	x->meta[hdr_frame].owner = FRAME_TX;
	x->meta[payload_frame].tx_pending++;
	x->tx_queued += 2;
	eng->ctr.tx_packets++;
	eng->ctr.tx_bytes += hdr_len + payload_len;
	eng->ctr.tx_multibuffer_segments++;
	return 0;
}

void xsk_reap_completions(struct sl_xsk *x)
{
	struct xsk_ring_cons *comp = &x->q[0].comp;	/* TX is on queue 0 */
	uint32_t idx, n, i;

	if (x->test)
		return;
	n = xsk_ring_cons__peek(comp, x->ring_size, &idx);
	for (i = 0; i < n; i++) {
		uint64_t addr = *xsk_ring_cons__comp_addr(comp, idx + i);
		uint32_t f = xsk_addr_frame(x, addr);
		struct frame_meta *m;

		if (f >= x->frame_count)
			continue;
		m = &x->meta[f];
		if (m->tx_pending && --m->tx_pending)
			continue;
		if (m->owner == FRAME_STATIC) {
			if (m->dead)	/* its file went while the chunk was out */
				xsk_frame_free(x, f);
			continue;
		}
		if (m->keep)
			m->owner = FRAME_SNDQ;
		else
			xsk_frame_free(x, f);
	}
	/* release: we are done reading the addresses above */
	if (n)
		xsk_ring_cons__release(comp, n);
}

/* acquire: pairs with the kernel's release of the TX consumer */
static bool tx_ring_empty(const struct sl_xsk *x)
{
	return __atomic_load_n(x->tx->consumer, __ATOMIC_ACQUIRE) == *x->tx->producer;
}

/*
 * Makes the queued TX descriptors visible and wakes the kernel.  In copy
 * mode the kernel transmits only inside sendto(), a bounded batch per call
 * (EAGAIN means "more left"), so we call it until the ring is drained.
 * `again`: also when nothing is newly queued but an earlier kick left
 * descriptors behind.
 */
static int kick(struct sl_engine *eng, bool again)
{
	struct sl_xsk *x = &eng->xsk;
	int tries;

	if (x->test)
		return 0;
	if (x->tx_queued) {
		/* release: descriptors are written before the producer moves */
		xsk_ring_prod__submit(x->tx, x->tx_queued);
		x->tx_queued = 0;
		x->tx_gen++;		/* what is queued from now on is the next batch */
		eng->ctr.tx_kicks++;
	} else if (!again || x->tx_out_gen + 1 == x->tx_gen) {
		return 0;
	}
	for (tries = 0; tries < 1024; tries++) {
		if (sendto(x->fd, NULL, 0, MSG_DONTWAIT, NULL, 0) < 0 &&
		    errno != EAGAIN && errno != EBUSY && errno != ENOBUFS)
			return -errno;
		/* a full completion ring also stops the kernel: drain it; and
		 * keep the fill rings full for what this burst brings back */
		xsk_reap_completions(x);
		xsk_refill(eng);
		if (tx_ring_empty(x)) {
			x->tx_out_gen = x->tx_gen - 1;
			break;
		}
	}
	return 0;
}

int xsk_kick(struct sl_engine *eng)
{
	return kick(eng, false);
}

/*
 * True when no frame queued in TX batch `gen` or before is still in the TX
 * ring, kicking them out first if need be; false if some could not leave
 * now.  Another TX path calls it before sending a connection's data, with
 * the batch of that connection's latest frame, so its data never overtakes
 * frames queued before (AF_XDP frames leave only at a kick).
 */
bool xsk_tx_gone(struct sl_engine *eng, uint64_t gen)
{
	struct sl_xsk *x = &eng->xsk;

	if (x->test || gen <= x->tx_out_gen)
		return true;
	kick(eng, true);
	return gen <= x->tx_out_gen;
}

int xsk_read_kernel_stats(struct sl_engine *eng)
{
	struct xdp_statistics st;
	socklen_t len = sizeof(st);

	if (eng->xsk.test)
		return 0;
	memset(&st, 0, sizeof(st));
	if (getsockopt(eng->xsk.fd, SOL_XDP, XDP_STATISTICS, &st, &len) < 0)
		return -errno;
	eng->ctr.kernel_rx_dropped = st.rx_dropped;
	eng->ctr.kernel_rx_invalid_descs = st.rx_invalid_descs;
	eng->ctr.kernel_tx_invalid_descs = st.tx_invalid_descs;
	eng->ctr.kernel_rx_ring_full = st.rx_ring_full;
	eng->ctr.kernel_rx_fill_ring_empty = st.rx_fill_ring_empty_descs;
	eng->ctr.kernel_tx_ring_empty = st.tx_ring_empty_descs;
	return 0;
}
