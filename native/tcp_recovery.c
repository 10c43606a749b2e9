/* SPDX-License-Identifier: MIT */
/*
 * tcp_recovery.c - loss detection and recovery: the SACK scoreboard (a
 * segment's SEG_SACKED, SEG_LOST and SEG_RETRANS flags, counted in
 * sacked_out, lost_out and retrans_out), RACK's list of the segments in
 * flight by send time, which segments are lost, and the pace of a
 * recovery (PRR).  tcp_output (tcp_out.c) retransmits what is marked lost;
 * tcp_cc.c sets ssthresh.
 *
 * Called from tcp_ack (tcp_in.c): tcp_sack_mark for each SACK block,
 * tcp_rack_delivered (also from tcp_ack_segs), tcp_rack_detect_loss, then
 * tcp_enter_recovery, or in recovery tcp_mark_lost_sack (and, without
 * SACK, tcp_mark_head_lost), then tcp_prr_ack; from tcp_out.c:
 * tcp_rack_sent at each transmission, tcp_rack_forget when a segment is
 * freed; from the timers (tcp_timer.c): tcp_enter_loss when the RTO
 * expires, tcp_rack_timeout when the RACK reordering timer fires,
 * tcp_tlp_timeout when the retransmission timer is armed after new data.
 */
#include "tcp.h"

/* ---- RACK's send-time order (RFC 8985 §6.2) ------------------------------ */

/* RACK_sent_after: sent at t1 (ending at end1) after t2 (end2)?  One flush
 * sends in sequence order at one clock reading, so ties go by sequence. */
static bool sent_after(uint64_t t1, uint32_t end1, uint64_t t2, uint32_t end2)
{
	return t1 > t2 || (t1 == t2 && seq_gt(end1, end2));
}

/* Takes segment i off the send-time list (if it is on it). */
void tcp_rack_forget(struct sl_engine *eng, struct sl_conn *c, uint32_t i)
{
	struct tcp_seg *segs = eng->tcp->segs, *s = &segs[i];

	if (s->ts_prev == SL_NONE && c->ts_head != i)
		return;
	if (s->ts_prev != SL_NONE)
		segs[s->ts_prev].ts_next = s->ts_next;
	else
		c->ts_head = s->ts_next;
	if (s->ts_next != SL_NONE)
		segs[s->ts_next].ts_prev = s->ts_prev;
	else
		c->ts_tail = s->ts_prev;
	s->ts_prev = s->ts_next = SL_NONE;
}

/* Segment i was just (re)transmitted: it is now the newest in flight, so
 * a retransmission is judged by its new send time (§6.2). */
void tcp_rack_sent(struct sl_engine *eng, struct sl_conn *c, uint32_t i)
{
	struct tcp_seg *segs = eng->tcp->segs;

	tcp_rack_forget(eng, c, i);
	segs[i].ts_prev = c->ts_tail;
	if (c->ts_tail != SL_NONE)
		segs[c->ts_tail].ts_next = i;
	else
		c->ts_head = i;
	c->ts_tail = i;
}

/*
 * RFC 8985 §6.2 steps 2-3: segment s is newly delivered (cumulatively ACKed
 * or SACKed) by the ACK in hand.  A retransmitted segment counts only when
 * the ACK is surely for the retransmission: its echoed timestamp is not
 * older than the retransmission (RFC 7323 §4) and the RTT not below the
 * minimum.
 */
void tcp_rack_delivered(struct sl_engine *eng, struct sl_conn *c, const struct tcp_seg *s)
{
	uint64_t rtt = eng->now_us > s->xmit_us ? eng->now_us - s->xmit_us : 0;
	uint32_t end = seg_end(s);

	if (s->xmits > 1) {
		if (c->ts_on && c->ack_tsecr &&
		    seq_lt(c->ack_tsecr, (uint32_t)(s->xmit_us / 1000) + c->ts_offset))
			return;
		if (rtt < c->min_rtt_us)
			return;
	} else if (seq_lt(end, c->rack_prior_fack)) {
		/* step 3: sent once, delivered below what was delivered before */
		c->reord_seen = true;
	}
	if (seq_gt(end, c->rack_fack))
		c->rack_fack = end;
	if (!c->rack_xmit_us || sent_after(s->xmit_us, end, c->rack_xmit_us, c->rack_end_seq)) {
		c->rack_xmit_us = s->xmit_us;
		c->rack_end_seq = end;
		c->rack_rtt_us = (uint32_t)(rtt < UINT32_MAX ? rtt : UINT32_MAX);
	}
}

