/* SPDX-License-Identifier: MIT */
/*
 * tcp_in.c - TCP input, RFC 9293 §3.10.7 "SEGMENT ARRIVES".
 *
 * tcp_input → (no connection) closed_input / listen_input
 *           → (TIME-WAIT) timewait_input
 *           → tcp_segment_arrives: the RFC's steps in order, each under a
 *               comment naming it: PAWS (paws_rejects, RFC 7323 §5.3), first
 *               the sequence number (seq_acceptable), second the RST bit
 *               (RFC 5961 §3.2), fourth a SYN (RFC 5961 §4.2, challenge_ack),
 *               fifth the ACK (RFC 5961 §5.2, then tcp_ack: RFC 5681, 6582,
 *               2018, 8985), seventh the text (tcp_data), eighth the FIN
 *               (tcp_fin).
 *
 * Every segment that is not taken is counted under its reason.
 */
#include <stdlib.h>

#include "tcp.h"

struct tcp_opts {
	bool has_mss, has_ws, sack_perm, has_ts;
	uint16_t mss;
	uint8_t wscale;
	uint32_t tsval, tsecr;
	uint32_t nsack;
	uint32_t sack[TCP_MAX_SACK][2];
};

/* RFC 9293 §3.2, RFC 7323 §2-3, RFC 2018 §2-3.  A malformed option list
 * (a length running past the header, a known option of the wrong size)
 * makes the whole segment invalid. */
static int parse_options(const uint8_t *o, uint32_t len, bool syn, struct tcp_opts *out)
{
	uint32_t i = 0;

	memset(out, 0, sizeof(*out));
	while (i < len) {
		uint8_t kind = o[i], olen;

		if (kind == 0)		/* end of option list */
			break;
		if (kind == 1) {	/* no-operation */
			i++;
			continue;
		}
		if (i + 1 >= len)
			return -1;
		olen = o[i + 1];
		if (olen < 2 || i + olen > len)
			return -1;
		switch (kind) {
		case 2:
			if (olen != 4)
				return -1;
			if (syn) {
				out->has_mss = true;
				out->mss = get_be16(o + i + 2);
			}
			break;
		case 3:
			if (olen != 3)
				return -1;
			if (syn) {
				out->has_ws = true;
				out->wscale = o[i + 2];
			}
			break;
		case 4:
			if (olen != 2)
				return -1;
			if (syn)
				out->sack_perm = true;
			break;
		case 5:
			if (olen < 10 || (olen - 2) % 8)
				return -1;
			for (uint32_t b = 0; b < (uint32_t)(olen - 2) / 8 && out->nsack < TCP_MAX_SACK; b++) {
				out->sack[out->nsack][0] = get_be32(o + i + 2 + 8 * b);
				out->sack[out->nsack][1] = get_be32(o + i + 6 + 8 * b);
				out->nsack++;
			}
			break;
		case 8:
			if (olen != 10)
				return -1;
			out->has_ts = true;
			out->tsval = get_be32(o + i + 2);
			out->tsecr = get_be32(o + i + 6);
			break;
		default:
			break;	/* RFC 9293 §3.1: ignore what we do not implement */
		}
		i += olen;
	}
	return 0;
}

static uint32_t seg_length(const struct pkt *p)
{
	return p->payload_len + ((p->flags & TH_SYN) ? 1 : 0) +
	       ((p->flags & TH_FIN) ? 1 : 0);
}

static uint8_t wscale_for(uint32_t rcvbuf)
{
	uint8_t s = 0;

	while (s < 14 && (rcvbuf >> s) > 65535)
		s++;
	return s;
}

/* RFC 5961 §7: challenge ACKs are throttled, engine-wide, to
 * TCP_CHALLENGE_ACK_LIMIT per second (Linux's tcp_challenge_ack_limit), so
 * that a blind attacker cannot turn them into a flood or an oracle. */
static void challenge_ack(struct sl_engine *eng, struct sl_conn *c)
{
	struct tcp_state_all *t = eng->tcp;

	if (eng->now_us - t->challenge_window_us >= 1000000) {
		t->challenge_window_us = eng->now_us;
		t->challenge_count = 0;
	}
	if (t->challenge_count >= TCP_CHALLENGE_ACK_LIMIT) {
		eng->ctr.challenge_acks_throttled++;
		return;
	}
	t->challenge_count++;
	eng->ctr.challenge_acks++;
	c->ack_now = true;
	conn_dirty(eng, c);
}

/* ---- SYN cookies, RFC 4987 §3.6 ---------------------------------------- */

/* MSS values a cookie can carry (3 bits), the largest that fits is used */
static const uint16_t cookie_mss[8] = { 536, 1024, 1220, 1360, 1400, 1440, 1452, 1460 };

static uint32_t cookie_hash(struct sl_engine *eng, const struct pkt *p, uint32_t peer_isn,
			    uint32_t count)
{
	uint8_t k[20];

	memcpy(k, &p->saddr, 4);
	memcpy(k + 4, &p->daddr, 4);
	put_be16(k + 8, p->sport);
	put_be16(k + 10, p->dport);
	put_be32(k + 12, peer_isn);
	put_be32(k + 16, count);
	return (uint32_t)siphash24(eng->tcp->key, k, sizeof(k)) & 0xffffff;
}

/* 64-second ticks: a cookie is good for this tick and the one before */
static uint32_t cookie_count(const struct sl_engine *eng)
{
	return (uint32_t)(eng->now_us / 64000000u);
}

