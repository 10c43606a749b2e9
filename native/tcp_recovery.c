/* SPDX-License-Identifier: MIT */
/*
 * tcp_recovery.c - loss detection and recovery: the SACK scoreboard (a
 * segment's SEG_SACKED, SEG_LOST and SEG_RETRANS flags, counted in
 * sacked_out, lost_out and retrans_out), which segments are lost, and the
 * congestion response to a loss.  tcp_output (tcp_out.c) retransmits what
 * is marked lost.
 *
 * Called from tcp_ack (tcp_in.c): tcp_sack_mark for each SACK block,
 * tcp_rack_detect_loss, then tcp_enter_recovery, or in recovery
 * tcp_mark_lost_sack and tcp_mark_head_lost; from the timers (tcp_timer.c):
 * tcp_enter_loss when the RTO expires, tcp_rack_timeout when the RACK
 * reordering timer fires, tcp_tlp_timeout when the retransmission timer
 * is armed after new data.
 */
#include "tcp.h"

/* RFC 2018 §3: a SACK block [start, end) received */
void tcp_sack_mark(struct sl_engine *eng, struct sl_conn *c, uint32_t start, uint32_t end)
{
	struct tcp_seg *segs = eng->tcp->segs;
	uint32_t i;

	for (i = c->sq_head; i != SL_NONE && i != c->sq_send; i = segs[i].next) {
		struct tcp_seg *s = &segs[i];

		if (seq_ge(s->seq, end))
			break;
		if ((s->flags & SEG_SACKED) || seq_lt(s->seq, start) ||
		    seq_gt(seg_end(s), end))
			continue;
		if (s->flags & SEG_LOST)
			c->lost_out--;
		if (s->flags & SEG_RETRANS)
			c->retrans_out--;
		s->flags = (uint8_t)((s->flags & ~(SEG_LOST | SEG_RETRANS)) | SEG_SACKED);
		c->sacked_out++;
		if (s->xmits == 1 && s->xmit_us > c->rack_xmit_us)
			c->rack_xmit_us = s->xmit_us;
	}
	if (seq_gt(end, c->highest_sack) || !c->sacked_out)
		c->highest_sack = end;
}

static void mark_lost(struct sl_conn *c, struct tcp_seg *s)
{
	if (s->flags & (SEG_LOST | SEG_SACKED))
		return;
	s->flags |= SEG_LOST;
	c->lost_out++;
}

/* RFC 6675 §4 IsLost: DupThresh segments SACKed above it. */
void tcp_mark_lost_sack(struct sl_engine *eng, struct sl_conn *c)
{
	struct tcp_seg *segs = eng->tcp->segs;
	uint32_t above = c->sacked_out, i;

	for (i = c->sq_head; i != SL_NONE && i != c->sq_send; i = segs[i].next) {
		struct tcp_seg *s = &segs[i];

		if (s->flags & SEG_SACKED) {
			above--;
			continue;
		}
		if (above < TCP_DUPTHRESH)
			break;
		mark_lost(c, s);
	}
}

/* The first unacknowledged, un-SACKed segment is lost (fast retransmit,
 * RFC 5681 §3.2 step 4; NewReno partial ACK, RFC 6582 §3.2 step 5). */
void tcp_mark_head_lost(struct sl_engine *eng, struct sl_conn *c)
{
	struct tcp_seg *segs = eng->tcp->segs;
	uint32_t i;

	for (i = c->sq_head; i != SL_NONE && i != c->sq_send; i = segs[i].next) {
		struct tcp_seg *s = &segs[i];

		if (s->flags & SEG_SACKED)
			continue;
		mark_lost(c, s);	/* no-op if already lost (and resent) */
		return;
	}
}

/*
 * RFC 8985 §6.2 step 5 (RACK): a segment sent more than a reordering window
 * before one that was delivered is lost, a retransmission included (that is
 * how a lost retransmission is found without waiting for the RTO).
 * Returns true if it marked anything.
 */
bool tcp_rack_detect_loss(struct sl_engine *eng, struct sl_conn *c)
{
	struct tcp_seg *segs = eng->tcp->segs;
	uint64_t reo = (uint64_t)c->min_rtt_us / 4 * (c->reo_mult ? c->reo_mult : 1), wait = 0;
	bool marked = false;
	uint32_t i;

	if (!c->rack_xmit_us)
		return false;
	/* RFC 8985 §6.2 step 4: min_RTT/4 times the DSACK multiplier, at most
	 * SRTT, and never below the floor */
	if (c->srtt_us && reo > c->srtt_us)
		reo = c->srtt_us;
	if (reo < TCP_REO_WND_MIN_US)
		reo = TCP_REO_WND_MIN_US;
	for (i = c->sq_head; i != SL_NONE && i != c->sq_send; i = segs[i].next) {
		struct tcp_seg *s = &segs[i];

		if (s->flags & SEG_SACKED)
			continue;
		if (s->xmit_us + reo >= c->rack_xmit_us) {
			/* sent too close to the delivered one to tell yet:
			 * §6.3, look again when its reordering window ends */
			if (s->xmit_us < c->rack_xmit_us && !(s->flags & SEG_LOST))
				wait = s->xmit_us + reo + c->srtt_us;
			break;
		}
		if (s->flags & SEG_RETRANS) {
			s->flags &= (uint8_t)~SEG_RETRANS;
			c->retrans_out--;
			marked = true;
		} else if (!(s->flags & SEG_LOST)) {
			s->flags |= SEG_LOST;
			c->lost_out++;
			marked = true;
		}
	}
	if (wait > eng->now_us)
		timer_set(eng, c, T_RACK, wait);
	return marked;
}