/* RFC 2018 §3: a SACK block [start, end) received.  Returns the latest
 * send time of the segments it newly SACKed that were sent once (a valid
 * RTT sample in Karn's sense, which ends the RTO backoff), or 0. */
uint64_t tcp_sack_mark(struct sl_engine *eng, struct sl_conn *c, uint32_t start, uint32_t end)
{
	struct tcp_seg *segs = eng->tcp->segs;
	uint64_t sent_once = 0;
	uint32_t i;

	for (i = c->sq_head; i != SL_NONE && i != c->sq_send; i = segs[i].next) {
		struct tcp_seg *s = &segs[i];

		if (seq_ge(s->seq, end))
			break;
		if ((s->flags & SEG_SACKED) || seq_lt(s->seq, start) ||
		    seq_gt(seg_end(s), end))
			continue;
		tcp_rack_delivered(eng, c, s);
		tcp_rack_forget(eng, c, i);
		if (s->xmits == 1 && s->xmit_us > sent_once)
			sent_once = s->xmit_us;
		if (s->flags & SEG_LOST)
			c->lost_out--;
		if (s->flags & SEG_RETRANS)
			c->retrans_out--;
		s->flags = (uint8_t)((s->flags & ~(SEG_LOST | SEG_RETRANS)) | SEG_SACKED);
		c->sacked_out++;
	}
	if (seq_gt(end, c->highest_sack) || !c->sacked_out)
		c->highest_sack = end;
	return sent_once;
}

/* Segment i is lost: to be retransmitted; a retransmission of it that was
 * in flight is lost too.  It leaves the in-flight list until resent. */
void tcp_mark_lost(struct sl_engine *eng, struct sl_conn *c, uint32_t i)
{
	struct tcp_seg *s = &eng->tcp->segs[i];

	if (s->flags & SEG_SACKED)
		return;
	if (s->flags & SEG_RETRANS) {
		s->flags &= (uint8_t)~SEG_RETRANS;
		c->retrans_out--;
		eng->ctr.retransmits_lost++;
	}
	if (!(s->flags & SEG_LOST)) {
		s->flags |= SEG_LOST;
		c->lost_out++;
	}
	c->lost_marks++;
	tcp_rack_forget(eng, c, i);
}

/* RFC 6675 §4 IsLost: DupThresh segments SACKed above it.  A segment
 * already resent is left to RACK (its new send time decides). */
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
		if (!(s->flags & SEG_LOST))
			tcp_mark_lost(eng, c, i);
	}
}

/* The first unacknowledged, un-SACKed segment is lost (fast retransmit,
 * RFC 5681 §3.2 step 4; NewReno partial ACK, RFC 6582 §3.2 step 5). */
void tcp_mark_head_lost(struct sl_engine *eng, struct sl_conn *c)
{
	struct tcp_seg *segs = eng->tcp->segs;
	uint32_t i;

	for (i = c->sq_head; i != SL_NONE && i != c->sq_send; i = segs[i].next) {
		if (segs[i].flags & SEG_SACKED)
			continue;
		if (!(segs[i].flags & SEG_LOST))	/* not again if resent */
			tcp_mark_lost(eng, c, i);
		return;
	}
}

/*
 * RFC 8985 §6.2 step 4 (RACK_update_reo_wnd), after the ACK in hand moved
 * SND.UNA: D-SACKs widen the reordering window by one step per round trip
 * in which they come (RACK.dsack_round), and 16 recoveries without one
 * narrow it back (tcp_rack_recovery_done).  As Linux's tcp_dsack_seen,
 * only once reordering was seen: on a path that never reorders, a
 * duplicate says that an ACK was lost or a timer fired early, not that the
 * window was too narrow; and the caller leaves out the D-SACK of a tail
 * loss probe (a timer sent it, not RACK).
 */