/*
 * The SYN queue is full: answer with a SYN-ACK whose ISN is the cookie
 * (5 bits of time, 3 bits of MSS, 24 bits of keyed hash over the 4-tuple,
 * the peer's ISN and the time) and keep no state at all.  Window scaling,
 * SACK and timestamps cannot be carried, as RFC 4987 §3.6 says.
 */
static void send_cookie(struct sl_engine *eng, const struct pkt *p, const struct tcp_opts *o)
{
	uint32_t count = cookie_count(eng), idx = 0, k, isn;
	uint16_t mss = o->has_mss ? o->mss : TCP_DEFAULT_MSS;
	uint8_t opt[4];

	for (k = 0; k < 8; k++)
		if (cookie_mss[k] <= mss && cookie_mss[k] <= eng->cfg.mtu - 40)
			idx = k;
	isn = (count & 31) << 27 | idx << 24 | cookie_hash(eng, p, p->seq, count);
	opt[0] = 2;
	opt[1] = 4;
	put_be16(opt + 2, (uint16_t)(eng->cfg.mtu - 40));
	tcp_send_synack_stateless(eng, p, isn, p->seq + 1, opt, sizeof(opt));
	eng->tcp->cookies_sent_us = eng->now_us;
	eng->ctr.syncookies_sent++;
}

/* An ACK for no connection: is it the answer to one of our cookies?
 * Returns the MSS it carried, or 0. */
static uint16_t check_cookie(struct sl_engine *eng, const struct pkt *p)
{
	uint32_t cookie = p->ack - 1, peer_isn = p->seq - 1;
	uint32_t now = cookie_count(eng), age = (now - (cookie >> 27)) & 31, count;

	if (!eng->tcp->cookies_sent_us ||
	    eng->now_us - eng->tcp->cookies_sent_us > 2 * 64000000ull || age > 1)
		return 0;
	count = now - age;
	if (cookie_hash(eng, p, peer_isn, count) != (cookie & 0xffffff))
		return 0;
	return cookie_mss[(cookie >> 24) & 7];
}

/* ---- no connection ---------------------------------------------------- */

static void tcp_segment_arrives(struct sl_engine *eng, struct sl_conn *c, struct pkt *p,
				const struct tcp_opts *o);

/*
 * The third segment of a handshake we answered with a cookie: a valid
 * cookie creates the connection, established, and the segment (which may
 * carry the first data) is then processed as any.  Returns true if taken.
 */
static bool cookie_input(struct sl_engine *eng, struct tcp_listener *l, const struct pkt *p,
			 const struct tcp_opts *o)
{
	uint16_t mss = check_cookie(eng, p);
	struct sl_conn *c;

	if (!mss)
		return false;
	if (!l->accepting && l->pending >= l->backlog) {
		eng->ctr.drop_listen_overflow++;
		return true;	/* the peer retries its ACK; no RST */
	}
	c = conn_new(eng, p);
	if (!c) {
		eng->ctr.drop_conn_table_full++;
		return true;
	}
	eng->ctr.syncookies_ok++;
	c->listener = l->id;
	l->pending++;
	c->irs = p->seq - 1;
	c->rcv_nxt = p->seq;
	c->iss = p->ack - 1;
	c->snd_una = c->iss;
	c->snd_nxt = c->snd_max = p->ack;
	c->write_seq = p->ack;
	/* no window scaling: the window we offer must fit in 16 bits */
	if (c->rcvbuf > 65535)
		c->rcvbuf = 65535;
	c->rcv_adv = c->rcv_nxt + c->rcvbuf;
	if (mss > eng->cfg.mtu - 40)
		mss = (uint16_t)(eng->cfg.mtu - 40);
	c->rcv_mss = mss;
	c->mss = tcp_pmtu_mss(eng, c->peer_ip, mss, c->ts_on);
	c->snd_wnd = c->max_snd_wnd = p->wnd;
	c->snd_wl1 = p->seq;
	c->snd_wl2 = p->ack;
	c->state = TCP_SYN_RECEIVED;
	c->backoff = 1;		/* no RTT sample from a handshake we did not time */
	tcp_segment_arrives(eng, c, (struct pkt *)p, o);
	return true;
}

/* RFC 9293 §3.10.7.2: LISTEN state. */
static void listen_input(struct sl_engine *eng, struct tcp_listener *l,
			 const struct pkt *p, const struct tcp_opts *o)
{
	struct sl_conn *c;
	uint16_t mss;

	/* first: check for a RST; second: an ACK gets a RST (unless it
	 * answers a SYN cookie); third: check for a SYN */
	if (p->flags & TH_RST)
		return;
	if (p->flags & TH_ACK) {
		if (!(p->flags & TH_SYN) && cookie_input(eng, l, p, o))
			return;
		tcp_reply_rst(eng, p);
		return;
	}
	if (!(p->flags & TH_SYN)) {
		eng->ctr.drop_bad_tcp_flags++;
		return;
	}
	eng->ctr.syn_received++;
	if (l->pending >= l->backlog || eng->tcp->nconns >= eng->tcp->max_conns) {
		/* the SYN queue is full: a SYN flood, or just a busy server */
		send_cookie(eng, p, o);
		return;
	}
	c = conn_new(eng, p);
	if (!c) {
		eng->ctr.drop_conn_table_full++;
		return;
	}
	c->listener = l->id;
	l->pending++;
	c->irs = p->seq;
	c->rcv_nxt = p->seq + 1;
	c->rcv_adv = c->rcv_nxt;
	c->iss = tcp_isn(eng, p->saddr, p->sport, p->dport);
	c->snd_una = c->iss;
	c->snd_nxt = c->snd_max = c->iss + 1;
	c->write_seq = c->iss + 1;
	/* RFC 7323 §2.2: scaling only if both sides offer it */
	if (o->has_ws) {
		c->ws_on = true;
		c->snd_wscale = o->wscale > 14 ? 14 : o->wscale;
		c->rcv_wscale = wscale_for(c->rcvbuf);
	}
	c->sack_on = o->sack_perm;
	if (o->has_ts) {
		c->ts_on = true;
		c->ts_recent = o->tsval;
		c->ts_recent_us = eng->now_us;
		c->ts_offset = (uint32_t)siphash24(eng->tcp->key, &c->iss, sizeof(c->iss));
	}
	/* RFC 9293 §3.7.1, RFC 6691: the MSS counts no options */
	mss = o->has_mss ? o->mss : TCP_DEFAULT_MSS;
	if (mss > eng->cfg.mtu - 40)
		mss = (uint16_t)(eng->cfg.mtu - 40);
	if (mss < 88)
		mss = 88;
	c->rcv_mss = (uint16_t)(mss - (c->ts_on ? 12 : 0));
	/* RFC 1191 §5: a path MTU learnt for this peer holds from the start */
	c->mss = tcp_pmtu_mss(eng, c->peer_ip, c->rcv_mss, c->ts_on);
	/* RFC 7323 §2.2: the window of a SYN is never scaled */
	c->snd_wnd = c->max_snd_wnd = p->wnd;
	c->snd_wl1 = p->seq;
	c->snd_wl2 = c->iss;
	c->state = TCP_SYN_RECEIVED;
	c->synack_us = eng->now_us;
	tcp_send_synack(eng, c);
	tcp_rearm_rexmit(eng, c);
}

