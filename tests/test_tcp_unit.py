"""TCP input, output and timers, one RFC step per test, on a test engine.

Segments are crafted relative to the connection (tcpkit.Peer) and what the
stack sends back is captured and parsed; the clock is the test's.  Names
follow ``test_<step>_<case>``.
"""

from __future__ import annotations

import errno
import os

import pytest

from specloop.engine import ffi, lib

from tcpkit import (OPT_SACK_PERM, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4,
                    Harness, Peer, icmp_frag_needed, opt_mss, opt_sack, opt_ts, opt_ws, tcp_frame)

ACCEPT, DATA, EOF, CLOSED, WRITABLE = (lib.SL_EV_ACCEPT, lib.SL_EV_DATA, lib.SL_EV_EOF,
                                       lib.SL_EV_CLOSED, lib.SL_EV_WRITABLE)
PORT = 80


@pytest.fixture
def h():
    harness = Harness(time_wait=2.0, retries=4, syn_retries=2)
    harness.listen(PORT)
    yield harness
    harness.close()


@pytest.fixture
def peer(h):
    p = Peer(h, PORT)
    p.connect()
    assert p.conn
    return p


def frames_idle(h) -> bool:
    c = h.counters()
    return (c["frames_sndq"] == 0 and c["frames_tx"] == 0 and c["segs_in_use"] == 0
            and c["frames_free"] == c["frames_total"])


# ---- LISTEN / CLOSED (RFC 9293 §3.10.7.1-2) ------------------------------------

def test_listen_synack_carries_options(h):
    p = Peer(h, PORT)
    out = p.connect()
    sa = out[0]
    assert sa.has("SA") and sa.checksums_ok
    assert sa.ack == p.isn + 1
    assert sa.options["mss"] == 1460 and sa.options.get("sack_perm")
    assert "ws" in sa.options and "ts" in sa.options
    assert sa.options["ts"][1] == 5000  # TSecr echoes the SYN's TSval
    assert h.info(p.conn)["flags"] & 7 == 7  # ts, sack, wscale on


def test_listen_without_options_negotiates_none(h):
    p = Peer(h, PORT, ts=False, sack=False, ws=None, mss=536)
    sa = p.connect()[0]
    assert "ts" not in sa.options and "ws" not in sa.options and "sack_perm" not in sa.options
    assert h.info(p.conn)["mss"] == 536 and h.info(p.conn)["flags"] & 7 == 0


def test_listen_ack_without_connection_gets_rst(h):
    out = Peer(h, PORT).send(tcp_frame(sport=41000, dport=PORT, seq=5, ack=777, flags="A"))
    assert len(out) == 1 and out[0].has("R") and out[0].seq == 777


def test_closed_port_answers_rst_ack(h):
    out = Peer(h, 81).send(tcp_frame(sport=41000, dport=81, seq=100, flags="S"))
    assert len(out) == 1 and out[0].has("RA") and out[0].ack == 101 and out[0].seq == 0
    assert h.counters()["drop_no_listener"] == 1


def test_closed_rst_is_never_answered(h):
    out = Peer(h, 81).send(tcp_frame(sport=41000, dport=81, seq=100, flags="R"))
    assert out == []


def test_syn_received_repeated_syn_gets_synack_again(h):
    p = Peer(h, PORT)
    syn = tcp_frame(sport=p.sport, dport=PORT, seq=p.isn, flags="S", options=p.options(syn=True))
    first = p.send(syn)
    again = p.send(syn)
    assert again and again[0].has("SA") and again[0].seq == first[0].seq


def test_syn_received_synack_retransmits_then_gives_up(h):
    p = Peer(h, PORT)
    p.send(tcp_frame(sport=p.sport, dport=PORT, seq=p.isn, flags="S", options=p.options(True)))
    assert h.counters()["conns"] == 1
    retransmits = 0
    for _ in range(10):
        h.advance(1.0)
        retransmits += sum(1 for s in h.flush() if s.has("SA"))
        h.advance(3.0)
    c = h.counters()
    assert c["synack_retransmits"] == 2 and c["conns"] == 0
    assert frames_idle(h)


# ---- data, ACKs, windows (RFC 9293 §3.10.7.4, RFC 5681 §4.2) -------------------

def test_text_in_order_is_delivered_and_acked(h, peer):
    out = peer.deliver(b"hello")
    assert [e.data for e in h.take_events(DATA)] == [b"hello"]
    assert out and out[-1].ack == peer.snd_nxt  # quick ACK at the start


def test_text_delayed_ack_waits_then_fires(h, peer):
    for i in range(20):  # leave quick-ACK mode
        peer.deliver(b"x")
    out = peer.deliver(b"y")
    assert out == []  # delayed
    h.advance(0.05)
    out = h.flush() or []
    c = h.counters()
    assert c["delayed_acks"] >= 1


def test_text_every_second_full_segment_is_acked_at_once(h, peer):
    for i in range(20):
        peer.deliver(b"x")
    h.advance(0.05)  # the delayed ACK for those goes out
    mss = h.info(peer.conn)["mss"]
    assert peer.deliver(b"a" * mss) == []
    out = peer.deliver(b"b" * mss)
    assert out and out[-1].ack == peer.snd_nxt


def test_text_out_of_order_is_sacked_then_reassembled(h, peer):
    first, second = b"A" * 1000, b"B" * 1000
    out = peer.send(peer.seg(seq_off=1000, payload=second))
    assert out and out[-1].ack == peer.snd_nxt  # a duplicate ACK at once
    assert out[-1].options["sack"] == [(peer.snd_nxt + 1000, peer.snd_nxt + 2000)]
    assert h.take_events(DATA) == []
    out = peer.send(peer.seg(payload=first))
    assert b"".join(e.data for e in h.take_events(DATA)) == first + second
    assert out and out[-1].ack == peer.snd_nxt + 2000 and "sack" not in out[-1].options
    assert h.counters()["ooo_bytes"] == 0


def leave_quickack(h, peer):
    for _ in range(20):
        peer.deliver(b"x")
    h.advance(0.05)  # the delayed ACK for those goes out


def test_text_each_out_of_order_segment_is_acked_with_the_newest_block_first(h, peer):
    # RFC 5681 §4.2: an ACK at once for every out-of-order segment, even in
    # one receive batch; RFC 2018 §4: the block holding it first, then the
    # blocks reported most recently
    leave_quickack(h, peer)
    base = peer.snd_nxt
    for off in (2000, 6000, 4000):
        h.inject(peer.seg(seq_off=off, payload=b"o" * 1000))
    acks = [s for s in h.flush() if "sack" in s.options]
    assert len(acks) == 3 and all(a.ack == base for a in acks)
    assert acks[-1].options["sack"] == [(base + 4000, base + 5000), (base + 6000, base + 7000),
                                        (base + 2000, base + 3000)]
    # a hole partly filled: at once, the blocks still ahead of it
    out = peer.send(peer.seg(payload=b"i" * 2000))
    assert out and out[-1].ack == base + 3000
    assert out[-1].options["sack"] == [(base + 4000, base + 5000), (base + 6000, base + 7000)]


def test_text_an_old_duplicate_is_reported_once_as_a_dsack(h, peer):
    # RFC 2883 §4: the first SACK block of the next ACK names the duplicate,
    # and each duplicate is reported in at most one D-SACK block
    leave_quickack(h, peer)
    base = peer.snd_nxt
    peer.deliver(b"a" * 1000)
    h.advance(0.05)
    out = peer.send(peer.seg(seq_off=-1000, payload=b"a" * 1000))
    assert out and out[-1].ack == base + 1000, out
    assert out[-1].options["sack"] == [(base, base + 1000)]
    assert h.counters()["dsack_sent"] == 1
    assert h.take_events(DATA) and h.counters()["ooo_bytes"] == 0
    # reported once: the next ACK carries no block
    out = peer.send(peer.seg(flags="A"))
    h.advance(0.05)
    out += h.flush() or []
    assert all("sack" not in s.options for s in out), out


def test_first_check_a_duplicate_up_to_the_last_ack_sent_updates_ts_recent(h, peer):
    # RFC 7323 §4.3 (2): SEG.SEQ <= Last.ACK.sent holds for a retransmission
    # whose original we ACKed (the ACK lost): its ACK echoes the
    # retransmission's TSval, as Linux and FreeBSD do, so the sender samples
    # one round trip, not its RTO wait
    for i in range(3):
        peer.tsval += 1
        peer.deliver(b"d" * 1000)
    h.advance(0.05)
    h.flush()
    peer.tsval = 90_000                      # the retransmission, much later
    out = peer.send(peer.seg(seq_off=-1000, payload=b"d" * 1000))
    assert out and out[-1].ack == peer.snd_nxt and out[-1].options["ts"][1] == 90_000
    # an older duplicate (not reaching Last.ACK.sent) leaves TS.Recent alone
    peer.tsval = 95_000
    out = peer.send(peer.seg(seq_off=-3000, payload=b"d" * 1000))
    assert out and out[-1].options["ts"][1] == 90_000


def test_text_a_partial_duplicate_is_trimmed_and_its_old_part_dsacked(h, peer):
    base = peer.snd_nxt
    peer.deliver(b"a" * 1000)
    h.take_events(DATA)
    out = peer.send(peer.seg(seq_off=-400, payload=b"a" * 400 + b"b" * 600))
    assert b"".join(e.data for e in h.take_events(DATA)) == b"b" * 600
    assert out and out[-1].ack == base + 1600
    assert out[-1].options["sack"] == [(base + 600, base + 1000)]


def test_text_a_duplicate_above_the_hole_is_dsacked_before_its_block(h, peer):
    # RFC 2883 §4: a duplicate above the cumulative ACK: the D-SACK block
    # first, then the (larger) block holding it
    leave_quickack(h, peer)
    base = peer.snd_nxt
    peer.send(peer.seg(seq_off=2000, payload=b"o" * 2000))
    peer.send(peer.seg(seq_off=6000, payload=b"p" * 1000))
    out = peer.send(peer.seg(seq_off=3000, payload=b"o" * 1000))
    assert out and out[-1].ack == base
    assert out[-1].options["sack"] == [(base + 3000, base + 4000), (base + 2000, base + 4000),
                                       (base + 6000, base + 7000)]
    assert h.counters()["dsack_sent"] == 1 and h.counters()["ooo_bytes"] == 3000
    # the next out-of-order arrival: plain SACK blocks again
    out = peer.send(peer.seg(seq_off=8000, payload=b"q" * 1000))
    assert out[-1].options["sack"] == [(base + 8000, base + 9000), (base + 2000, base + 4000),
                                       (base + 6000, base + 7000)]


def test_text_without_sack_a_duplicate_gets_a_plain_ack(h):
    p = Peer(h, PORT, sack=False)
    p.connect()
    base = p.snd_nxt
    p.deliver(b"a" * 1000)
    out = p.send(p.seg(seq_off=-1000, payload=b"a" * 1000))
    assert out and out[-1].ack == base + 1000 and "sack" not in out[-1].options
    assert h.counters()["dsack_sent"] == 0


def test_text_every_second_full_segment_is_acked_within_one_batch(h, peer):
    # RFC 5681 §4.2: an ACK for at least every second full-sized segment,
    # also when a whole burst arrives in one receive batch
    leave_quickack(h, peer)
    mss = h.info(peer.conn)["mss"]
    for _ in range(6):
        h.inject(peer.seg(payload=b"b" * mss))
        peer.snd_nxt += mss
    acks = [s.ack for s in h.flush()]
    base = peer.snd_nxt - 6 * mss
    assert acks == [base + 2 * mss, base + 4 * mss, base + 6 * mss]