void tcp_rack_dsack(struct sl_conn *c, bool dsack)
{
	if (c->reo_round_on && seq_ge(c->snd_una, c->reo_round))
		c->reo_round_on = false;
	if (!dsack || !c->reord_seen || c->reo_round_on)
		return;
	c->reo_round_on = true;
	c->reo_round = c->snd_max;
	if (c->reo_mult < 16)
		c->reo_mult++;
	c->reo_persist = 16;
}

/* §6.2 step 4: a fast recovery or an RTO recovery is over */
void tcp_rack_recovery_done(struct sl_conn *c)
{
	if (c->reo_persist && --c->reo_persist)
		return;
	c->reo_mult = 1;
}

/* RFC 8985 §6.2 step 4: the reordering window. */
static uint64_t reo_wnd(const struct sl_conn *c)
{
	uint64_t reo;

	/* no reordering seen: none in recovery, nor once DupThresh segments
	 * are SACKed (the DupThresh rule would call the loss anyway) */
	if (!c->reord_seen && (c->in_recovery || c->after_rto ||
			       c->sacked_out >= TCP_DUPTHRESH))
		return 0;
	/* min_RTT/4 per step, at most SRTT; no floor (a floor of a
	 * millisecond held every loss on a sub-millisecond path for a timer,
	 * where Linux's tcp_rack_reo_wnd marks it on the ACK itself) */
	reo = (uint64_t)c->min_rtt_us / 4 * c->reo_mult;
	if (c->srtt_us && reo > c->srtt_us)
		reo = c->srtt_us;
	return reo;
}

/*
 * RFC 8985 §6.2 step 5: a segment sent before the one RACK last saw
 * delivered is lost once RACK.rtt + the reordering window has passed since
 * it was sent, a retransmission included: it carries its new send time, so
 * a lost retransmission is found within a round trip, not by the RTO.
 * Walks the in-flight list oldest first; arms the reordering timer for
 * the rest.  Returns true if it marked anything.
 */
bool tcp_rack_detect_loss(struct sl_engine *eng, struct sl_conn *c)
{
	struct tcp_seg *segs = eng->tcp->segs;
	uint64_t due = c->rack_rtt_us + reo_wnd(c), wait = 0;
	bool marked = false;
	uint32_t i = c->ts_head;

	if (!c->rack_xmit_us)
		return false;
	while (i != SL_NONE) {
		struct tcp_seg *s = &segs[i];
		uint32_t next = s->ts_next;
		uint64_t age = eng->now_us > s->xmit_us ? eng->now_us - s->xmit_us : 0;

		if (!sent_after(c->rack_xmit_us, c->rack_end_seq, s->xmit_us, seg_end(s)))
			break;
		if (age >= due) {
			tcp_mark_lost(eng, c, i);
			marked = true;
		} else if (due - age > wait) {
			wait = due - age;
		}
		i = next;
	}
	if (wait)
		timer_set(eng, c, T_RACK, eng->now_us + wait);
	return marked;
}

/* RFC 8985 §6.2 step 5: the reordering timer fired: the same test, now. */
void tcp_rack_timeout(struct sl_engine *eng, struct sl_conn *c)
{
	if (c->packets_out && tcp_rack_detect_loss(eng, c)) {
		if (!c->in_recovery && !c->after_rto) {
			tcp_enter_recovery(eng, c);
			/* no ACK clocks it: PRR as for one packet delivered */
			tcp_prr_ack(c, 1, true, false);
		}
		conn_dirty(eng, c);
	}
}