/* RFC 9293 §3.10.7.1: CLOSED (no connection, no listener): reset. */
static void closed_input(struct sl_engine *eng, const struct pkt *p)
{
	if (p->flags & TH_RST)
		return;
	eng->ctr.drop_no_listener++;
	tcp_reply_rst(eng, p);
}

/* ---- TIME-WAIT ---------------------------------------------------------- */

static void timewait_input(struct sl_engine *eng, struct sl_conn *c, struct pkt *p,
			   const struct tcp_opts *o)
{
	struct tcp_listener *l;

	if (p->flags & TH_RST) {
		/* Linux's default (tcp_rfc1337 = 0): a RST ends TIME-WAIT */
		if (p->seq == c->rcv_nxt)
			conn_free(eng, c);
		return;
	}
	/* RFC 6191: a new SYN above the old sequence space (or with a newer
	 * timestamp) may reopen the connection */
	if ((p->flags & (TH_SYN | TH_ACK)) == TH_SYN &&
	    (seq_gt(p->seq, c->rcv_nxt) ||
	     (c->ts_on && o->has_ts && seq_gt(o->tsval, c->ts_recent)))) {
		l = listener_for_port(eng, p->dport);
		if (l) {
			conn_free(eng, c);
			listen_input(eng, l, p, o);
			return;
		}
	}
	/* RFC 9293 §3.10.7.4: the only thing that can arrive is a retransmitted
	 * FIN: acknowledge it and restart the 2 MSL timeout */
	if (p->flags & TH_FIN)
		timer_set(eng, c, T_STATE, eng->now_us + (uint64_t)eng->cfg.time_wait_ms * 1000);
	c->ack_now = true;
	conn_dirty(eng, c);
}

/* ---- synchronized states ----------------------------------------------- */

/* RFC 7323 §5.3 R1: a timestamp older than TS.Recent is an old duplicate. */
static bool paws_rejects(const struct sl_engine *eng, const struct sl_conn *c,
			 const struct tcp_opts *o)
{
	/* §5.5: TS.Recent is invalid after 24 days idle */
	if (eng->now_us - c->ts_recent_us > 24ull * 86400 * 1000000)
		return false;
	return seq_lt(o->tsval, c->ts_recent);
}

/* RFC 7323 §4.3 (2): "If SEG.TSval >= TS.Recent and SEG.SEQ <=
 * Last.ACK.sent then SEG.TSval is copied to TS.Recent", which an old
 * duplicate reaching up to Last.ACK.sent satisfies: the usual one, a
 * retransmission after our ACK of its original was lost.  The acceptability
 * test drops its text, not its timestamp: Linux (tcp_sequence's left edge
 * is RCV.WUP, the last ACK sent) and FreeBSD (Last.ACK.sent within the
 * segment) record it, so the ACK echoes the retransmission's TSval and the
 * sender, which may only sample it by timestamp (Karn, RFC 6298 §3),
 * samples one round trip instead of its whole RTO wait.  An older
 * duplicate leaves TS.Recent alone.  PAWS (R1) was checked before. */
static void ts_recent_dup(struct sl_engine *eng, struct sl_conn *c, const struct pkt *p,
			  const struct tcp_opts *o)
{
	if (c->ts_on && o->has_ts && seq_le(p->seq, c->last_ack_sent) &&
	    seq_le(c->last_ack_sent, p->seq + p->payload_len) &&
	    seq_ge(o->tsval, c->ts_recent)) {
		c->ts_recent = o->tsval;
		c->ts_recent_us = eng->now_us;
	}
}

/* RFC 9293 §3.10.7.4 first: the segment acceptability test. */
static bool seq_acceptable(const struct sl_conn *c, uint32_t seq, uint32_t len)
{
	uint32_t wnd = seq_gt(c->rcv_adv, c->rcv_nxt) ? c->rcv_adv - c->rcv_nxt : 0;

	if (wnd == 0)
		/* len > 0 with a zero window: only its ACK/RST is processed,
		 * the data is trimmed away by tcp_data */
		return seq == c->rcv_nxt;
	if (len == 0)
		return seq_in(seq, c->rcv_nxt, c->rcv_nxt + wnd);
	return seq_in(seq, c->rcv_nxt, c->rcv_nxt + wnd) ||
	       seq_in(seq + len - 1, c->rcv_nxt, c->rcv_nxt + wnd);
}