def test_text_after_a_long_silence_data_is_acked_at_once(h, peer):
    # Linux's rule: the sender of data after a gap longer than an RTO timed
    # out and waits with one segment out: no delayed ACK for it
    leave_quickack(h, peer)
    assert peer.deliver(b"y") == []  # delayed, as usual
    h.advance(0.05)
    h.advance(0.5)
    out = peer.deliver(b"z")
    assert out and out[-1].ack == peer.snd_nxt


def test_text_duplicate_segment_is_trimmed(h, peer):
    peer.deliver(b"0123456789")
    out = peer.send(peer.seg(seq_off=-10, payload=b"0123456789abc"))
    assert [e.data for e in h.take_events(DATA)] == [b"0123456789", b"abc"]


def test_first_check_old_duplicate_gets_ack_and_is_dropped(h, peer):
    peer.deliver(b"data")
    h.take_events()
    out = peer.send(peer.seg(seq_off=-4, payload=b"data"))
    assert h.take_events(DATA) == []
    assert out and out[0].ack == peer.snd_nxt
    assert h.counters()["drop_out_of_window"] >= 1


def test_first_check_window_trims_data_beyond_it(h):
    h2 = Harness(rcvbuf=4096)
    h2.listen(PORT)
    p = Peer(h2, PORT, ws=None)
    p.connect()
    lib.sl_conn_pause_reading(h2.ptr, p.conn)  # nothing is consumed
    p.deliver(b"z" * 3000)
    out = p.send(p.seg(payload=b"y" * 3000))
    assert h2.info(p.conn)["rxq_bytes"] == 4096  # 1096 of the second taken
    assert out[-1].ack == p.snd_nxt + 1096
    h2.close()


def test_window_scaling_is_applied(h, peer):
    # the peer's window is scaled by its shift (7): 100 << 7
    peer.send(peer.seg(window=100))
    assert h.info(peer.conn)["snd_wnd"] == 100 << 7


# ---- the connection table, as `ss -t` shows it -------------------------------

def list_conns(h) -> list[int]:
    n = lib.sl_conn_list(h.ptr, ffi.NULL, 0)
    ids = ffi.new("uint32_t[]", n + 1)
    assert lib.sl_conn_list(h.ptr, ids, n + 1) == n
    return list(ids[0:n])


def test_conn_list_names_every_connection_with_its_state(h, peer):
    other = Peer(h, PORT, sport=40001)
    other.connect()
    assert sorted(list_conns(h)) == sorted([peer.conn, other.conn])
    short = ffi.new("uint32_t[]", 1)
    assert lib.sl_conn_list(h.ptr, short, 1) == 2  # how many there are, not how many fit
    info = h.info(peer.conn)
    assert info["state"] == 4 and info["peer_port"] == 40000  # ESTABLISHED
    assert info["flags"] & 32 and not info["flags"] & 16  # accepted, not detached
    h.advance(1.5)
    assert 1400 <= h.info(peer.conn)["idle_ms"] <= 1600
    assert h.info(peer.conn)["timer_ms"] == 0xFFFFFFFF  # idle, nothing armed
    h.write(peer.conn, b"x" * 10)
    h.flush()
    assert 0 < h.info(peer.conn)["timer_ms"] <= 1000  # the RTO (or tail loss probe)


def test_output_serves_connections_in_the_order_they_became_ready(h):
    """First ready, first sent: a connection never waits behind ones that
    became ready after it (a flush with a TX budget then starves nobody)."""
    peers = [Peer(h, PORT, sport=41000 + i) for i in range(4)]
    for p in peers:
        p.connect()
    for p in (peers[2], peers[0], peers[3], peers[1]):
        h.write(p.conn, b"y" * 100)
    out = [s.dport for s in h.flush() if s.payload]
    assert out == [41002, 41000, 41003, 41001]


# ---- RST, SYN, ACK checks: RFC 5961 -------------------------------------------

def test_second_rst_exact_sequence_resets(h, peer):
    peer.send(peer.seg(flags="R"))
    closed = h.take_events(CLOSED)
    assert len(closed) == 1 and closed[0].err == -errno.ECONNRESET
    assert h.counters()["conns"] == 0 and frames_idle(h)


def test_second_rst_in_window_gets_challenge_ack(h, peer):
    out = peer.send(peer.seg(seq_off=100, flags="R"))
    assert h.take_events(CLOSED) == []
    assert out and out[0].has("A") and out[0].ack == peer.snd_nxt
    assert h.counters()["challenge_acks"] == 1


def test_second_rst_outside_window_is_ignored(h, peer):
    out = peer.send(peer.seg(seq_off=10_000_000, flags="R"))
    assert h.take_events(CLOSED) == [] and out == []


def test_fourth_syn_in_established_gets_challenge_ack(h, peer):
    out = peer.send(peer.seg(flags="S", seq_off=5))
    assert h.take_events(CLOSED) == []
    assert out and out[0].has("A") and not out[0].has("S")
    # and the connection still works
    peer.deliver(b"alive")
    assert [e.data for e in h.take_events(DATA)] == [b"alive"]


def test_fifth_ack_of_unsent_data_is_dropped(h, peer):
    out = peer.send(peer.seg(ack_off=5000, payload=b"spoof"))
    assert h.take_events(DATA) == []
    assert h.counters()["drop_ack_too_new"] == 1 and out


def test_fifth_ack_far_below_window_gets_challenge_ack(h, peer):
    h.write(peer.conn, b"q" * 100)
    peer.absorb(h.flush())
    out = peer.send(peer.seg(ack_off=-(1 << 30), payload=b"inject"))
    assert h.take_events(DATA) == []
    assert h.counters()["drop_ack_too_old"] == 1


def test_challenge_acks_are_throttled(h, peer):
    for i in range(1500):
        h.inject(peer.seg(seq_off=100 + i, flags="R"))
    h.flush()
    c = h.counters()
    assert c["challenge_acks"] == 1000 and c["challenge_acks_throttled"] == 500
    h.advance(1.1)
    peer.send(peer.seg(seq_off=50, flags="R"))
    assert h.counters()["challenge_acks"] == 1001


def test_paws_old_timestamp_is_dropped(h, peer):
    peer.tsval = 10_000
    peer.deliver(b"new")
    h.take_events()
    peer.tsval = 9_000  # older than TS.Recent
    out = peer.send(peer.seg(payload=b"old"))
    assert h.take_events(DATA) == []
    assert h.counters()["drop_paws"] == 1 and out


# ---- retransmission (RFC 6298, 5681, 6582, 2018, 8985) --------------------------

def test_rto_retransmits_with_backoff_then_times_out(h, peer):
    h.write(peer.conn, b"lost" * 100)
    first = h.flush()
    assert first and first[0].payload
    seen = []
    for _ in range(200):
        seen += [s for s in h.advance(0.1) if s.payload]
        if h.take_events(CLOSED):
            break
    else:
        pytest.fail("never timed out")
    assert len(seen) >= 4
    assert h.counters()["conns_timed_out"] == 1 and frames_idle(h)


def test_a_stopped_or_later_timer_fires_at_its_real_time(h, peer):
    """The timer heap keys a connection lazily (a stopped or later timer
    leaves its key early): the early key wakes the engine once and sends
    nothing, and the timer as last set fires on time."""
    def next_timer() -> int:
        return lib.sl_engine_next_timer(h.ptr)

    # an answer arms the retransmission timer; its ACK stops it
    peer.absorb(h.write(peer.conn, b"a" * 100) and h.flush())
    first = next_timer()
    assert first > h.now
    peer.send(peer.seg())
    assert h.counters()["timers_armed"] == 0
    assert not [s for s in h.advance((first - h.now) / 1e6) if s.payload]
    assert next_timer() == 0 and h.counters()["timers_armed"] == 0

    # armed, then half its time later ACKed and armed again for new data:
    # nothing at the first deadline, the retransmission at the second
    peer.absorb(h.write(peer.conn, b"b" * 100) and h.flush())
    first = next_timer()
    h.advance((first - h.now) / 2e6)
    peer.send(peer.seg())
    peer.absorb(h.write(peer.conn, b"c" * 100) and h.flush())
    assert h.counters()["timers_armed"] == 1
    assert not [s for s in h.advance((first - h.now) / 1e6) if s.payload]
    second = next_timer()
    assert second > first
    assert not [s for s in h.advance((second - h.now) / 1e6 - 0.0001) if s.payload]
    resent = [s for s in h.advance(0.0001) if s.payload]
    assert [s.payload for s in resent] == [b"c" * 100]
    assert h.counters()["retransmits"] == 1


def test_rto_closed_event_says_timeout(h, peer):
    h.write(peer.conn, b"x")
    h.flush()
    events = []
    for _ in range(400):
        h.advance(0.1)
        h.flush()
        events += h.take_events(CLOSED)
        if events:
            break
    assert events and events[0].err == -errno.ETIMEDOUT


def test_fast_retransmit_after_three_dupacks(h):
    h2 = Harness()
    h2.listen(PORT)
    p = Peer(h2, PORT, sack=False)
    p.connect()
    mss = h2.info(p.conn)["mss"]
    h2.write(p.conn, b"d" * (mss * 8))
    out = [s for s in h2.flush() if s.payload]
    assert len(out) == 8
    again = []
    for i in range(3):  # the first segment was lost: three duplicate ACKs
        again += [s for s in p.send(p.seg(ack_off=0)) if s.payload]
    c = h2.counters()
    # RFC 5681 §3.2 step 4: the lost segment goes at once, whatever cwnd says
    assert c["fast_retransmits"] == 1 and c["retransmits"] == 1
    assert [s.seq for s in again] == [out[0].seq]
    assert h2.counters()["dupacks_in"] >= 3
    h2.close()


def test_sack_marks_the_hole_lost_and_resends_only_it(h, peer):
    mss = h.info(peer.conn)["mss"]
    h.write(peer.conn, b"s" * (mss * 6))
    segs = [s for s in h.flush() if s.payload]
    assert len(segs) == 6
    hole = segs[0].seq
    out = peer.send(peer.seg(options=b"\x01\x01" + opt_ts(peer.tsval, peer.ts_recent)
                             + b"\x01\x01" + opt_sack((segs[1].seq, segs[5].seq + mss))))
    resent = [s for s in out if s.payload]
    assert [s.seq for s in resent] == [hole]
    assert h.counters()["sack_blocks_in"] == 1


def test_tlp_probes_a_lost_tail(h, peer):
    # an RTT sample first, so that the probe timeout is known
    h.write(peer.conn, b"a")
    peer.absorb(h.flush())
    h.advance(0.001)
    peer.send(peer.seg())
    h.write(peer.conn, b"tail" * 10)
    h.flush()  # lost: no ACK comes
    probes = [s for s in h.advance(0.05) if s.payload]
    c = h.counters()
    assert probes and c["tail_loss_probes"] == 1 and c["rto_expired"] == 0