/*
 * RFC 8985 §7.2: with SACK and an RTT estimate, the first timer after new
 * data is a probe timeout, not the RTO: PTO = 2*SRTT, plus WCDelAckT when
 * FlightSize is one segment (its ACK may be a delayed one: the peer's
 * delayed-ACK time is taken as ours, cfg.delack_ms), and the RTO if that
 * comes first (the caller arms whichever does).  A flight of more than
 * one segment gets a timer's slack instead, as
 * Linux's tcp_schedule_loss_probe (2*SRTT + 2 jiffies): no 10 ms floor,
 * which on a sub-millisecond path left every tail, and every flight whose
 * last ACK was lost, idle for ten round trips and more.  Returns the PTO
 * in µs, or 0 when no probe is due (no SACK or RTT yet, in recovery,
 * after an RTO, a probe already sent for this flight, or the last probe's
 * episode not over: §7.4, one at a time).
 */
uint64_t tcp_tlp_timeout(const struct sl_engine *eng, const struct sl_conn *c)
{
	uint64_t pto;

	if (!c->sack_on || !c->srtt_us || c->in_recovery || c->after_rto ||
	    c->tlp_sent || c->tlp_episode || c->backoff)
		return 0;
	pto = 2ull * c->srtt_us;
	pto += c->packets_out == 1 ? (uint64_t)eng->cfg.delack_ms * 1000 : TCP_TIMER_SLACK_US;
	return pto;
}

/*
 * RFC 8985 §7.4.2, as Linux's tcp_process_tlp_ack: the ACKs of a probe's
 * episode.  Below TLP.end_seq they say nothing yet.  A probe of new data
 * repaired nothing; a D-SACK of the probe (ending at TLP.end_seq), or a
 * pure duplicate ACK at it, says that the original arrived too.  An ACK beyond
 * TLP.end_seq with neither says that the resent probe filled a hole: a
 * loss that no other signal showed.  Returns true then (the caller
 * reduces the window, tcp_tlp_reduce, unless the same ACK started a
 * recovery, which reduces it anyway).
 */
bool tcp_tlp_ack(struct sl_conn *c, uint32_t ack, bool dsack, bool pure_dupack)
{
	if (!c->tlp_episode || seq_lt(ack, c->tlp_end_seq))
		return false;
	if (!c->tlp_retrans || dsack) {
		c->tlp_episode = false;
		return false;
	}
	if (seq_gt(ack, c->tlp_end_seq)) {
		c->tlp_episode = false;
		return true;
	}
	if (pure_dupack)
		c->tlp_episode = false;
	return false;
}

/* §7.4.2: "a congestion control response equivalent to fast recovery";
 * Linux's is a CWR episode ended at once: ssthresh as for a loss and the
 * window down to it. */
void tcp_tlp_reduce(struct sl_engine *eng, struct sl_conn *c)
{
	tcp_cc_loss(eng, c);
	if (c->cwnd > c->ssthresh)
		c->cwnd = c->ssthresh;
	c->cwnd_cnt = 0;
	eng->ctr.tlp_recoveries++;
}

/*
 * RFC 9937 §6.2: the congestion window for what a fast recovery sends
 * next, from what this ACK delivered (packets newly ACKed or SACKed).
 * While more than ssthresh is in flight, sending follows deliveries in
 * the proportion ssthresh/RecoverFS; below it, it makes up what was
 * delivered (PRR-CRB), one more on a safe ACK (SND.UNA advanced, no new
 * loss: PRR-SSRB), up to ssthresh.  Counted in packets, as Linux does.
 */
void tcp_prr_ack(struct sl_conn *c, uint32_t delivered, bool newly_lost, bool una_advanced)
{
	uint32_t pipe = tcp_in_flight(c), sndcnt;

	if (!delivered)
		return;
	c->prr_delivered += delivered;
	if (pipe > c->ssthresh) {
		uint64_t fs = c->recover_fs ? c->recover_fs : 1;
		uint64_t due = ((uint64_t)c->prr_delivered * c->ssthresh + fs - 1) / fs;

		sndcnt = due > c->prr_out ? (uint32_t)(due - c->prr_out) : 0;
	} else {
		sndcnt = c->prr_delivered > c->prr_out ? c->prr_delivered - c->prr_out : 0;
		if (sndcnt < delivered)
			sndcnt = delivered;
		if (una_advanced && !newly_lost)
			sndcnt++;
		if (sndcnt > c->ssthresh - pipe)
			sndcnt = c->ssthresh - pipe;
	}
	/* the recovery's first retransmission goes whatever this says */
	if (!c->prr_out && !sndcnt)
		sndcnt = 1;
	c->cwnd = pipe + sndcnt;
}