/* The newest fully acknowledged, never retransmitted segment gives an RTT
 * sample (Karn: none if any acknowledged segment was sent twice). */
static uint32_t rtt_from_acked(struct sl_engine *eng, const struct sl_conn *c, uint32_t ack)
{
	const struct tcp_seg *segs = eng->tcp->segs;
	uint64_t sent = 0;
	uint32_t i;

	for (i = c->sq_head; i != SL_NONE && i != c->sq_send; i = segs[i].next) {
		const struct tcp_seg *s = &segs[i];
		uint32_t end = s->seq + s->len + ((s->flags & SEG_FIN) ? 1 : 0);

		if (seq_gt(end, ack))
			break;
		if (s->xmits != 1)
			return 0;
		sent = s->xmit_us;
	}
	return sent && eng->now_us > sent ? (uint32_t)(eng->now_us - sent) : (sent ? 1 : 0);
}

/* Our FIN is acknowledged: RFC 9293 §3.10.7.4 fifth, per state.  Returns
 * false if the connection was freed. */
static bool fin_acked(struct sl_engine *eng, struct sl_conn *c)
{
	switch (c->state) {
	case TCP_FIN_WAIT_1:
		c->state = TCP_FIN_WAIT_2;
		if (c->detached)
			timer_set(eng, c, T_STATE, eng->now_us +
				  (uint64_t)eng->cfg.fin_timeout_ms * 1000);
		break;
	case TCP_CLOSING:
		c->state = TCP_TIME_WAIT;
		timer_clear_all(eng, c);
		timer_set(eng, c, T_STATE, eng->now_us + (uint64_t)eng->cfg.time_wait_ms * 1000);
		break;
	case TCP_LAST_ACK:
		conn_free(eng, c);
		return false;
	}
	return true;
}

/* RFC 7323 §4: the ACK echoes one of our timestamps, of this side of
 * the longest RTO: a valid RTT sample even for retransmitted data. */
static bool ts_echo_valid(const struct sl_engine *eng, const struct sl_conn *c,
			  const struct tcp_opts *o)
{
	uint32_t ms;

	if (!c->ts_on || !o->has_ts || !o->tsecr)
		return false;
	ms = tcp_ts_now(eng, c) - o->tsecr;
	return (int32_t)ms >= 0 && ms <= eng->cfg.rto_max_ms;
}

