/* SPDX-License-Identifier: MIT */
/*
 * tcp_cc.c - congestion control: how the congestion window grows with
 * acknowledged data, and what a loss leaves of it.  NewReno (RFC 5681
 * §3.1, RFC 6582) or CUBIC (RFC 9438), as the engine's cfg.cc says.
 * Windows count packets, as the rest of the stack does.
 *
 * Called from tcp_ack (tcp_in.c): tcp_cc_ack for data newly acknowledged
 * outside a recovery; from tcp_recovery.c: tcp_cc_loss when a fast
 * recovery starts or the RTO expires (it sets ssthresh; the window itself
 * then follows PRR or the loss window).
 */
#include "tcp.h"

#define CUBIC_C 0.4		/* RFC 9438 §5: segments per second cubed */
#define CUBIC_BETA 0.7		/* RFC 9438 §4.6: multiplicative decrease */

/* x^(1/3) for x >= 0 by Newton's method (no libm). */
static double cube_root(double x)
{
	double r = x > 1.0 ? x / 3.0 : 1.0;
	int i;

	if (x <= 0.0)
		return 0.0;
	for (i = 0; i < 100; i++) {
		double next = (2.0 * r + x / (r * r)) / 3.0;

		if (next >= r - 1e-9 && next <= r + 1e-9)
			return next;
		r = next;
	}
	return r;
}

/* RFC 5681 §3.1 congestion avoidance: one segment per window of ACKs. */
static void reno_avoid(struct sl_conn *c, uint32_t acked)
{
	c->cwnd_cnt += acked;
	if (c->cwnd_cnt >= c->cwnd) {
		c->cwnd += c->cwnd_cnt / c->cwnd;
		c->cwnd_cnt %= c->cwnd;
	}
}

/*
 * RFC 9438 §4.2-4.5: congestion avoidance along W_cubic(t) = C(t-K)^3 +
 * W_max, t from the start of the stage, with the Reno-friendly estimate
 * W_est as a floor; each ACK moves cwnd (target - cwnd)/cwnd per acked
 * segment towards target = W_cubic(t + RTT), target kept within
 * [cwnd, 1.5 cwnd].
 */
static void cubic_avoid(const struct sl_engine *eng, struct sl_conn *c, uint32_t acked)
{
	double t, rtt = c->srtt_us / 1e6, w, target, alpha;

	if (!c->cubic_epoch_us) {
		/* §4.2: a congestion avoidance stage begins */
		c->cubic_epoch_us = eng->now_us;
		if (c->cubic_wmax > c->cwnd) {
			c->cubic_k = cube_root((c->cubic_wmax - c->cwnd) / CUBIC_C);
		} else {
			c->cubic_k = 0.0;
			c->cubic_wmax = c->cwnd;
		}
		c->cubic_west = c->cwnd;
		c->cubic_frac = 0.0;
	}
	t = (double)(eng->now_us - c->cubic_epoch_us) / 1e6;
	/* §4.3: W_est grows as Reno with alpha_cubic until it passes the
	 * window before the last reduction, then as Reno itself */
	alpha = c->cubic_west >= c->cubic_prior ? 1.0 :
		3.0 * (1.0 - CUBIC_BETA) / (1.0 + CUBIC_BETA);
	c->cubic_west += alpha * acked / c->cwnd;
	w = CUBIC_C * (t - c->cubic_k) * (t - c->cubic_k) * (t - c->cubic_k) + c->cubic_wmax;
	if (w < c->cubic_west) {
		/* §4.3: the Reno-friendly region */
		if (c->cubic_west > c->cwnd)
			c->cwnd = c->cubic_west < 65535.0 ? (uint32_t)c->cubic_west : 65535;
		return;
	}
	/* §4.4, §4.5: concave and convex regions */
	t += rtt;
	target = CUBIC_C * (t - c->cubic_k) * (t - c->cubic_k) * (t - c->cubic_k) +
		 c->cubic_wmax;
	if (target < c->cwnd)
		target = c->cwnd;
	if (target > 1.5 * c->cwnd)
		target = 1.5 * c->cwnd;
	c->cubic_frac += (target - c->cwnd) / c->cwnd * acked;
	if (c->cubic_frac >= 1.0) {
		c->cwnd += (uint32_t)c->cubic_frac;
		c->cubic_frac -= (uint32_t)c->cubic_frac;
	}
}

/* Newly acknowledged packets outside a recovery: slow start below
 * ssthresh (RFC 5681 §3.1, also CUBIC's, RFC 9438 §4.10), then the
 * algorithm's congestion avoidance. */
void tcp_cc_ack(const struct sl_engine *eng, struct sl_conn *c, uint32_t acked)
{
	if (c->cwnd < c->ssthresh) {
		uint32_t room = c->ssthresh - c->cwnd;
		uint32_t inc = acked < room ? acked : room;

		c->cwnd += inc;
		acked -= inc;
	}
	if (acked) {
		if (eng->cfg.cc == SL_CC_RENO)
			reno_avoid(c, acked);
		else
			cubic_avoid(eng, c, acked);
	}
	if (c->cwnd > 65535)
		c->cwnd = 65535;
}

/*
 * A congestion event (fast recovery or RTO): the new ssthresh.  NewReno:
 * half the flight, at least two (RFC 5681 §3.1 equation (4)).  CUBIC:
 * beta_cubic times the window (RFC 9438 §4.6; §4.8 the same after an
 * RTO), W_max remembered for the cubic curve, with fast convergence
 * (§4.7): a window that did not reach the last W_max leaves less.
 */
void tcp_cc_loss(const struct sl_engine *eng, struct sl_conn *c)
{
	uint32_t flight = tcp_in_flight(c);
	double w;

	if (eng->cfg.cc == SL_CC_RENO) {
		c->ssthresh = flight / 2 > 2 ? flight / 2 : 2;
		return;
	}
	w = c->cwnd;
	c->cubic_wmax = w < c->cubic_wmax ? w * (1.0 + CUBIC_BETA) / 2.0 : w;
	c->cubic_prior = w;
	c->cubic_epoch_us = 0;
	w *= CUBIC_BETA;
	c->ssthresh = w > 2.0 ? (uint32_t)w : 2;
}