/* RFC 5681 §3.2 steps 2-4, RFC 6675 §5: enter fast recovery; RFC 9937
 * §6.1: PRR starts (each ACK's tcp_prr_ack sets the window from then). */
void tcp_enter_recovery(struct sl_engine *eng, struct sl_conn *c)
{
	c->tlp_episode = false;	/* this reduction covers the probe's loss too */
	c->recover = c->snd_max;
	tcp_cc_loss(eng, c);	/* ssthresh */
	c->cwnd = c->ssthresh;	/* until an ACK's deliveries set it */
	c->cwnd_cnt = 0;
	c->in_recovery = true;
	c->prr_delivered = 0;
	c->prr_out = 0;
	c->recover_fs = c->packets_out;	/* SND.NXT - SND.UNA, in packets */
	/* RFC 5681 §3.2 step 4, RFC 6675 §5 (4.2): the first lost segment is
	 * retransmitted whatever the congestion window says */
	c->force_rexmit = true;
	eng->ctr.fast_retransmits++;
	/* with SACK, IsLost and RACK say what is lost; without, the head */
	if (c->sack_on)
		tcp_mark_lost_sack(eng, c);
	else
		tcp_mark_head_lost(eng, c);
}

/*
 * RFC 8985 §6.3 (RACK_mark_losses_on_RTO): the RTO expired.  The first
 * unacknowledged segment is lost; another only if it was sent at least
 * RACK.rtt ago (a retransmission sent since is still on its way).  The
 * SACK scoreboard stays (RFC 6675 §5.1 allows it), unless the first
 * segment is SACKed: the peer reneged (RFC 2018 §8), and then nothing
 * SACKed is trusted and everything is lost.
 */
static void mark_lost_on_rto(struct sl_engine *eng, struct sl_conn *c)
{
	struct tcp_seg *segs = eng->tcp->segs;
	uint32_t i = c->sq_head;
	bool reneged = i != SL_NONE && i != c->sq_send && (segs[i].flags & SEG_SACKED);

	for (; i != SL_NONE && i != c->sq_send; i = segs[i].next) {
		struct tcp_seg *s = &segs[i];

		if (reneged && (s->flags & SEG_SACKED)) {
			s->flags &= (uint8_t)~SEG_SACKED;
			c->sacked_out--;
		} else if (s->flags & SEG_SACKED) {
			continue;
		} else if (!reneged && i != c->sq_head && c->rack_rtt_us &&
			   eng->now_us - s->xmit_us < c->rack_rtt_us) {
			continue;
		}
		if (s->flags & SEG_RETRANS) {
			s->flags &= (uint8_t)~SEG_RETRANS;
			c->retrans_out--;
		}
		if (!(s->flags & SEG_LOST)) {
			s->flags |= SEG_LOST;
			c->lost_out++;
		}
		tcp_rack_forget(eng, c, i);
	}
	c->reno_sacked = 0;
}

/* RFC 5681 §3.1: the RTO expired.  Slow start runs up to the halved
 * ssthresh, a fast recovery in progress ends and none starts until what
 * was sent before is acknowledged (recover, after_rto).  The congestion
 * window is what is still in flight plus one segment (Linux's; RFC 5681's
 * loss window of one when everything is marked lost). */
void tcp_enter_loss(struct sl_engine *eng, struct sl_conn *c)
{
	/* once per episode, as Linux: not again for a recovery's data, nor on
	 * a repeated RTO with no RTT sample in between */
	if (!((c->in_recovery || (c->after_rto && c->backoff)) &&
	      seq_gt(c->recover, c->snd_una)))
		tcp_cc_loss(eng, c);
	c->in_recovery = false;
	c->after_rto = true;
	c->tlp_episode = false;
	c->recover = c->snd_max;
	c->dupacks = 0;
	mark_lost_on_rto(eng, c);
	c->cwnd = tcp_in_flight(c) + 1;
	c->cwnd_cnt = 0;
}