/* RFC 9293 §3.10.7.4 fifth: the ACK field.  Returns false if freed. */
static bool tcp_ack(struct sl_engine *eng, struct sl_conn *c, const struct pkt *p,
		    const struct tcp_opts *o)
{
	uint32_t ack = p->ack, wnd = (uint32_t)p->wnd << c->snd_wscale, i;
	bool new_ack = seq_gt(ack, c->snd_una), progress = false;
	uint64_t sacked_sent = 0;	/* latest send time newly SACKed, sent once */
	/* what the ACK delivers, for PRR (RFC 9937 §6.2 DeliveredData) */
	uint32_t pk_before = c->packets_out, marks_before = c->lost_marks;
	uint32_t sk_before = c->sacked_out + c->reno_sacked, sacked_before = c->sacked_out;
	bool dsack_probe = false, dsack_reo = false, tlp_repaired;

	/* an ACK with SACK blocks may start a recovery: what the ACKs before
	 * it in this receive batch let go leaves first, as after each ACK
	 * (tcp_output_before_recovery) */
	if (o->nsack && c->in_dirty && !c->in_recovery && !c->after_rto)
		tcp_output_before_recovery(eng, c);
	c->probes = 0;
	/* RFC 8985 §6.2: what RACK needs of this ACK */
	c->ack_tsecr = o->has_ts ? o->tsecr : 0;
	if (!c->rack_xmit_us || seq_lt(c->rack_fack, c->snd_una))
		c->rack_fack = c->snd_una;
	c->rack_prior_fack = c->rack_fack;
	/* RFC 2018 §3 (blocks below the ACK's cumulative ACK are D-SACKs,
	 * RFC 2883 §4: not acted on) */
	if (c->sack_on) {
		for (i = 0; i < o->nsack; i++) {
			uint32_t s = o->sack[i][0], e = o->sack[i][1];
			uint64_t t;

			if (seq_le(e, new_ack ? ack : c->snd_una) && seq_lt(s, e)) {
				/* RFC 2883: a duplicate: a retransmission was
				 * spurious.  Of the probe (Linux's FLAG_DSACK_TLP:
				 * it ends where the probe's episode does), or
				 * maybe of reordering wider than RACK allowed */
				eng->ctr.dsack_in++;
				if (c->tlp_episode && c->tlp_retrans && e == c->tlp_end_seq)
					dsack_probe = true;
				else
					dsack_reo = true;
				continue;
			}
			if (!seq_lt(s, e) || seq_gt(e, c->snd_max)) {
				eng->ctr.drop_bad_sack++;
				continue;
			}
			eng->ctr.sack_blocks_in++;
			t = tcp_sack_mark(eng, c, s, e);
			if (t > sacked_sent)
				sacked_sent = t;
			progress = true;
		}
	}
	/* RFC 8985 §7.4.2, before the timers below: an episode that ends
	 * here lets the next flight have its probe */
	tlp_repaired = tcp_tlp_ack(c, ack, dsack_probe,
				   !new_ack && !p->payload_len && wnd == c->snd_wnd &&
				   c->sacked_out == sacked_before);
	if (new_ack) {
		uint32_t before = c->packets_out, acked, rtt = rtt_from_acked(eng, c, ack);

		tcp_ack_segs(eng, c, ack);
		acked = before - c->packets_out;
		c->snd_una = ack;
		/* RFC 6298 §5.7 and Karn (§3): the backed-off RTO holds
		 * until a valid RTT sample.  An ACK of new data echoing our
		 * timestamp is one (RFC 7323 §4), retransmitted data or not;
		 * so is a SACK of a segment sent once.  Only the ACK of the
		 * newest segment, sent once, feeds SRTT: the others may time
		 * the ACKs that were lost before them (an RTO of seconds) */
		if (rtt)
			tcp_rtt_sample(c, rtt, &eng->cfg);
		if (rtt || sacked_sent || ts_echo_valid(eng, c, o))
			c->backoff = 0;
		if (!c->sack_on)
			c->reno_sacked = c->reno_sacked > acked ? c->reno_sacked - acked : 0;
		if (c->in_recovery) {
			if (seq_ge(ack, c->recover)) {
				/* RFC 6582 §3.2 step 6: full acknowledgment */
				c->in_recovery = false;
				c->cwnd = c->ssthresh;
				c->reno_sacked = 0;
				tcp_rack_recovery_done(c);
			} else if (!c->sack_on) {
				/* step 5: partial acknowledgment, next hole (with
				 * SACK, the scoreboard and RACK know better) */
				tcp_mark_head_lost(eng, c);
			}
		} else {
			if (c->after_rto && seq_ge(ack, c->recover)) {
				c->after_rto = false;
				tcp_rack_recovery_done(c);
			}
			tcp_cc_ack(eng, c, acked ? acked : 1);
		}
		c->dupacks = 0;
		c->tlp_sent = false;
		/* RFC 6298 §5.2, §5.3 */
		if (c->packets_out)
			tcp_arm_rexmit_or_tlp(eng, c);
		else
			timer_set(eng, c, T_REXMIT, 0);
		conn_writable(eng, c);
		progress = true;
		if (c->fin_in_queue && c->sq_head == SL_NONE && !fin_acked(eng, c))
			return false;
	} else if (ack == c->snd_una && c->packets_out && !p->payload_len &&
		   !(p->flags & (TH_SYN | TH_FIN)) && wnd == c->snd_wnd) {
		/* RFC 5681 §2: a duplicate acknowledgment */
		c->dupacks++;
		eng->ctr.dupacks_in++;
		if (!c->sack_on && c->reno_sacked + 1 < c->packets_out)
			c->reno_sacked++;
		progress = true;
	}
	tcp_rack_dsack(c, dsack_reo);
	if (sacked_sent)
		c->backoff = 0;		/* a valid sample, as above */
	/* window update, RFC 9293 §3.10.7.4 fifth (SND.WL1/SND.WL2 rule) */
	if (seq_lt(c->snd_wl1, p->seq) ||
	    (c->snd_wl1 == p->seq && seq_le(c->snd_wl2, ack))) {
		if (wnd > c->snd_wnd)
			progress = true;
		if (!c->snd_wnd && wnd && !c->packets_out) {
			c->backoff = 0;		/* the window opened: no more probes */
			timer_set(eng, c, T_REXMIT, 0);
		}
		c->snd_wnd = wnd;
		c->snd_wl1 = p->seq;
		c->snd_wl2 = ack;
		if (wnd > c->max_snd_wnd)
			c->max_snd_wnd = wnd;
	}
	/* loss detection: three duplicate ACKs, DupThresh SACKed above a hole
	 * (RFC 5681 §3.2, RFC 6675 §5 (C)), or RACK's time order (RFC 8985) */
	if (c->sack_on && c->packets_out && tcp_rack_detect_loss(eng, c))
		progress = true;
	if (!c->in_recovery && !c->after_rto && c->packets_out) {
		if (c->dupacks >= TCP_DUPTHRESH || c->lost_out ||
		    (c->sack_on && c->sacked_out >= TCP_DUPTHRESH))
			tcp_enter_recovery(eng, c);
	} else if (c->in_recovery && c->sack_on) {
		tcp_mark_lost_sack(eng, c);
	}
	if (tlp_repaired && !c->in_recovery && !c->after_rto)
		tcp_tlp_reduce(eng, c);
	if (c->in_recovery) {
		int64_t delivered = (int64_t)pk_before - c->packets_out +
				    (int64_t)(c->sacked_out + c->reno_sacked) - sk_before;

		if (delivered <= 0 && new_ack)
			delivered = 1;	/* a cumulative ACK delivers something */
		if (delivered > 0)
			tcp_prr_ack(c, (uint32_t)delivered, c->lost_marks != marks_before,
				    new_ack);
	}
	if (progress)
		conn_dirty(eng, c);
	return true;
}

/* RFC 2883 §4: data [start, end) arrived a second time.  "If the data
 * segment is a duplicate, the first SACK block should specify the
 * contiguous sequence space of the duplicate segment" (the next ACK, sent
 * at once: the sender learns that a retransmission was spurious and undoes
 * the reduction it made for it), and "each duplicate contiguous sequence of
 * data received is reported in at most one D-SACK block": tcp_send_ack
 * clears it.  A new duplicate right after a pending one extends it (as
 * Linux's tcp_dsack_extend), another replaces it. */