/* RFC 8985 §6.3: the reordering timer fired. */
void tcp_rack_timeout(struct sl_engine *eng, struct sl_conn *c)
{
	/* as if an ACK had come now */
	c->rack_xmit_us = eng->now_us - c->srtt_us;
	if (c->packets_out && tcp_rack_detect_loss(eng, c)) {
		if (!c->in_recovery && !c->after_rto)
			tcp_enter_recovery(eng, c);
		conn_dirty(eng, c);
	}
}

/*
 * RFC 8985 §7.2: with SACK and an RTT estimate, the first timer after new
 * data is a probe timeout (2*SRTT, plus the delayed-ACK time if only one
 * segment is out), not the RTO.  Returns the PTO in µs, or 0 when no probe
 * is due (no SACK or RTT yet, in recovery, after an RTO, a probe already
 * sent for this flight).  The caller arms it if it comes before the RTO.
 */
uint64_t tcp_tlp_timeout(const struct sl_engine *eng, const struct sl_conn *c)
{
	uint64_t pto;

	if (!c->sack_on || !c->srtt_us || c->in_recovery || c->after_rto ||
	    c->tlp_sent || c->backoff)
		return 0;
	pto = 2ull * c->srtt_us;
	if (c->packets_out == 1)
		pto += (uint64_t)eng->cfg.delack_ms * 1000;
	if (pto < TCP_PTO_MIN_US)
		pto = TCP_PTO_MIN_US;
	return pto;
}

/* RFC 5681 §3.1 equation (4), §3.2 step 2: ssthresh = max(FlightSize / 2,
 * 2*SMSS), in packets, after a loss (fast retransmit or RTO). */
static void halve_ssthresh(struct sl_conn *c)
{
	uint32_t flight = tcp_in_flight(c);

	c->ssthresh = flight / 2 > 2 ? flight / 2 : 2;
}

/* RFC 5681 §3.2 steps 2-4, RFC 6675 §5: enter fast recovery. */
void tcp_enter_recovery(struct sl_engine *eng, struct sl_conn *c)
{
	c->recover = c->snd_max;
	halve_ssthresh(c);
	c->cwnd = c->ssthresh;
	c->cwnd_cnt = 0;
	c->in_recovery = true;
	/* RFC 5681 §3.2 step 4, RFC 6675 §5 (4.2): the first lost segment is
	 * retransmitted whatever the congestion window says */
	c->force_rexmit = true;
	eng->ctr.fast_retransmits++;
	tcp_mark_head_lost(eng, c);
	if (c->sack_on)
		tcp_mark_lost_sack(eng, c);
}

/* RFC 6298 §5.4-5.6 / RFC 5681 §3.1: after an RTO everything outstanding
 * that was not SACKed is lost and is sent again in slow start. */
static void mark_lost_on_rto(struct sl_engine *eng, struct sl_conn *c)
{
	struct tcp_seg *segs = eng->tcp->segs;
	uint32_t i;

	c->lost_out = 0;
	c->retrans_out = 0;
	for (i = c->sq_head; i != SL_NONE && i != c->sq_send; i = segs[i].next) {
		struct tcp_seg *s = &segs[i];

		s->flags &= (uint8_t)~(SEG_LOST | SEG_RETRANS);
		if (!(s->flags & SEG_SACKED)) {
			s->flags |= SEG_LOST;
			c->lost_out++;
		}
	}
	c->reno_sacked = 0;
}

/* RFC 5681 §3.1: the RTO expired.  The congestion window is the loss
 * window (one segment), slow start runs up to the halved ssthresh, a fast
 * recovery in progress ends and none starts until what was sent before is
 * acknowledged (recover, after_rto); everything not SACKed is lost. */
void tcp_enter_loss(struct sl_engine *eng, struct sl_conn *c)
{
	halve_ssthresh(c);
	c->cwnd = 1;
	c->cwnd_cnt = 0;
	c->in_recovery = false;
	c->after_rto = true;
	c->recover = c->snd_max;
	c->dupacks = 0;
	mark_lost_on_rto(eng, c);
}