def test_tlp_timeout_is_two_srtt_and_a_slack_on_a_short_path(h, peer):
    # RFC 8985 §7.2: PTO = 2*SRTT for a flight of more than one segment;
    # as Linux's tcp_schedule_loss_probe, plus 2 ms of timer slack and no
    # 10 ms floor: on a sub-millisecond path the probe goes after ~2 ms
    rtt_sample(h, peer, 0.001)
    pto = 2 * h.info(peer.conn)["srtt_us"] / 1e6 + 0.002
    assert pto < 0.005
    mss = h.info(peer.conn)["mss"]
    h.write(peer.conn, b"t" * (mss * 4))
    tail = [s for s in h.flush() if s.payload]
    assert len(tail) == 4  # lost: no ACK comes
    assert not [s for s in h.advance(pto - 0.0001) if s.payload]
    probe = [s for s in h.advance(0.0002) if s.payload]
    c = h.counters()
    assert [s.seq for s in probe] == [tail[-1].seq]
    assert c["tail_loss_probes"] == 1 and c["rto_expired"] == 0


def test_tlp_new_data_probe_is_counted(h, peer):
    # RFC 8985 §7.3: new data goes as the probe when the window allows it;
    # it counts as a probe (Linux's TCPLossProbes), not as a retransmission
    rtt_sample(h, peer, 0.001)
    mss = h.info(peer.conn)["mss"]
    h.write(peer.conn, b"n" * (mss * 30))
    first = [s for s in h.flush() if s.payload]
    assert len(first) < 30  # the rest waits for the congestion window
    probe = [s for s in h.advance(0.005) if s.payload]
    c = h.counters()
    assert [s.seq for s in probe] == [first[-1].seq + mss]
    assert c["tail_loss_probes"] == 1 and c["retransmits"] == 0


def probed_tail(h, peer):
    """Four segments out after an RTT sample, no ACK: the tail loss probe
    resends the last.  Returns (the four, the probe)."""
    rtt_sample(h, peer, 0.001)
    mss = h.info(peer.conn)["mss"]
    h.write(peer.conn, b"t" * (mss * 4))
    tail = [s for s in h.flush() if s.payload]
    assert len(tail) == 4
    probe = [s for s in h.advance(0.01) if s.payload]
    assert [s.seq for s in probe] == [tail[-1].seq]
    assert h.counters()["tail_loss_probes"] == 1
    return tail, probe


def ack_new_byte(h, peer):
    """One more byte out and ACKed: an ACK beyond the probe's TLP.end_seq."""
    h.write(peer.conn, b"n")
    peer.absorb([s for s in h.flush() if s.payload])
    peer.send(peer.seg())


def test_tlp_episode_a_probe_that_repaired_a_loss_reduces_the_window(h, peer):
    # RFC 8985 §7.4.2: the probe resent the tail and no D-SACK says that
    # the original arrived: the probe filled a hole, a loss no other signal
    # showed, and the window is reduced as for a fast recovery (Linux's
    # TCPLossProbeRecovery).  An ACK at TLP.end_seq does not decide yet
    # (a D-SACK may follow); one beyond it does
    tail, probe = probed_tail(h, peer)
    peer.absorb(tail[:3])
    peer.absorb(probe)
    peer.send(peer.seg())
    cwnd = h.info(peer.conn)["cwnd"]
    assert h.counters()["tlp_recoveries"] == 0
    ack_new_byte(h, peer)
    info, c = h.info(peer.conn), h.counters()
    assert c["tlp_recoveries"] == 1
    assert c["fast_retransmits"] == 0 and c["rto_expired"] == 0
    assert info["cwnd"] == info["ssthresh"] < cwnd
    ack_new_byte(h, peer)  # the episode is over: once only
    assert h.counters()["tlp_recoveries"] == 1


def test_tlp_episode_a_dsack_of_the_probe_means_nothing_was_lost(h, peer):
    # RFC 8985 §7.4.2: the tail arrived and only its ACKs were lost; the
    # ACK that the probe draws reports it as a duplicate (RFC 2883 §4: a
    # block below the ACK's own cumulative ACK), and the window stays
    tail, probe = probed_tail(h, peer)
    peer.absorb(tail)
    end = tail[-1].seq + len(tail[-1].payload)
    peer.send(peer.seg(options=sack_opts(peer, (tail[-1].seq, end))))
    cwnd = h.info(peer.conn)["cwnd"]
    ack_new_byte(h, peer)
    c = h.counters()
    assert c["dsack_in"] == 1 and c["tlp_recoveries"] == 0
    assert h.info(peer.conn)["cwnd"] >= cwnd


def test_tlp_episode_a_pure_duplicate_ack_at_its_end_means_nothing_was_lost(h, peer):
    # RFC 8985 §7.4.2: the tail's ACK came and then a duplicate of it (the
    # probe arrived as a duplicate, the receiver sent no D-SACK)
    tail, probe = probed_tail(h, peer)
    peer.absorb(tail)
    peer.send(peer.seg())
    peer.send(peer.seg())
    ack_new_byte(h, peer)
    assert h.counters()["tlp_recoveries"] == 0


def test_tlp_episode_no_second_probe_before_the_first_is_answered(h, peer):
    # RFC 8985 §7.4: one episode at a time.  An ACK below TLP.end_seq (the
    # head arrived, the rest not yet) arms the RTO, not another probe
    tail, probe = probed_tail(h, peer)
    peer.absorb(tail[:1])
    peer.send(peer.seg())
    assert [s for s in h.advance(0.02) if s.payload] == []
    assert h.counters()["tail_loss_probes"] == 1
    out = until_rto(h)
    assert out and out[0].seq == tail[1].seq
    assert h.counters()["tail_loss_probes"] == 1


def test_output_psh_on_the_last_segment_a_flight_lets_go(h, peer):
    # RFC 9293 §3.9.1.2: PSH on the last segment when no more data can go;
    # a flight the congestion window ends carries it on its last segment
    # (a Linux receiver ACKs that one when read, not after its delayed-ACK
    # timer), none before it, and the queue's last segment keeps it
    rtt_sample(h, peer, 0.001)
    mss = h.info(peer.conn)["mss"]
    h.write(peer.conn, b"p" * (mss * 40))
    first = [s for s in h.flush() if s.payload]
    assert 2 <= len(first) < 40
    assert [bool(s.flags & 0x08) for s in first] == [False] * (len(first) - 1) + [True]
    # the ACK of the first two lets two more go (slow start): the second
    # ends the flight again
    more = [s for s in peer.send(peer.seg(ack_off=2 * mss)) if s.payload]
    assert more and more[-1].flags & 0x08
    assert not any(s.flags & 0x08 for s in more[:-1])


def test_rack_reordering_window_has_no_floor_on_a_short_path(h, peer):
    # RFC 8985 §6.2 step 4: the reordering window is min_RTT/4, at most
    # SRTT, with no floor (as Linux's tcp_rack_reo_wnd): on a path of
    # 100 µs a segment sent before one SACKed is lost within an SRTT of
    # that ACK, not after a millisecond's timer
    rtt_sample(h, peer, 0.0001)
    srtt = h.info(peer.conn)["srtt_us"] / 1e6
    assert srtt < 0.0002
    mss = h.info(peer.conn)["mss"]
    h.write(peer.conn, b"q" * (mss * 4))
    out = [s for s in h.flush() if s.payload]
    assert len(out) == 4
    h.advance(0.0001)
    # one segment SACKed above the first: fewer than DupThresh, so only
    # RACK can call the first one lost
    resent = [s for s in peer.send(peer.seg(options=sack_opts(
        peer, (out[1].seq, out[1].seq + mss)))) if s.payload]
    resent += [s for s in h.advance(srtt) if s.payload]
    c = h.counters()
    assert resent and resent[0].seq == out[0].seq
    assert c["fast_retransmits"] == 1 and c["rto_expired"] == 0


def sack_opts(peer, *blocks):
    """Timestamps and SACK blocks, as the peer's ACKs carry them."""
    return (b"\x01\x01" + opt_ts(peer.tsval, peer.ts_recent) + b"\x01\x01"
            + opt_sack(*blocks))


def rtt_sample(h, peer, seconds=0.001):
    """One segment out and ACKed after ``seconds``: SRTT and min RTT known."""
    h.write(peer.conn, b"a")
    peer.absorb(h.flush())
    h.advance(seconds)
    peer.send(peer.seg())


def test_rack_lost_retransmission_is_sent_again_without_rto(h, peer):
    # RFC 8985 §6.2: a retransmission carries its own send time; when data
    # sent after it is SACKed and it is not, it is lost too
    rtt_sample(h, peer)
    mss = h.info(peer.conn)["mss"]
    h.write(peer.conn, b"r" * (mss * 20))
    first = [s for s in h.flush() if s.payload]
    assert 10 <= len(first) < 20  # the congestion window
    hole, end = first[0].seq, first[-1].seq + mss
    h.advance(0.001)
    out = [s for s in peer.send(peer.seg(options=sack_opts(peer, (first[1].seq, end))))
           if s.payload]
    # recovery: the hole again, then new data that the window lets out
    assert out[0].seq == hole and len(out) > 1 and all(s.seq >= end for s in out[1:])
    new_end = out[-1].seq + mss
    h.advance(0.001)
    # the retransmission is lost as well; what was sent after it arrives
    again = [s for s in peer.send(peer.seg(options=sack_opts(
        peer, (first[1].seq, new_end)))) if s.payload]
    c = h.counters()
    assert again and again[0].seq == hole and again[0].payload == first[0].payload
    assert c["retransmits_lost"] == 1 and c["rto_expired"] == 0
    # the hole's arrival clears the scoreboard
    peer.send(peer.seg(ack_off=new_end - peer.rcv_nxt))
    info = h.info(peer.conn)
    assert info["snd_una"] == new_end & 0xFFFFFFFF
    assert info["lost_out"] == info["retrans_out"] == info["sacked_out"] == 0


def test_new_data_the_batch_let_go_leaves_before_a_recovery_starts(h, peer):
    # Linux sends after each ACK; the engine reads a batch of ACKs, then
    # sends.  A cumulative ACK and, in the same batch, an ACK whose SACKs
    # start a recovery: the first ACK's new data goes before the recovery
    # (RFC 6582's recover lies beyond it), then the retransmission
    rtt_sample(h, peer)
    mss = h.info(peer.conn)["mss"]
    h.write(peer.conn, b"q" * (mss * 60))
    first = [s for s in h.flush() if s.payload]
    assert len(first) >= 10  # the initial window, and the sample's ACK
    h.advance(0.001)
    h.inject(peer.seg(ack_off=5 * mss))     # slow start: 5 more in the window
    end = first[-1].seq + mss
    h.inject(peer.seg(ack_off=5 * mss, options=sack_opts(peer, (first[6].seq, end))))
    out = [s for s in h.flush() if s.payload]
    at = [i for i, s in enumerate(out) if s.seq == first[5].seq]
    assert len(at) == 1, out
    new = out[:at[0]]
    assert len(new) >= 10 and all(s.seq >= end for s in new), out
    ssthresh = h.info(peer.conn)["ssthresh"]
    assert h.counters()["fast_retransmits"] == 1
    # the retransmission arrives, and one segment of that new data is lost:
    # still the same congestion event, no second reduction
    h.advance(0.001)
    last = max(s.seq for s in out) + mss
    again = peer.send(peer.seg(ack_off=new[2].seq - peer.rcv_nxt,
                               options=sack_opts(peer, (new[3].seq, last))))
    again += h.advance(0.001)   # RACK's reordering timer, if it waits
    assert any(s.seq == new[2].seq and s.payload for s in again), again
    assert h.info(peer.conn)["ssthresh"] == ssthresh
    assert h.counters()["fast_retransmits"] == 1