static void dsack_note(struct sl_conn *c, uint32_t start, uint32_t end)
{
	if (!c->sack_on || !seq_lt(start, end))
		return;
	if (c->dsack && seq_le(c->dsack_start, end) && seq_le(start, c->dsack_end)) {
		if (seq_lt(start, c->dsack_start))
			c->dsack_start = start;
		if (seq_gt(end, c->dsack_end))
			c->dsack_end = end;
	} else {
		c->dsack_start = start;
		c->dsack_end = end;
	}
	c->dsack = true;
	c->sack_pending = true;
	c->ack_now = true;
}

/* Data below RCV.NXT arrived again, [seq, seq + len) at most up to
 * RCV.NXT: reported as a D-SACK (RFC 2883 §4). */
static void dsack_old(struct sl_conn *c, uint32_t seq, uint32_t len)
{
	uint32_t end = seq + len;

	if (len && seq_lt(seq, c->rcv_nxt))
		dsack_note(c, seq, seq_lt(end, c->rcv_nxt) ? end : c->rcv_nxt);
}

/* Unlinks the reassembly-queue entry *pp and frees it. */
static void ooo_drop(struct sl_engine *eng, struct sl_conn *c, struct ooo_seg **pp)
{
	struct ooo_seg *s = *pp;

	*pp = s->next;
	c->ooo_bytes -= s->len;
	eng->tcp->rx_held -= s->len;
	c->ooo_count--;
	free(s);
}

/* Pops reassembly-queue data that is now in order, joined with `data` into
 * one buffer.  Returns the buffer (deferred-freed by the caller's event) or
 * NULL if nothing joined. */
static uint8_t *join_ooo(struct sl_engine *eng, struct sl_conn *c, const uint8_t *data,
			 uint32_t len, uint32_t *total_out)
{
	uint32_t next = c->rcv_nxt + len, total = len;
	struct ooo_seg *s;
	uint8_t *buf;

	for (s = c->ooo; s && seq_le(s->seq, next); s = s->next) {
		uint32_t end = s->seq + s->len;

		if (seq_gt(end, next)) {
			total += end - next;
			next = end;
		}
	}
	if (total == len) {
		/* nothing contiguous: just drop entries the new data covered */
		while (c->ooo && seq_le(c->ooo->seq + c->ooo->len, next))
			ooo_drop(eng, c, &c->ooo);
		*total_out = len;
		return NULL;
	}
	buf = malloc(total);
	if (!buf) {
		*total_out = len;
		return NULL;
	}
	memcpy(buf, data, len);
	next = c->rcv_nxt + len;
	while (c->ooo && seq_le(c->ooo->seq, next)) {
		uint32_t end;

		s = c->ooo;
		end = s->seq + s->len;
		if (seq_gt(end, next)) {
			memcpy(buf + (next - c->rcv_nxt), s->data + (next - s->seq), end - next);
			next = end;
		}
		ooo_drop(eng, c, &c->ooo);
	}
	*total_out = total;
	return buf;
}

/* Keeps a copy of out-of-order data, trimmed against what is held. */
static void ooo_insert(struct sl_engine *eng, struct sl_conn *c, uint32_t seq,
		       const uint8_t *data, uint32_t len)
{
	struct ooo_seg **pp = &c->ooo, *n;
	uint32_t end = seq + len;

	while (*pp && seq_le((*pp)->seq + (*pp)->len, seq))
		pp = &(*pp)->next;
	if (*pp && seq_le((*pp)->seq, seq)) {
		uint32_t cover = (*pp)->seq + (*pp)->len;

		if (seq_ge(cover, end)) {
			dsack_note(c, seq, end);	/* already held */
			return;
		}
		dsack_note(c, seq, cover);
		data += cover - seq;
		len -= cover - seq;
		seq = cover;
		pp = &(*pp)->next;
	}
	while (*pp && seq_ge((*pp)->seq, seq) && seq_le((*pp)->seq + (*pp)->len, end))
		ooo_drop(eng, c, pp);
	if (*pp && seq_lt((*pp)->seq, end))
		len = (*pp)->seq - seq;
	if (!len)
		return;
	if (c->ooo_count >= TCP_MAX_OOO_SEGS) {
		eng->ctr.drop_ooo_full++;
		return;
	}
	n = malloc(sizeof(*n) + len);
	if (!n) {
		eng->ctr.drop_ooo_full++;
		return;
	}
	n->seq = seq;
	n->len = len;
	memcpy(n->data, data, len);
	n->next = *pp;
	*pp = n;
	c->ooo_bytes += len;
	eng->tcp->rx_held += len;
	c->ooo_count++;
}

/* RFC 2018 §4: remembers an out-of-order arrival, newest first, so that
 * the block holding it goes first and the blocks reported before it
 * follow (put_sack).  Equal entries collapse; the oldest falls off. */
static void sack_note(struct sl_conn *c, uint32_t seq)
{
	uint32_t n = c->sack_nrecent, i, j;

	for (i = 0, j = 0; i < n; i++)
		if (c->sack_recent[i] != seq)
			c->sack_recent[j++] = c->sack_recent[i];
	n = j < 7 ? j : 7;
	memmove(c->sack_recent + 1, c->sack_recent, n * sizeof(c->sack_recent[0]));
	c->sack_recent[0] = seq;
	c->sack_nrecent = (uint8_t)(n + 1);
}

static void ack_policy(struct sl_engine *eng, struct sl_conn *c)
{
	/* RFC 5681 §4.2 / RFC 9293 §3.8.6.3: ACK at least every second full
	 * segment (Linux: more than one MSS unacknowledged), at once while in
	 * quick-ack mode or with a reassembly queue, else within delack_ms */
	if (c->ooo || c->quickacks || c->rcv_nxt - c->last_ack_sent > c->rcv_mss) {
		if (c->quickacks)
			c->quickacks--;
		c->ack_now = true;
		/* two full segments unacknowledged: the ACK goes now, not
		 * after the whole receive batch (one ACK for 64 segments
		 * leaves a sender, when it is lost, only its RTO) */
		if (c->rcv_nxt - c->last_ack_sent >= 2u * c->rcv_mss)
			tcp_send_ack(eng, c);
	} else {
		c->acks_pending++;
		if (!c->timer[T_DELACK])
			timer_set(eng, c, T_DELACK, eng->now_us +
				  (uint64_t)eng->cfg.delack_ms * 1000);
	}
	conn_dirty(eng, c);
}

/* RFC 9293 §3.10.7.4 eighth: the FIN bit, once all before it arrived. */
static void tcp_fin(struct sl_engine *eng, struct sl_conn *c)
{
	c->rcv_nxt++;
	c->ooo_fin = false;
	c->ack_now = true;
	conn_dirty(eng, c);
	switch (c->state) {
	case TCP_SYN_RECEIVED:
	case TCP_ESTABLISHED:
		c->state = TCP_CLOSE_WAIT;
		conn_eof(eng, c);
		break;
	case TCP_FIN_WAIT_1:
		/* our FIN not yet acknowledged (else we would be in FIN-WAIT-2) */
		c->state = TCP_CLOSING;
		conn_eof(eng, c);
		break;
	case TCP_FIN_WAIT_2:
		c->state = TCP_TIME_WAIT;
		conn_eof(eng, c);
		timer_clear_all(eng, c);
		timer_set(eng, c, T_STATE, eng->now_us + (uint64_t)eng->cfg.time_wait_ms * 1000);
		break;
	default:
		break;	/* CLOSE-WAIT, CLOSING, LAST-ACK: remain */
	}
}

/* RFC 9293 §3.10.7.4 seventh: segment text.  Returns false if freed. */
static bool tcp_data(struct sl_engine *eng, struct sl_conn *c, const struct pkt *p)
{
	const uint8_t *data = p->payload;
	uint32_t seq = p->seq, len = p->payload_len, right;
	bool fin = (p->flags & TH_FIN) != 0;

	if (c->state != TCP_ESTABLISHED && c->state != TCP_FIN_WAIT_1 &&
	    c->state != TCP_FIN_WAIT_2)
		return true;	/* a FIN was received: ignore the text */
	/* trim what was already received (a D-SACK for it, RFC 2883 §4) */
	if (seq_lt(seq, c->rcv_nxt)) {
		uint32_t dup = c->rcv_nxt - seq;

		dsack_old(c, seq, len);
		if (dup >= len) {
			len = 0;
		} else {
			data += dup;
			len -= dup;
		}
		seq = c->rcv_nxt;
	}
	/* trim to the window we offered */
	right = seq_gt(c->rcv_adv, c->rcv_nxt) ? c->rcv_adv : c->rcv_nxt;
	if (seq_gt(seq + len, right)) {
		len = seq_lt(seq, right) ? right - seq : 0;
		fin = false;
	}
	if (!len && !fin) {
		c->ack_now = true;
		conn_dirty(eng, c);
		return true;
	}
	/* data after close(): Linux resets (tcp_rcv_state_process).  Not the
	 * fast path closing after "Connection: close": RFC 9112 §9.6 wants a
	 * lingering close there, later bytes are read and dropped */
	if (c->detached && len && !app_owns(c)) {
		eng->ctr.drop_data_after_close++;
		tcp_send_rst(eng, c);
		conn_free(eng, c);
		return false;
	}
	if (seq != c->rcv_nxt) {
		/* out of order: keep a copy, ACK at once (RFC 5681 §4.2:
		 * "SHOULD be generated immediately"), each such segment: a
		 * sender in recovery needs every SACK, some ACKs get lost */
		eng->ctr.ooo_segments++;
		if (len) {
			ooo_insert(eng, c, seq, data, len);
			sack_note(c, seq);
		}
		if (fin) {
			c->ooo_fin = true;
			c->ooo_fin_seq = seq + len;
		}
		c->ack_now = true;
		c->sack_pending = true;
		conn_dirty(eng, c);
		tcp_send_ack(eng, c);
		return true;
	}
	if (len) {
		bool had_ooo = c->ooo != NULL;
		uint32_t total;
		uint8_t *joined = had_ooo ? join_ooo(eng, c, data, len, &total) : NULL;

		if (!had_ooo)
			total = len;
		if (joined && tcp_defer_free(eng, joined)) {
			free(joined);
			joined = NULL;
			total = len;
		}
		if (!conn_deliver(eng, c, joined ? joined : data, total))
			return true;	/* no memory: not acknowledged, resent later */
		c->rcv_nxt += total;
		/* Linux's rule (tcp_event_data_recv): data after a silence
		 * longer than an RTO comes from a sender that timed out and
		 * restarts from one segment: ACK at once, not delayed */
		if (eng->now_us - c->last_rx_us > (uint64_t)eng->cfg.rto_min_ms * 1000 &&
		    c->quickacks < TCP_QUICKACKS)
			c->quickacks = TCP_QUICKACKS;
		ack_policy(eng, c);
		if (had_ooo) {
			/* a hole (partly) filled: ACK at once (RFC 5681 §4.2) */
			c->ack_now = true;
			c->sack_pending = c->ooo != NULL;
			tcp_send_ack(eng, c);
		}
	}
	if (fin && c->rcv_nxt == seq + len)
		tcp_fin(eng, c);
	else if (c->ooo_fin && c->rcv_nxt == c->ooo_fin_seq && !c->ooo)
		tcp_fin(eng, c);
	return true;
}