def reordering_seen(h, peer):
    """Three segments out; the third is SACKed before the first two arrive,
    which were sent once: RACK has seen reordering (§6.2 step 3)."""
    mss = h.info(peer.conn)["mss"]
    h.write(peer.conn, b"o" * (mss * 3))
    segs = [s for s in h.flush() if s.payload]
    assert len(segs) == 3
    h.advance(0.001)  # a round trip: RACK gives the first two a quarter more
    peer.send(peer.seg(options=sack_opts(peer, (segs[2].seq, segs[2].seq + mss))))
    assert h.info(peer.conn)["reord_seen"] == 0 and h.counters()["fast_retransmits"] == 0
    peer.absorb(segs)
    peer.send(peer.seg())
    assert h.info(peer.conn)["reord_seen"] == 1
    return segs


def reordering_path(h):
    """A connection on a 1 ms path from the handshake on (min_RTT/4 is a
    window) that has seen reordering; returns (peer, its three segments,
    the MSS)."""
    peer = Peer(h, PORT)
    peer.connect(rtt=0.001)
    rtt_sample(h, peer)
    segs = reordering_seen(h, peer)
    return peer, segs, h.info(peer.conn)["mss"]


def test_rack_dsack_without_reordering_leaves_the_window(h, peer):
    # RFC 8985 §6.2 step 4, as Linux's tcp_dsack_seen: on a path where no
    # reordering was seen, a D-SACK (a lost ACK made a retransmission
    # spurious) does not widen RACK's reordering window
    rtt_sample(h, peer)
    mss = h.info(peer.conn)["mss"]
    h.write(peer.conn, b"d" * mss)
    seg = [s for s in h.flush() if s.payload]
    peer.absorb(seg)
    peer.send(peer.seg(options=sack_opts(peer, (seg[0].seq, seg[0].seq + mss))))
    info = h.info(peer.conn)
    assert h.counters()["dsack_in"] == 1
    assert info["reord_seen"] == 0 and info["reo_wnd_mult"] == 1


def test_rack_dsack_widens_the_window_once_per_round(h):
    # RFC 8985 §6.2 step 4: once reordering was seen, D-SACKs widen the
    # reordering window by one step per round trip in which they come
    # (RACK.dsack_round: until what was sent by then is acknowledged)
    peer, segs, mss = reordering_path(h)
    assert h.info(peer.conn)["reo_wnd_mult"] == 1
    h.write(peer.conn, b"x" * (mss * 2))
    flight = [s for s in h.flush() if s.payload]
    dup = (segs[0].seq, segs[0].seq + mss)
    for window in (65000, 64000, 63000):  # window updates: no dupACKs
        peer.send(peer.seg(options=sack_opts(peer, dup), window=window))
    assert h.counters()["dsack_in"] == 3 and h.counters()["fast_retransmits"] == 0
    assert h.info(peer.conn)["reo_wnd_mult"] == 2
    peer.absorb(flight)
    peer.send(peer.seg())  # the round is over
    peer.send(peer.seg(options=sack_opts(peer, dup)))
    assert h.info(peer.conn)["reo_wnd_mult"] == 3


def test_rack_reordering_window_narrows_after_16_recoveries_without_dsack(h):
    # RFC 8985 §6.2 step 4: RACK.reo_wnd_persist, 16 recoveries without a
    # D-SACK and the window is back to one step
    peer, segs, mss = reordering_path(h)
    peer.send(peer.seg(options=sack_opts(peer, (segs[0].seq, segs[0].seq + mss))))
    assert h.info(peer.conn)["reo_wnd_mult"] == 2
    for n in range(1, 17):
        h.write(peer.conn, b"r" * (mss * 2))
        flight = [s for s in h.flush() if s.payload]
        assert len(flight) == 2
        h.advance(0.001)
        # the first is lost: the second is SACKed, and RACK's reordering
        # timer marks the first lost and starts a fast recovery
        out = peer.send(peer.seg(options=sack_opts(peer, (flight[1].seq, flight[1].seq + mss))))
        out += h.advance(0.002)
        assert flight[0].seq in [s.seq for s in out if s.payload]
        assert h.counters()["fast_retransmits"] == n
        peer.absorb(flight)
        peer.send(peer.seg())  # the recovery is over
        assert h.info(peer.conn)["reo_wnd_mult"] == (2 if n < 16 else 1)


def until_rto(h, n=1):
    """Moves the clock in 5 ms steps (a tail loss probe may come first)
    until the n-th RTO; returns the data segments sent on the way."""
    out = []
    for _ in range(1000):
        if h.counters()["rto_expired"] >= n:
            return out
        out += [s for s in h.advance(0.005) if s.payload]
    pytest.fail("no RTO")