static void tcp_segment_arrives(struct sl_engine *eng, struct sl_conn *c, struct pkt *p,
				const struct tcp_opts *o)
{
	uint32_t len = seg_length(p);

	/* SYN-RECEIVED: the peer repeats its SYN, our SYN-ACK was lost */
	if (c->state == TCP_SYN_RECEIVED && (p->flags & (TH_SYN | TH_ACK)) == TH_SYN &&
	    p->seq == c->irs) {
		tcp_send_synack(eng, c);
		return;
	}
	if (c->ts_on && o->has_ts && !(p->flags & TH_RST) && paws_rejects(eng, c, o)) {
		eng->ctr.drop_paws++;
		c->ack_now = true;
		conn_dirty(eng, c);
		return;
	}
	/* first: check the sequence number */
	if (!seq_acceptable(c, p->seq, len)) {
		eng->ctr.drop_out_of_window++;
		if (p->flags & TH_SYN) {
			/* RFC 5961 §4.2: a SYN, whatever its sequence number,
			 * gets a (throttled) challenge ACK */
			challenge_ack(eng, c);
		} else if (!(p->flags & TH_RST)) {
			/* an old duplicate: our ACK was lost or the sender
			 * timed out.  RFC 2883 §4: report it as a D-SACK; and
			 * as Linux (tcp_send_dupack), ACK the next segments at
			 * once: a sender that timed out restarts from one */
			if (p->payload_len && seq_lt(p->seq, c->rcv_nxt)) {
				dsack_old(c, p->seq, p->payload_len);
				if (c->quickacks < TCP_QUICKACKS)
					c->quickacks = TCP_QUICKACKS;
				ts_recent_dup(eng, c, p, o);
			}
			c->ack_now = true;
			conn_dirty(eng, c);
		}
		return;
	}
	/* RFC 7323 §4.3 (R3): TS.Recent from the segment that covers
	 * Last.ACK.sent */
	if (c->ts_on && o->has_ts && seq_le(p->seq, c->last_ack_sent) &&
	    seq_ge(o->tsval, c->ts_recent)) {
		c->ts_recent = o->tsval;
		c->ts_recent_us = eng->now_us;
	}
	/* second: the RST bit (RFC 5961 §3.2: exact match resets, anything
	 * else in the window gets a challenge ACK) */
	if (p->flags & TH_RST) {
		if (p->seq != c->rcv_nxt) {
			challenge_ack(eng, c);
			return;
		}
		eng->ctr.rst_received++;
		if (c->state == TCP_SYN_RECEIVED || c->state == TCP_CLOSING ||
		    c->state == TCP_LAST_ACK || c->detached) {
			conn_free(eng, c);	/* back to LISTEN / just delete */
			return;
		}
		eng->ctr.conns_reset++;
		conn_reset_close(eng, c, -ECONNRESET);
		return;
	}
	/* fourth: a SYN in a synchronized state (RFC 5961 §4.2) */
	if (p->flags & TH_SYN) {
		challenge_ack(eng, c);
		return;
	}
	/* fifth: the ACK field */
	if (!(p->flags & TH_ACK)) {
		eng->ctr.drop_no_ack++;
		return;
	}
	if (c->state == TCP_SYN_RECEIVED) {
		if (!(seq_lt(c->snd_una, p->ack) && seq_le(p->ack, c->snd_nxt))) {
			tcp_reply_rst(eng, p);
			return;
		}
		if (c->backoff == 0)
			tcp_rtt_sample(c, (uint32_t)(eng->now_us - c->synack_us), &eng->cfg);
		c->backoff = 0;
		c->snd_una = p->ack;
		c->snd_wnd = (uint32_t)p->wnd << c->snd_wscale;
		c->max_snd_wnd = c->snd_wnd;
		c->snd_wl1 = p->seq;
		c->snd_wl2 = p->ack;
		timer_set(eng, c, T_REXMIT, 0);
		conn_established(eng, c);
	}
	/* RFC 5961 §5.2: ACK acceptability */
	if (seq_gt(p->ack, c->snd_max)) {
		eng->ctr.drop_ack_too_new++;
		c->ack_now = true;
		conn_dirty(eng, c);
		return;
	}
	if (seq_lt(p->ack, c->snd_una - c->max_snd_wnd)) {
		eng->ctr.drop_ack_too_old++;
		challenge_ack(eng, c);
		return;
	}
	if (!tcp_ack(eng, c, p, o))
		return;
	/* sixth: URG is not supported (RFC 6093): the data is plain data */
	/* seventh and eighth: segment text, FIN */
	if (p->payload_len || (p->flags & TH_FIN))
		tcp_data(eng, c, p);
	c->last_rx_us = eng->now_us;
}

void tcp_input(struct sl_engine *eng, struct pkt *p)
{
	struct tcp_opts o;
	struct sl_conn *c;
	struct tcp_listener *l;

	if (parse_options(p->opts, p->opts_len, (p->flags & TH_SYN) != 0, &o)) {
		eng->ctr.drop_bad_tcp_options++;
		return;
	}
	if ((p->flags & (TH_SYN | TH_ACK)) == TH_SYN)
		eng->ctr.rx_tcp_syn++;
	c = conn_lookup(eng, p->saddr, p->sport, p->dport);
	if (!c) {
		l = listener_for_port(eng, p->dport);
		if (l)
			listen_input(eng, l, p, &o);
		else
			closed_input(eng, p);
		return;
	}
	if (c->state == TCP_TIME_WAIT) {
		timewait_input(eng, c, p, &o);
		return;
	}
	active_note(eng, c);
	tcp_segment_arrives(eng, c, p, &o);
}