def test_prr_sends_in_proportion_to_what_is_delivered():
    # RFC 9937 §6.2: while more than ssthresh is in flight, a recovery sends
    # ceil(prr_delivered * ssthresh / RecoverFS) - prr_out: not nothing
    # until the flight drains below ssthresh, nor a burst then (NewReno's
    # halving leaves the flight above ssthresh longest)
    h = Harness(cc="reno")
    h.listen(PORT)
    peer = Peer(h, PORT)
    peer.connect()
    rtt_sample(h, peer)
    mss = h.info(peer.conn)["mss"]
    h.write(peer.conn, b"p" * (mss * 40))
    first = [s for s in h.flush() if s.payload]
    fs = len(first)  # RecoverFS: all of it is outstanding
    assert fs >= 11
    sent = 0
    # SACKs of segments 1..k: the first is the hole
    for k in (3, 4, 5, 6):
        h.advance(0.0002)
        out = [s for s in peer.send(peer.seg(options=sack_opts(
            peer, (first[1].seq, first[k].seq + mss)))) if s.payload]
        if not sent:
            assert out and out[0].seq == first[0].seq  # the retransmission
        sent += len(out)
        info = h.info(peer.conn)
        pipe = (info["packets_out"] - info["sacked_out"] - info["lost_out"]
                + info["retrans_out"])
        assert pipe > info["ssthresh"]  # still the proportional part
        assert sent == -(-k * info["ssthresh"] // fs)
    assert h.counters()["fast_retransmits"] == 1
    h.close()


def cc_conn(cc):
    h = Harness(cc=cc)
    h.listen(PORT)
    peer = Peer(h, PORT)
    peer.connect()
    rtt_sample(h, peer)
    return h, peer


@pytest.mark.parametrize("cc", ["cubic", "reno"])
def test_cc_a_loss_leaves_beta_cubic_or_half_the_flight(cc):
    # RFC 9438 §4.6: ssthresh = 0.7 cwnd; RFC 5681 §3.1 (4): FlightSize/2
    h, peer = cc_conn(cc)
    mss = h.info(peer.conn)["mss"]
    h.write(peer.conn, b"c" * (mss * 40))
    first = [s for s in h.flush() if s.payload]
    cwnd = h.info(peer.conn)["cwnd"]
    peer.send(peer.seg(options=sack_opts(peer, (first[1].seq, first[3].seq + mss))))
    # the flight: all but the three SACKed and the hole RACK marked lost
    want = int(cwnd * 0.7) if cc == "cubic" else max((len(first) - 4) // 2, 2)
    assert h.counters()["fast_retransmits"] == 1 and h.info(peer.conn)["ssthresh"] == want
    h.close()


def test_cc_cubic_grows_by_time_since_the_loss_not_by_acks():
    # RFC 9438 §4.2-4.5: after a loss cwnd follows W_cubic(t) = C(t-K)^3 +
    # W_max: an ACKed window right after the loss adds nothing, the same
    # window K seconds later brings it back near W_max
    h, peer = cc_conn("cubic")
    mss = h.info(peer.conn)["mss"]
    h.write(peer.conn, b"c" * (mss * 11))
    first = [s for s in h.flush() if s.payload]
    w_max = h.info(peer.conn)["cwnd"]
    assert len(first) == w_max == 11
    peer.send(peer.seg(options=sack_opts(peer, (first[1].seq, first[-1].seq + mss))))
    peer.send(peer.seg(ack_off=first[-1].seq + mss - peer.rcv_nxt))  # the hole arrived
    peer.rcv_nxt = (first[-1].seq + mss) & 0xFFFFFFFF
    info = h.info(peer.conn)
    assert info["cwnd"] == info["ssthresh"] == 7 and info["packets_out"] == 0
    for idle, grown in ((0.0, 7), (1.9, 10)):
        h.advance(idle)
        h.write(peer.conn, b"d" * (mss * 7))
        out = [s for s in h.flush() if s.payload]
        assert len(out) == 7
        h.advance(0.0005)
        peer.send(peer.seg(ack_off=out[-1].seq + mss - peer.rcv_nxt))
        peer.rcv_nxt = (out[-1].seq + mss) & 0xFFFFFFFF
        assert h.info(peer.conn)["cwnd"] == grown
    h.close()


def test_rto_timestamp_echo_of_a_retransmission_ends_the_backoff(h, peer):
    # RFC 7323 §4 / RFC 6298 §5: the echo of the retransmission's TSval is a
    # valid RTT sample although the segment was sent twice
    rtt_sample(h, peer)
    h.write(peer.conn, b"x" * 100)
    h.flush()
    resent = until_rto(h)
    assert resent and h.info(peer.conn)["backoff"] == 1
    h.advance(0.05)
    peer.ts_recent = resent[0].options["ts"][0]
    peer.rcv_nxt += 100
    h.write(peer.conn, b"y" * 100)
    peer.send(peer.seg())
    info = h.info(peer.conn)
    assert info["backoff"] == 0 and info["packets_out"] == 1
    assert info["timer_ms"] <= info["rto_us"] // 1000  # not doubled


def test_rto_without_timestamps_keeps_the_backoff_until_a_valid_sample(h):
    # Karn (RFC 6298 §5.7 with §3): an ACK of retransmitted data alone is
    # no sample without timestamps; the backed-off RTO stays
    p = Peer(h, PORT, ts=False)
    p.connect()
    h.write(p.conn, b"k" * 100)
    h.flush()
    until_rto(h)
    assert h.info(p.conn)["backoff"] == 1
    p.send(p.seg(ack_off=100))
    p.rcv_nxt += 100
    assert h.info(p.conn)["backoff"] == 1
    h.write(p.conn, b"n" * 100)
    assert p.absorb(h.flush())
    h.advance(0.002)
    p.send(p.seg())  # new data, sent once: a valid sample
    assert h.info(p.conn)["backoff"] == 0


def test_rto_does_not_mark_lost_what_was_sent_within_an_rtt(h, peer):
    # RFC 8985 §6.3: the head is lost; a segment sent less than RACK.rtt
    # before the RTO is still on its way and is not sent again
    rtt_sample(h, peer, 0.005)
    mss = h.info(peer.conn)["mss"]
    h.write(peer.conn, b"o" * (mss * 4))
    old = [s for s in h.flush() if s.payload]
    probe = [s for s in h.advance(0.011) if s.payload]  # the tail loss probe
    assert probe and probe[0].seq == old[-1].seq
    h.advance(h.info(peer.conn)["timer_ms"] / 1000 - 0.002)
    assert h.counters()["rto_expired"] == 0
    h.write(peer.conn, b"n" * (mss * 4))
    recent = [s for s in h.flush() if s.payload]
    assert len(old) == len(recent) == 4
    resent = []
    while not h.counters()["rto_expired"]:
        resent += [s for s in h.advance(0.001) if s.payload]
    info = h.info(peer.conn)
    assert info["lost_out"] == 4  # the old ones only
    assert resent and resent[0].seq == old[0].seq
    assert {s.seq for s in resent} <= {s.seq for s in old}


def test_rto_keeps_the_sack_scoreboard_unless_the_peer_reneged(h, peer):
    mss = h.info(peer.conn)["mss"]
    h.write(peer.conn, b"k" * (mss * 6))
    segs = [s for s in h.flush() if s.payload]
    peer.send(peer.seg(options=sack_opts(peer, (segs[4].seq, segs[5].seq + mss))))
    assert h.info(peer.conn)["sacked_out"] == 2
    until_rto(h)
    info = h.info(peer.conn)
    assert h.counters()["rto_expired"] == 1 and info["sacked_out"] == 2
    # a SACK of the first unacknowledged segment that the RTO finds still
    # unacknowledged: the peer threw it away (RFC 2018 §8), trust no SACK
    peer.send(peer.seg(options=sack_opts(peer, (segs[0].seq, segs[1].seq))))
    assert h.info(peer.conn)["sacked_out"] == 3
    until_rto(h, 2)
    info = h.info(peer.conn)
    assert info["sacked_out"] == 0 and info["lost_out"] == 6


def test_zero_window_probe_then_resume(h, peer):
    peer.send(peer.seg(window=0))
    h.write(peer.conn, b"w" * 3000)
    assert [s for s in h.flush() if s.payload] == []
    probes = h.advance(1.5)
    assert probes and h.counters()["zero_window_probes"] >= 1
    out = peer.send(peer.seg(window=1000))
    data = [s for s in out if s.payload]
    assert data and sum(len(s.payload) for s in data) <= 1000 << 7


# ---- keep-alive ------------------------------------------------------------------

def test_keepalive_probes_then_timeout(h, peer):
    for opt, val in ((lib.SL_OPT_KEEPIDLE, 1), (lib.SL_OPT_KEEPINTVL, 1),
                     (lib.SL_OPT_KEEPCNT, 2), (lib.SL_OPT_KEEPALIVE, 1)):
        assert lib.sl_conn_setopt(h.ptr, peer.conn, opt, val) == 0
    closed = []
    for _ in range(10):
        h.advance(1.0)
        closed += h.take_events(CLOSED)
    c = h.counters()
    assert c["keepalive_probes"] == 2
    assert closed and closed[0].err == -errno.ETIMEDOUT


def test_keepalive_answered_keeps_the_connection(h, peer):
    lib.sl_conn_setopt(h.ptr, peer.conn, lib.SL_OPT_KEEPIDLE, 1)
    lib.sl_conn_setopt(h.ptr, peer.conn, lib.SL_OPT_KEEPINTVL, 1)
    lib.sl_conn_setopt(h.ptr, peer.conn, lib.SL_OPT_KEEPCNT, 2)
    lib.sl_conn_setopt(h.ptr, peer.conn, lib.SL_OPT_KEEPALIVE, 1)
    for _ in range(6):
        h.advance(1.0)
        peer.send(peer.seg())  # the peer answers each probe
    assert h.take_events(CLOSED) == [] and h.counters()["conns"] == 1


# ---- closing (RFC 9293 §3.6) ------------------------------------------------------

def test_active_close_to_time_wait_and_gone(h, peer):
    assert lib.sl_conn_close(h.ptr, peer.conn) == 0
    out = h.flush()
    fin = [s for s in out if s.has("F")]
    assert fin and h.info(peer.conn)["state"] == 5  # FIN-WAIT-1
    peer.rcv_nxt = fin[0].seq + 1
    peer.send(peer.seg())
    assert h.info(peer.conn)["state"] == 6  # FIN-WAIT-2
    out = peer.send(peer.seg(flags="FA"))
    peer.snd_nxt += 1
    assert out and out[-1].ack == peer.snd_nxt
    assert h.info(peer.conn)["state"] == 10  # TIME-WAIT
    h.advance(2.5)
    assert h.counters()["conns"] == 0 and frames_idle(h)


def test_passive_close_eof_then_last_ack(h, peer):
    peer.send(peer.seg(flags="FA"))
    peer.snd_nxt += 1
    assert len(h.take_events(EOF)) == 1
    assert h.info(peer.conn)["state"] == 7  # CLOSE-WAIT
    lib.sl_conn_close(h.ptr, peer.conn)
    fin = [s for s in h.flush() if s.has("F")]
    assert fin and h.info(peer.conn)["state"] == 9  # LAST-ACK
    peer.rcv_nxt = fin[0].seq + 1
    peer.send(peer.seg())
    assert h.counters()["conns"] == 0 and frames_idle(h)


def test_simultaneous_close_goes_through_closing(h, peer):
    lib.sl_conn_close(h.ptr, peer.conn)
    fin = [s for s in h.flush() if s.has("F")][0]
    # the peer's FIN crosses ours: it does not ACK our FIN yet
    peer.send(peer.seg(flags="FA"))
    peer.snd_nxt += 1
    assert h.info(peer.conn)["state"] == 8  # CLOSING
    peer.rcv_nxt = fin.seq + 1
    peer.send(peer.seg())
    assert h.info(peer.conn)["state"] == 10  # TIME-WAIT


def test_half_close_keeps_receiving(h, peer):
    assert lib.sl_conn_shutdown_write(h.ptr, peer.conn) == 0
    fin = [s for s in h.flush() if s.has("F")][0]
    peer.rcv_nxt = fin.seq + 1
    peer.send(peer.seg())
    peer.deliver(b"still talking")
    assert [e.data for e in h.take_events(DATA)] == [b"still talking"]
    assert h.write(peer.conn, b"no") == -errno.EPIPE


def test_time_wait_new_syn_reopens(h, peer):
    lib.sl_conn_close(h.ptr, peer.conn)
    fin = [s for s in h.flush() if s.has("F")][0]
    peer.rcv_nxt = fin.seq + 1
    peer.send(peer.seg(flags="FA"))
    peer.snd_nxt += 1
    assert h.counters()["conns_time_wait"] == 1
    syn = tcp_frame(sport=peer.sport, dport=PORT, seq=peer.snd_nxt + 100_000, flags="S",
                    options=peer.options(syn=True))
    out = peer.send(syn)
    assert out and out[0].has("SA")
    assert h.counters()["conns_time_wait"] == 0


def test_data_after_close_is_answered_with_rst(h, peer):
    lib.sl_conn_close(h.ptr, peer.conn)
    h.flush()
    out = peer.send(peer.seg(payload=b"too late"))
    assert any(s.has("R") for s in out)
    assert h.counters()["drop_data_after_close"] == 1 and h.counters()["conns"] == 0


def test_abort_sends_rst_and_frees(h, peer):
    h.write(peer.conn, b"pending" * 1000)
    assert lib.sl_conn_abort(h.ptr, peer.conn) == 0
    out = h.flush()
    assert any(s.has("R") for s in out)
    assert h.counters()["conns"] == 0 and frames_idle(h)
    assert lib.sl_conn_write(h.ptr, peer.conn, ffi.from_buffer(b"x"), 1) == -errno.ENOTCONN


# ---- receive window and reading (flow control) -------------------------------------

def test_pause_reading_closes_the_window_and_resume_reopens(h):
    h2 = Harness(rcvbuf=16384)
    h2.listen(PORT)
    p = Peer(h2, PORT, ws=None)
    p.connect()
    assert lib.sl_conn_pause_reading(h2.ptr, p.conn) == 0
    windows = [p.deliver(b"p" * 1024)[-1].window for _ in range(16)]
    assert windows == [16384 - 1024 * (i + 1) for i in range(16)]  # closing, to 0
    assert h2.take_events(DATA) == []
    assert h2.info(p.conn)["rxq_bytes"] == 16384 and h2.info(p.conn)["rcv_wnd"] == 0
    assert lib.sl_conn_resume_reading(h2.ptr, p.conn) == 0
    update = h2.advance(0)
    data = b"".join(e.data for e in h2.take_events(DATA))
    assert data == b"p" * 16384
    update += h2.flush()
    assert update and update[-1].window > 0
    h2.close()


@pytest.mark.parametrize("ws", [7, None])
def test_a_drained_buffer_offers_the_same_window_in_every_segment(h, ws):
    """Request, response, request, ...: the app reads every request, so
    every response offers the same window field, as Linux's does; a right
    edge kept in place would shrink the field with each request and turn
    the peer's header prediction (its receive fast path) off."""
    p = Peer(h, PORT, sport=42000, ws=ws)
    p.connect()
    fields = []
    for _ in range(20):
        p.deliver(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert len(h.take_events(DATA)) == 1
        h.write(p.conn, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        out = [s for s in h.flush() if s.payload]
        assert len(out) == 1
        p.absorb(out)
        fields.append(out[0].window)
    assert len(set(fields)) == 1, fields
    info = h.info(p.conn)
    offered = (info["rcv_adv"] - info["rcv_nxt"]) & 0xFFFFFFFF
    assert offered >= 16384
    assert offered == 65535 if ws is None else 0 <= info["rcv_wnd"] - offered < 1 << 14


def test_window_edge_never_moves_back_and_grows_in_one_step():
    """Held data: the right edge stays where it was (RFC 9293 §3.8.6);
    read again, the window grows back in one step, not byte by byte, and
    then keeps its size."""
    h = Harness(rcvbuf=16384)
    h.listen(PORT)
    p = Peer(h, PORT, sport=42001, ws=None)
    p.connect()
    lib.sl_conn_pause_reading(h.ptr, p.conn)
    edges = []
    for _ in range(6):
        seg = p.deliver(b"q" * 1000)[-1]
        edges.append(seg.ack + seg.window)
    assert len(set(edges)) == 1  # held data: the edge stays
    lib.sl_conn_resume_reading(h.ptr, p.conn)
    update = h.advance(0)
    assert h.take_events(DATA) and update
    assert update[-1].ack + update[-1].window >= edges[-1] + 6000
    fields = []
    for _ in range(5):
        p.deliver(b"r" * 10)
        h.take_events(DATA)
        h.write(p.conn, b"x")
        out = [s for s in h.flush() if s.payload]
        p.absorb(out)
        fields.append(out[-1].window)
    assert fields == [16384] * 5
    h.close()


# ---- SYN cookies (RFC 4987) -------------------------------------------------------

def test_syn_cookies_when_the_queue_is_full():
    h = Harness()
    h.listen(PORT, backlog=2)
    # two half-open handshakes fill the SYN queue
    for sport in (50001, 50002):
        h.inject(tcp_frame(sport=sport, dport=PORT, seq=1, flags="S", options=opt_mss(1460)))
    h.flush()
    p = Peer(h, PORT, sport=50003)
    out = p.send(tcp_frame(sport=50003, dport=PORT, seq=p.isn, flags="S",
                           options=opt_mss(1460) + OPT_SACK_PERM + opt_ws(7)
                           + b"\x01\x01" + opt_ts(1, 0)))
    sa = out[0]
    assert sa.has("SA") and h.counters()["syncookies_sent"] == 1
    assert h.counters()["conns"] == 2  # no state kept for the third
    assert "ws" not in sa.options and "ts" not in sa.options
    # a forged ACK does not pass
    bad = p.send(tcp_frame(sport=50003, dport=PORT, seq=p.isn + 1, ack=sa.seq + 2, flags="A"))
    assert bad and bad[0].has("R")
    # the real one makes an established connection, with its data
    h.inject(tcp_frame(sport=50003, dport=PORT, seq=p.isn + 1, ack=sa.seq + 1, flags="PA",
                       payload=b"GET / HTTP/1.1\r\n\r\n", options=b""))
    h.flush()
    acc = h.take_events(ACCEPT)
    assert len(acc) == 1 and h.counters()["syncookies_ok"] == 1
    assert [e.data for e in h.take_events(DATA)] == [b"GET / HTTP/1.1\r\n\r\n"]
    h.close()


def test_syn_cookie_expires():
    h = Harness()
    h.listen(PORT, backlog=1)
    h.inject(tcp_frame(sport=50001, dport=PORT, seq=1, flags="S"))
    out = Peer(h, PORT).send(tcp_frame(sport=50009, dport=PORT, seq=9, flags="S"))
    sa = [s for s in out if s.has("SA")][0]
    h.advance(200)  # more than two 64-second ticks
    late = Peer(h, PORT).send(tcp_frame(sport=50009, dport=PORT, seq=10, ack=sa.seq + 1,
                                        flags="A"))
    assert late and late[0].has("R") and h.counters()["syncookies_ok"] == 0
    h.close()


# ---- malformed input: counted and dropped ---------------------------------------------

@pytest.mark.parametrize("frame,counter", [
    (tcp_frame(sport=1, dport=PORT, seq=1, flags="S", bad_checksum=True), "drop_bad_tcp_checksum"),
    (tcp_frame(sport=1, dport=PORT, seq=1, flags="S")[:40], "drop_short"),
    (tcp_frame(sport=1, dport=PORT, seq=1, flags="SF"), "drop_bad_tcp_flags"),
    (tcp_frame(sport=1, dport=PORT, seq=1, flags="S", options=b"\x02\x09\x05\xb4"),
     "drop_bad_tcp_options"),
    (tcp_frame(sport=1, dport=PORT, seq=1, flags="S", src="224.0.0.1"), "drop_bad_source"),
    (tcp_frame(sport=1, dport=PORT, seq=1, flags="S", dst="10.99.0.3"), "drop_not_our_ip"),
    (tcp_frame(sport=1, dport=PORT, seq=1, flags="S", dst_mac=b"\x02" * 6), "drop_bad_mac"),
])
def test_malformed_frames_are_counted(h, frame, counter):
    before = h.counters()[counter]
    h.inject(frame)
    assert h.flush() == []
    assert h.counters()[counter] == before + 1
    assert h.counters()["conns"] == 0


def test_receive_budget_closes_windows_of_holders():
    """Engine-wide: when readers hold more than rx_budget, connections that
    hold data offer no new window (backpressure, not memory)."""
    h = Harness(rcvbuf=16384, rx_budget=20000)
    h.listen(PORT)
    a, b = Peer(h, PORT, sport=40001, ws=None), Peer(h, PORT, sport=40002, ws=None)
    a.connect()
    b.connect()
    for p in (a, b):
        lib.sl_conn_pause_reading(h.ptr, p.conn)
    for _ in range(16):
        a.deliver(b"a" * 1024)
    assert h.info(a.conn)["rcv_wnd"] == 0
    for _ in range(4):
        b.deliver(b"b" * 1024)
    # b holds 4 KiB with 12 KiB of its own buffer free, but the engine is
    # over budget (20 KiB held): b's window closes too
    assert h.counters()["rx_held"] == 20480
    assert h.info(b.conn)["rcv_wnd"] == 0
    lib.sl_conn_resume_reading(h.ptr, a.conn)
    h.advance(0)
    assert h.counters()["rx_held"] == 4096
    assert h.info(b.conn)["rcv_wnd"] == 16384 - 4096
    h.close()


# ---- GSO super-frames (tx_gso.c; a test engine captures them with tx_gso="on") ----
#
# A run of full segments leaves as one super-frame: a virtio_net_hdr asking
# for TCPv4 segmentation at the MSS, and one frame whose TCP checksum field
# holds the pseudo-header sum.  tcpkit.Super.segments() cuts it as the
# kernel does, so the peer below sees ordinary segments.

@pytest.fixture
def gh():
    harness = Harness(time_wait=2.0, retries=4, syn_retries=2, tx_gso="on")
    harness.listen(PORT)
    yield harness
    harness.close()


@pytest.fixture
def gpeer(gh):
    p = Peer(gh, PORT)
    p.connect()
    assert p.conn
    return p


def pattern(n: int) -> bytes:
    return bytes((i * 7 + i // 251) & 0xFF for i in range(n))


def test_gso_run_of_full_segments_leaves_as_one_super_frame(gh, gpeer):
    mss = gh.info(gpeer.conn)["mss"]
    assert mss == 1448  # 1460 minus the timestamp option
    data = pattern(mss * 10)
    assert gh.write(gpeer.conn, data) == len(data)
    out = gh.flush()
    assert len(gh.supers) == 1
    sf = gh.supers[0]
    assert (sf.vnet_flags, sf.gso_type) == (VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4)
    assert (sf.hdr_len, sf.gso_size, sf.csum_start, sf.csum_offset) == (66, mss, 34, 16)
    whole = sf.whole
    assert len(sf.frame) == 66 + len(data) and whole.payload == data
    assert whole.seq == gpeer.rcv_nxt and whole.ack == gpeer.snd_nxt
    assert whole.has("AP") and not whole.has("F") and "ts" in whole.options
    assert sf.partial_checksum_ok()
    # what the kernel cuts it into: ten ordinary, valid segments
    assert [len(s.payload) for s in out] == [mss] * 10
    assert all(s.checksums_ok and s.super_frame is sf for s in out)
    assert gpeer.absorb(out) == data
    c = gh.counters()
    assert (c["tx_gso_available"], c["tx_gso_frames"], c["tx_gso_segments"],
            c["tx_gso_bytes"], c["tx_gso_fallback_segments"]) == (1, 1, 10, len(data), 0)
    # accounted segment by segment, as if sent one by one
    i = gh.info(gpeer.conn)
    assert i["packets_out"] == 10 and i["snd_nxt"] == gpeer.rcv_nxt
    gpeer.send(gpeer.seg())
    i = gh.info(gpeer.conn)
    assert (i["packets_out"], i["send_queued"]) == (0, 0)


def test_gso_a_single_segment_goes_as_a_frame(gh, gpeer):
    mss = gh.info(gpeer.conn)["mss"]
    out = gh.write(gpeer.conn, pattern(mss)) and gh.flush()
    assert len(out) == 1 and out[0].super_frame is None and gh.supers == []


def test_gso_the_short_last_segment_ends_the_run_with_psh(gh, gpeer):
    mss = gh.info(gpeer.conn)["mss"]
    data = pattern(mss * 3 + 100)
    gh.write(gpeer.conn, data)
    out = gh.flush()
    assert len(gh.supers) == 1 and gh.supers[0].whole.payload == data
    assert [len(s.payload) for s in out] == [mss, mss, mss, 100]
    assert [s.has("P") for s in out] == [False, False, False, True]


def test_gso_lost_segment_is_retransmitted_alone_as_a_frame(gh, gpeer):
    mss = gh.info(gpeer.conn)["mss"]
    data = pattern(mss * 8)
    gh.write(gpeer.conn, data)
    segs = gh.flush()
    assert len(gh.supers) == 1 and len(segs) == 8
    # the peer got all but the third: its SACK block says so (RFC 6675:
    # DupThresh segments SACKed above the hole make it lost)
    out = gpeer.send(gpeer.seg(ack_off=2 * mss, options=b"\x01\x01"
                               + opt_ts(gpeer.tsval, gpeer.ts_recent) + b"\x01\x01"
                               + opt_sack((segs[3].seq, segs[7].seq + mss))))
    resent = [s for s in out if s.payload]
    assert len(resent) == 1 and resent[0].super_frame is None
    assert resent[0].seq == segs[2].seq and resent[0].payload == data[2 * mss:3 * mss]
    assert resent[0].checksums_ok  # its payload sum was never needed before
    assert len(gh.supers) == 1
    c = gh.counters()
    assert c["retransmits"] == 1 and c["tx_gso_frames"] == 1


def test_gso_rto_retransmits_segment_by_segment(gh, gpeer):
    mss = gh.info(gpeer.conn)["mss"]
    data = pattern(mss * 5)
    gh.write(gpeer.conn, data)
    gh.flush()
    assert len(gh.supers) == 1
    again = []
    for _ in range(40):
        again += [s for s in gh.advance(0.1) if s.payload]
        if gh.counters()["rto_expired"]:
            break
    assert gh.counters()["rto_expired"] == 1
    assert again and all(s.super_frame is None and s.checksums_ok for s in again)
    assert again[-1].payload == data[:mss]  # after the RTO, the head first
    assert len(gh.supers) == 1


def test_gso_peer_window_cuts_the_run(gh):
    p = Peer(gh, PORT, ws=None)
    p.connect()
    mss = gh.info(p.conn)["mss"]
    p.send(p.seg(window=4 * mss + 10))
    data = pattern(mss * 10)
    gh.write(p.conn, data)
    out = gh.flush()
    assert len(gh.supers) == 1 and len(out) == 4  # the window holds four
    assert p.absorb(out) == data[:4 * mss]
    # the window opens by one and a half segments: one full segment fits, alone
    out = p.send(p.seg(window=mss + mss // 2))
    assert [len(s.payload) for s in out if s.payload] == [mss]
    assert out[-1].super_frame is None and len(gh.supers) == 1
    assert p.absorb(out) == data[4 * mss:5 * mss]
    # then wide open: the rest as one super-frame
    out = p.send(p.seg(window=65535))
    assert len(gh.supers) == 2 and p.absorb(out) == data[5 * mss:]


def test_gso_shrinking_window_stops_new_data(gh):
    p = Peer(gh, PORT, ws=None)
    p.connect()
    mss = gh.info(p.conn)["mss"]
    p.send(p.seg(window=8 * mss))
    data = pattern(mss * 20)
    gh.write(p.conn, data)
    got = p.absorb(gh.flush())
    assert got == data[:8 * mss]
    # RFC 9293 §3.8.6: the peer moves its right edge back (it should not):
    # nothing new goes beyond it, nothing is lost
    out = p.send(p.seg(ack_off=-4 * mss, window=2 * mss))
    assert [s for s in out if s.payload] == []
    for _ in range(20):
        out = p.send(p.seg(window=3 * mss))
        got += p.absorb(out)
        if len(got) == len(data):
            break
    assert got == data
    assert all(len(sf.segments()) <= 3 for sf in gh.supers[1:])


def test_gso_zero_window_probe_then_super_frames(gh, gpeer):
    mss = gh.info(gpeer.conn)["mss"]
    gpeer.send(gpeer.seg(window=0))
    data = pattern(mss * 6)
    gh.write(gpeer.conn, data)
    assert [s for s in gh.flush() if s.payload] == []
    probes = gh.advance(1.5)
    assert probes and all(s.super_frame is None for s in probes)
    assert gh.counters()["zero_window_probes"] >= 1 and gh.supers == []
    out = gpeer.send(gpeer.seg(window=1000))  # scaled by 7: room for all
    assert len(gh.supers) == 1 and gpeer.absorb(out) == data


def test_gso_fin_rides_on_the_last_segment(gh, gpeer):
    mss = gh.info(gpeer.conn)["mss"]
    data = pattern(mss * 3 + 7)
    gh.write(gpeer.conn, data)
    assert lib.sl_conn_shutdown_write(gh.ptr, gpeer.conn) == 0
    out = gh.flush()
    assert len(gh.supers) == 1 and gh.supers[0].whole.has("FP")
    assert [s.has("F") for s in out] == [False, False, False, True]
    assert gpeer.absorb(out) == data and gpeer.rcv_nxt == out[-1].seq + 7 + 1
    assert gh.info(gpeer.conn)["state"] == 5  # FIN-WAIT-1
    gpeer.send(gpeer.seg())
    assert gh.info(gpeer.conn)["state"] == 6  # FIN-WAIT-2: the FIN was acknowledged


def test_gso_nagle_holds_the_short_tail(gh, gpeer):
    mss = gh.info(gpeer.conn)["mss"]
    gh.write(gpeer.conn, b"!")
    gpeer.absorb(gh.flush())  # one byte in flight, unacknowledged
    data = pattern(2 * mss + 500)
    gh.write(gpeer.conn, data)
    out = gh.flush()
    assert len(gh.supers) == 1 and [len(s.payload) for s in out] == [mss, mss]
    gpeer.absorb(out)
    out = gpeer.send(gpeer.seg())  # all acknowledged: the tail goes
    assert [len(s.payload) for s in out if s.payload] == [500]


def test_gso_small_mss_and_no_timestamps(gh):
    p = Peer(gh, PORT, ts=False, mss=536)
    p.connect()
    data = pattern(536 * 7 + 1)
    gh.write(p.conn, data)
    out = gh.flush()
    assert len(gh.supers) == 1
    sf = gh.supers[0]
    assert (sf.hdr_len, sf.gso_size) == (54, 536) and sf.partial_checksum_ok()
    assert all(s.checksums_ok for s in out) and p.absorb(out) == data


def test_gso_congestion_window_and_64k_bound_the_run(gh, gpeer):
    mss = gh.info(gpeer.conn)["mss"]
    data = pattern(mss * 300)
    assert gh.write(gpeer.conn, data) == len(data)
    got = b""
    for _ in range(50):
        out = gh.flush() if not got else gpeer.send(gpeer.seg())
        got += gpeer.absorb(out)
        if len(got) == len(data):
            break
    assert got == data
    sizes = [len(sf.segments()) for sf in gh.supers]
    assert sizes[0] == 10  # the initial window (RFC 6928)
    assert max(sizes) == 45  # 45 * 1448 + 66 header bytes fit in 64 KiB, 46 do not
    assert all(len(sf.frame) <= 65535 for sf in gh.supers)
    c = gh.counters()
    assert c["tx_gso_segments"] == 300 and c["tx_gso_bytes"] == len(data)


def test_gso_off_sends_every_segment_as_a_frame(h, peer):
    """The default of a test engine (auto means off without a socket), and
    tx_gso="off" anywhere: one frame per segment, as before."""
    mss = h.info(peer.conn)["mss"]
    h.write(peer.conn, pattern(mss * 10))
    out = h.flush()
    assert len(out) == 10 and all(s.super_frame is None for s in out)
    c = h.counters()
    assert (c["tx_gso_available"], c["tx_gso_frames"], c["tx_gso_fallback_segments"]) == (0, 0, 0)
    off = Harness(tx_gso="off")
    off.listen(PORT)
    p = Peer(off, PORT)
    p.connect()
    off.write(p.conn, pattern(mss * 10))
    assert len(off.flush()) == 10 and off.supers == []
    off.close()


def test_gso_setting_is_checked():
    with pytest.raises(ValueError, match="tx_gso"):
        Harness(tx_gso="maybe")


def test_cc_setting_is_checked():
    with pytest.raises(ValueError, match="cc must be one of cubic, reno"):
        Harness(cc="bbr")


# ---- sendfile's file segments (tcp_queue_file): the file is the send buffer ----
#
# With super-frames, sendfile queues references to the file, not copies: a
# run goes as one super-frame (spliced from the page cache on a real engine;
# read into the test capture here), a lone or lost segment is read into a
# frame when it is sent.  The engine keeps a dup() of the descriptor until
# the last segment is acknowledged and the sendfile is over (the engine holds
# the file between one loop.sendfile()'s calls: sl_conn_sendfile_end).

def sendfile(h: Harness, conn: int, path, offset: int, count: int) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        return lib.sl_conn_sendfile(h.ptr, conn, fd, offset, count)
    finally:
        os.close(fd)  # the engine holds its own


def sendfile_end(h: Harness, conn: int) -> None:
    """What loop.sendfile() does when it is over."""
    assert lib.sl_conn_sendfile_end(h.ptr, conn) == 0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_gso_sendfile_segments_reference_the_file_and_retransmit_byte_exact(gh, gpeer,
                                                                           tmp_path):
    mss = gh.info(gpeer.conn)["mss"]
    data = os.urandom(mss * 8 + 100)
    path = tmp_path / "f.bin"
    path.write_bytes(b"head" + data)
    fds = open_fds()
    assert sendfile(gh, gpeer.conn, path, 4, len(data) + 50) == len(data)  # to the end
    c = gh.counters()
    assert c["files_open"] == 1 and c["frames_sndq"] == 0  # no copy queued
    assert open_fds() == fds + 1
    segs = gh.flush()
    # eight full segments and the short tail in one super-frame
    assert len(gh.supers) == 1 and gh.supers[0].whole.payload == data
    assert gh.supers[0].partial_checksum_ok()
    assert [len(s.payload) for s in segs] == [mss] * 8 + [100]
    assert all(s.checksums_ok for s in segs)
    # the third is lost: read from the file again, alone, byte-exact
    out = gpeer.send(gpeer.seg(ack_off=2 * mss, options=b"\x01\x01"
                               + opt_ts(gpeer.tsval, gpeer.ts_recent) + b"\x01\x01"
                               + opt_sack((segs[3].seq, segs[8].seq + 100))))
    resent = [s for s in out if s.payload]
    assert len(resent) == 1 and resent[0].super_frame is None
    assert resent[0].seq == segs[2].seq and resent[0].payload == data[2 * mss:3 * mss]
    assert resent[0].checksums_ok
    c = gh.counters()
    assert c["file_reads_retransmit"] == 1 and c["retransmits"] == 1
    assert c["file_reads"] == 2  # the run for the capture, the retransmission
    sendfile_end(gh, gpeer.conn)
    assert gh.counters()["files_open"] == 1  # the queued segments keep it
    # all acknowledged: the engine's descriptor is closed, nothing held
    gpeer.send(gpeer.seg(ack_off=len(data)))
    c = gh.counters()
    assert c["files_open"] == 0 and c["file_short_reads"] == 0 and frames_idle(gh)
    assert open_fds() == fds


def test_writers_short_of_segments_wait_in_line_without_wakeups_that_find_none(tmp_path):
    """sendfile's segments come from the engine's shared pool.  Writers that
    found it empty wait in line: no poll wakes them while it stays empty
    (each such WRITABLE would cost the app a callback that queues nothing,
    every poll, for every waiter), and when it frees up the oldest go
    first, as many as it has a share for."""
    h = Harness(time_wait=2.0, retries=4, syn_retries=2, frame_count=1024, tx_gso="on")
    try:
        h.listen(PORT)
        peers = [Peer(h, PORT, sport=41000 + i) for i in range(6)]
        for p in peers:
            p.connect()
        path = tmp_path / "f.bin"
        path.write_bytes(os.urandom(1 << 20))
        index = {p.conn: i for i, p in enumerate(peers)}
        assert sendfile(h, peers[0].conn, path, 0, 1 << 20) == 1 << 20
        assert 0 < sendfile(h, peers[1].conn, path, 0, 1 << 20) < 1 << 20  # the pool ends
        for p in peers[2:]:   # in this order
            assert sendfile(h, p.conn, path, 0, 1 << 20) == -errno.EAGAIN
        h.events.clear()
        wasted = 0
        for _ in range(3):
            h.advance(0.0001)
            for e in h.take_events(WRITABLE):   # what an app does with one
                wasted += sendfile(h, e.conn, path, 0, 1 << 20) == -errno.EAGAIN
        assert wasted == 0
        # the first writer goes away: its segments come back, and the
        # waiters are woken oldest first
        peers[0].send(peers[0].seg(flags="R"))
        h.advance(0.0001)
        woken = [index[e.conn] for e in h.take_events(WRITABLE)]
        assert woken == [2, 3, 4, 5]
    finally:
        h.close()


def test_writers_short_of_frames_are_woken_oldest_first_a_share_at_a_time():
    h = Harness(time_wait=2.0, retries=4, syn_retries=2, frame_count=1024)
    try:
        h.listen(PORT)
        peers = [Peer(h, PORT, sport=42000 + i) for i in range(42)]
        for p in peers:
            p.connect()
        index = {p.conn: i for i, p in enumerate(peers)}
        wrote = [h.write(p.conn, b"x" * (1 << 20)) for p in peers]
        assert wrote[0] == 1 << 20 and wrote[2:] == [0] * 40   # the pool ran out
        h.flush()
        h.events.clear()
        peers[0].send(peers[0].seg(flags="R"))   # its frames come back
        h.advance(0.0001)
        first = [index[e.conn] for e in h.take_events(WRITABLE)]
        # the oldest waiters, and not all 41 at once for 700-odd frames
        assert first == list(range(1, 1 + len(first))) and 1 < len(first) < 41
        h.advance(0.0001)   # they wrote nothing: the next in line
        second = [index[e.conn] for e in h.take_events(WRITABLE)]
        assert second[0] == 1 + len(first)
    finally:
        h.close()


def test_gso_sendfile_keeps_whole_segments_and_splits_for_a_narrow_window(gh, tmp_path):
    p = Peer(gh, PORT, ws=None)
    p.connect()
    mss = gh.info(p.conn)["mss"]
    data = os.urandom(mss * 6)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    p.send(p.seg(window=mss // 2))
    assert sendfile(gh, p.conn, path, 0, len(data)) == len(data)
    sendfile_end(gh, p.conn)
    out = gh.flush()
    got = p.absorb(out)
    assert got == data[:mss // 2]  # split by reference, read when sent
    for _ in range(20):
        got += p.absorb(p.send(p.seg(window=65535)))
        if len(got) == len(data):
            break
    assert got == data
    p.send(p.seg())
    assert gh.counters()["files_open"] == 0 and frames_idle(gh)


def test_gso_sendfile_file_truncated_under_the_queue_aborts_the_connection(gh, gpeer,
                                                                          tmp_path):
    mss = gh.info(gpeer.conn)["mss"]
    data = os.urandom(mss * 40)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    fds = open_fds()
    assert sendfile(gh, gpeer.conn, path, 0, len(data)) == len(data)
    first = gh.flush()  # the initial window: ten segments
    assert gpeer.absorb(first) == data[:10 * mss]
    os.truncate(path, 12 * mss)  # the rest of what was queued is gone
    out = gpeer.send(gpeer.seg())
    out += gh.advance(0)  # the abort comes with the next poll's events
    # never a wrong byte (the run read short: none of it went), then
    # RFC 9293 §3.10.5 ABORT: a RST
    assert [s for s in out if s.has("R")]
    assert all(s.seq + len(s.payload) <= gpeer.rcv_nxt + 2 * mss for s in out if s.payload)
    got = gpeer.absorb(out)
    assert got == data[10 * mss:10 * mss + len(got)]
    events = gh.take_events(CLOSED)
    assert len(events) == 1 and events[0].err == -errno.EIO
    c = gh.counters()
    assert c["file_short_reads"] == 1 and c["files_open"] == 0 and frames_idle(gh)
    assert open_fds() == fds



def test_gso_sendfile_next_call_shares_the_file_and_its_run(gh, gpeer, tmp_path):
    mss = gh.info(gpeer.conn)["mss"]
    data = os.urandom(mss * 6)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert sendfile(gh, gpeer.conn, path, 0, 3 * mss) == 3 * mss
    assert sendfile(gh, gpeer.conn, path, 3 * mss, 3 * mss) == 3 * mss
    assert gh.counters()["files_open"] == 1  # one descriptor for both calls
    out = gh.flush()
    assert len(gh.supers) == 1 and gh.supers[0].whole.payload == data
    assert gpeer.absorb(out) == data
    gpeer.send(gpeer.seg())
    # all acknowledged, but the sendfile goes on: the engine holds the file
    # for its next call (no descriptor or mapping made again)
    assert gh.counters()["files_open"] == 1
    sendfile_end(gh, gpeer.conn)
    assert gh.counters()["files_open"] == 0 and frames_idle(gh)
    assert lib.sl_conn_sendfile_end(gh.ptr, 12345) == -errno.ENOTCONN


# ---- keyed hashes (siphash.c) -------------------------------------------------------

def _siphash(key: bytes, msg: bytes, c: int, d: int) -> int:
    """SipHash-c-d as the paper (Aumasson, Bernstein 2012) defines it."""
    mask = (1 << 64) - 1

    def rotl(x: int, b: int) -> int:
        return ((x << b) | (x >> (64 - b))) & mask

    def rounds(v: list[int], n: int) -> None:
        for _ in range(n):
            v[0] = (v[0] + v[1]) & mask
            v[1] = rotl(v[1], 13) ^ v[0]
            v[0] = rotl(v[0], 32)
            v[2] = (v[2] + v[3]) & mask
            v[3] = rotl(v[3], 16) ^ v[2]
            v[0] = (v[0] + v[3]) & mask
            v[3] = rotl(v[3], 21) ^ v[0]
            v[2] = (v[2] + v[1]) & mask
            v[1] = rotl(v[1], 17) ^ v[2]
            v[2] = rotl(v[2], 32)

    k0, k1 = int.from_bytes(key[:8], "little"), int.from_bytes(key[8:], "little")
    v = [k0 ^ 0x736f6d6570736575, k1 ^ 0x646f72616e646f6d,
         k0 ^ 0x6c7967656e657261, k1 ^ 0x7465646279746573]
    tail = len(msg) % 8
    words = [int.from_bytes(msg[i:i + 8], "little") for i in range(0, len(msg) - tail, 8)]
    words.append(int.from_bytes(msg[len(msg) - tail:], "little") | (len(msg) & 0xFF) << 56)
    for m in words:
        v[3] ^= m
        rounds(v, c)
        v[0] ^= m
    v[2] ^= 0xFF
    rounds(v, d)
    return v[0] ^ v[1] ^ v[2] ^ v[3]


def test_siphash_matches_the_reference():
    key = bytes(range(16))
    # the paper's test vector (Appendix A): SipHash-2-4 of 00..0e
    assert _siphash(key, bytes(range(15)), 2, 4) == 0xA129CA6149BE45E5
    ckey = ffi.new("uint64_t[2]", [int.from_bytes(key[:8], "little"),
                                   int.from_bytes(key[8:], "little")])
    for n in range(65):
        msg = bytes(range(n))
        buf = ffi.new("uint8_t[]", msg or b"\0")
        assert lib.siphash24(ckey, buf, n) == _siphash(key, msg, 2, 4), n
        assert lib.siphash13(ckey, buf, n) == _siphash(key, msg, 1, 3), n


def test_sndbuf_follows_the_window_from_the_configured_floor_to_4_mib():
    # Linux's tcp_sndbuf_expand(): a window wider than the configured send
    # buffer could never be filled; the buffer grows to twice the window's
    # payload (the configured size stays the floor), up to 4 MiB
    floor = 64 << 10
    h = Harness(sndbuf=floor)
    h.listen(PORT)
    peer = Peer(h, PORT)
    peer.connect()
    mss = h.info(peer.conn)["mss"]
    window = 65535      # x 2**7 (the peer's window scale): no limit here
    assert lib.sl_conn_getopt(h.ptr, peer.conn, lib.SL_OPT_SNDBUF) == floor
    assert h.write(peer.conn, bytes(1 << 20)) == floor
    queued = floor
    segs = h.flush()
    # slow start: every ACK of new data grows cwnd, and the buffer with it
    for _ in range(40):
        if not peer.absorb(segs):
            break
        segs = peer.send(peer.seg(window=window))
        cwnd = h.info(peer.conn)["cwnd"]
        sndbuf = lib.sl_conn_getopt(h.ptr, peer.conn, lib.SL_OPT_SNDBUF)
        assert sndbuf == min(max(floor, 2 * cwnd * mss), 4 << 20), (cwnd, sndbuf)
        n = h.write(peer.conn, bytes(1 << 20))
        assert n >= 0
        queued += n
        # what is queued and not acknowledged never passes the buffer
        assert h.info(peer.conn)["send_queued"] <= sndbuf
        segs += h.flush()
    assert lib.sl_conn_getopt(h.ptr, peer.conn, lib.SL_OPT_SNDBUF) == 4 << 20
    assert queued > 4 << 20
    h.close()


# ---- path MTU discovery (RFC 1191; RFC 5927 §5.1) ------------------------------------

def test_pmtu_frag_needed_cuts_what_was_lost_and_what_follows(h, peer):
    mss = h.info(peer.conn)["mss"]
    data = pattern(mss * 4)
    h.write(peer.conn, data)
    sent = [s for s in h.flush() if s.payload]
    assert [len(s.payload) for s in sent] == [mss] * 4
    cwnd = h.info(peer.conn)["cwnd"]
    # a router on the way takes 1280 bytes at most: it dropped every segment
    h.inject(icmp_frag_needed(sent[1].seq, 1280))
    out = h.flush()
    new_mss = 1280 - 40 - 12
    info = h.info(peer.conn)
    assert info["mss"] == new_mss and info["cwnd"] == cwnd
    c = h.counters()
    assert (c["icmp_frag_needed"], c["pmtu_reductions"]) == (1, 1)
    lens = [len(s.payload) for s in out if s.payload]
    assert max(lens) <= new_mss and sum(lens) == len(data)
    assert all(s.checksums_ok for s in out)
    assert peer.absorb(out) == data
    peer.send(peer.seg())
    assert h.info(peer.conn)["packets_out"] == 0
    # later writes are cut to the new MSS; no timer was needed
    more = pattern(3 * new_mss)
    h.write(peer.conn, more)
    out = h.flush()
    assert [len(s.payload) for s in out if s.payload] == [new_mss] * 3
    assert peer.absorb(out) == more
    assert h.counters()["rto_expired"] == 0


def test_pmtu_super_frames_take_the_new_segment_size(gh, gpeer):
    mss = gh.info(gpeer.conn)["mss"]
    data = pattern(mss * 6)
    gh.write(gpeer.conn, data)
    sent = gh.flush()
    assert len(gh.supers) == 1 and gh.supers[0].gso_size == mss
    gh.inject(icmp_frag_needed(sent[2].seq, 1000))
    out = gh.flush()
    new_mss = 1000 - 52
    # the lost run goes again cut to the new size, frame by frame, as the
    # congestion window (10 segments, unchanged) lets it
    got = b""
    for _ in range(5):
        assert all(len(s.payload) <= new_mss for s in out)
        got += gpeer.absorb(out)
        out = gpeer.send(gpeer.seg())
        if got == data:
            break
    assert got == data and gh.info(gpeer.conn)["packets_out"] == 0
    more = pattern(new_mss * 5)
    gh.write(gpeer.conn, more)
    out = gh.flush()
    assert gh.supers[-1].gso_size == new_mss and gh.supers[-1].partial_checksum_ok()
    assert gpeer.absorb(out) == more


@pytest.mark.parametrize("kind", ["below_una", "beyond_nxt", "other_port", "bad_checksum",
                                  "port_unreachable", "not_our_segment", "short_quote"])
def test_pmtu_forged_or_foreign_icmp_changes_nothing(h, peer, kind):
    mss = h.info(peer.conn)["mss"]
    data = pattern(mss * 2)
    h.write(peer.conn, data)
    sent = [s for s in h.flush() if s.payload]
    una, nxt = sent[0].seq, sent[-1].seq + mss
    frame, counter = {
        # RFC 5927 §5.1: the quoted sequence number must be in flight
        "below_una": (icmp_frag_needed(una - 1, 576), "drop_icmp_out_of_window"),
        "beyond_nxt": (icmp_frag_needed(nxt + 1, 576), "drop_icmp_out_of_window"),
        "other_port": (icmp_frag_needed(una, 576, dport=40001), "drop_icmp_no_conn"),
        "bad_checksum": (icmp_frag_needed(una, 576, bad_checksum=True), "drop_bad_icmp"),
        "port_unreachable": (icmp_frag_needed(una, 576, code=3), "drop_icmp_ignored"),
        "not_our_segment": (icmp_frag_needed(una, 576, quoted_src="10.99.0.7"),
                            "drop_bad_icmp"),
        "short_quote": (icmp_frag_needed(una, 576, quote=6), "drop_bad_icmp"),
    }[kind]
    before = h.counters()
    h.inject(frame)
    assert h.flush() == []
    after = h.counters()
    assert after[counter] == before[counter] + 1
    assert after["icmp_frag_needed"] == before["icmp_frag_needed"]
    assert h.info(peer.conn)["mss"] == mss
    assert peer.absorb(sent) == data


@pytest.mark.parametrize("mtu, want", [(0, 500), (68, 500), (551, 500), (552, 500),
                                       (1400, 1348), (1500, None), (9000, None)])
def test_pmtu_floor_and_larger_mtus(h, peer, mtu, want):
    """Linux's floor (ip_rt_min_pmtu 552: 512 bytes of payload with
    timestamps 500) against forged tiny MTUs; an MTU no smaller than what we
    send changes nothing."""
    mss = h.info(peer.conn)["mss"]
    h.write(peer.conn, pattern(mss))
    sent = [s for s in h.flush() if s.payload]
    h.inject(icmp_frag_needed(sent[0].seq, mtu))
    out = h.flush()
    assert h.counters()["icmp_frag_needed"] == 1
    if want is None:
        assert h.info(peer.conn)["mss"] == mss and out == []
        assert h.counters()["pmtu_reductions"] == 0
    else:
        assert h.info(peer.conn)["mss"] == want
        cut = [want] * (mss // want) + ([mss % want] if mss % want else [])
        assert [len(s.payload) for s in out if s.payload] == cut
        assert peer.absorb(out) == pattern(mss)


def test_pmtu_is_kept_for_the_destination_for_ten_minutes(h, peer):
    """RFC 1191 §5: the next connection to the same peer starts with the
    path MTU learnt (Linux keeps it for ip_rt_mtu_expires, 10 minutes)."""
    mss = h.info(peer.conn)["mss"]
    h.write(peer.conn, pattern(mss))
    sent = [s for s in h.flush() if s.payload]
    h.inject(icmp_frag_needed(sent[0].seq, 1000))
    peer.absorb(h.flush())
    peer.send(peer.seg())
    second = Peer(h, PORT, sport=40001)
    second.connect()
    assert h.info(second.conn)["mss"] == 1000 - 52
    assert h.counters()["pmtu_cached"] == 1
    h.advance(601)
    third = Peer(h, PORT, sport=40002)
    third.connect()
    assert h.info(third.conn)["mss"] == mss
    assert h.counters()["pmtu_cached"] == 1
