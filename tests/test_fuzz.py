"""Hostile input into the engine's input path, as hypothesis properties.

Everything here runs on test engines (``Engine.for_test``: the whole stack,
no interface, no root, no lab).  Four groups:

(a) arbitrary bytes as frames, raw, behind a valid Ethernet header, and as
    TCP headers inside a valid IPv4 header with a correct checksum;
(b) structured mutations of valid frames: truncation at every length, IP
    version/IHL/total length, IP options, fragments, checksums, every TCP
    flag combination, data offsets 0..15, malformed and huge TCP options,
    MSS 0/1, window scale > 14, SACK blocks with wild edges, sequence and
    acknowledgment numbers around 2^32 (both directions), to a listening
    port and into established connections;
(c) HTTP requests for the fast path cut into segments at every byte
    boundary (and delivered out of order) give the bytes of the uncut
    request's response;
(d) hostile HTTP (header injection, overlong lines, bad percent-encoding,
    NUL, method confusion, absolute/authority form, traversal): answered by
    the fast path with a correct response for a registered file, or handed
    to Python (ACCEPT, then DATA carrying exactly the bytes sent), and never
    the bytes of a file that is not registered.

After every example: the frames add up (frames_free + frames_fill +
frames_rx_held + frames_tx + frames_sndq == frames_total), no drop counter
went down, rx_held == rxq_bytes + ooo_bytes, every frame the stack sent is
a well-formed IPv4/TCP frame with correct checksums, and the engine still
completes a fresh handshake (and delivers data) on another port.  Tests
that end a connection check that every segment and frame came back.

The example counts keep the file at about 15 s (30 s under `make asan`);
SPECLOOP_FUZZ_SCALE=k multiplies them for long runs.

A frame the parser must drop is judged by ``must_drop``, an independent
reading of RFC 791/9293 for the header checks: the engine has to count
exactly one of the reasons that apply, send nothing and emit no event.

Bugs these tests found keep their reproductions at the end of the file.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import itertools
import os
import re
import socket
import struct

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from specloop.engine import ffi, lib

from tcpkit import (LOCAL_IP, LOCAL_MAC, OPT_SACK_PERM, PEER_IP, PEER_MAC, Harness, Peer,
                    Seg, Super, checksum, icmp_frag_needed, opt_mss, opt_sack, opt_ts, opt_ws,
                    parse, tcp_frame)

ACCEPT, DATA, EOF = lib.SL_EV_ACCEPT, lib.SL_EV_DATA, lib.SL_EV_EOF
F, S, R, P, A = 0x01, 0x02, 0x04, 0x08, 0x10

PORT = 80           # where hostile frames go (the fast path in HTTP tests)
CLOSED_PORT = 81    # nobody listens; the "secret" file is registered here
ALIVE_PORT = 7      # a second listener: the engine must still handshake on it
M32 = 1 << 32

# small engines: a fresh one per example costs half a millisecond
SMALL = dict(frame_count=512, ring_size=64, max_conns=256, frame_size=2048)

NET_DROPS = ("drop_short", "drop_bad_mac", "drop_not_ipv4", "drop_bad_ip_header",
             "drop_bad_ip_checksum", "drop_ip_fragment", "drop_not_tcp",
             "drop_not_our_ip", "drop_bad_source", "drop_bad_tcp_header",
             "drop_bad_tcp_checksum", "drop_bad_tcp_flags", "drop_bad_tcp_options",
             "drop_bad_icmp", "drop_icmp_ignored", "drop_icmp_no_conn",
             "drop_icmp_out_of_window")
# an ICMP frame is judged by net.c's parse_icmp and tcp_icmp_input: a random
# one is dropped under one of these
ICMP_DROPS = {"drop_bad_icmp", "drop_icmp_ignored", "drop_icmp_no_conn",
              "drop_icmp_out_of_window"}


def examples(n: int) -> settings:
    """Sized so that the whole file runs in well under a minute;
    SPECLOOP_FUZZ_SCALE=k runs k times as many (long runs)."""
    return settings(max_examples=n * int(os.environ.get("SPECLOOP_FUZZ_SCALE", "1")),
                    deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ---- the engine under test ---------------------------------------------------------

def check_sent_frame(frame: bytes) -> Seg:
    """What the stack transmits must be a well-formed IPv4/TCP frame from
    our address with both checksums right."""
    assert 54 <= len(frame) <= 14 + 1500, len(frame)
    assert frame[6:12] == LOCAL_MAC and frame[12:14] == b"\x08\x00"
    ip = frame[14:]
    assert ip[0] == 0x45 and ip[9] == 6
    assert struct.unpack("!H", ip[2:4])[0] == len(frame) - 14
    assert socket.inet_ntoa(ip[12:16]) == LOCAL_IP
    doff = (ip[32] >> 4) * 4
    assert 20 <= doff <= len(ip) - 20
    seg = parse(frame)
    assert seg.checksums_ok, frame.hex()
    return seg


def check_super_frame(data: bytes) -> list[Seg]:
    """A GSO super-frame must ask for TCPv4 segmentation with a partial
    checksum, hold more than one segment and fit in 64 KiB, and the
    segments the kernel cuts from it must be well-formed frames."""
    sf = Super.parse(data)
    f = sf.frame
    assert (sf.vnet_flags, sf.gso_type, sf.csum_start, sf.csum_offset) == (1, 1, 34, 16)
    assert len(f) <= 65535 and f[6:12] == LOCAL_MAC and f[12:14] == b"\x08\x00"
    assert struct.unpack("!H", f[16:18])[0] == len(f) - 14
    assert sf.hdr_len == 34 + (f[46] >> 4) * 4
    assert len(f) - sf.hdr_len > sf.gso_size > 0
    assert sf.partial_checksum_ok()
    segs = sf.segments()
    for s in segs:
        assert s.checksums_ok and 0 < len(s.payload) <= sf.gso_size
        assert sf.hdr_len + len(s.payload) <= 14 + 1500
    return segs


class Stack(Harness):
    """tcpkit's Harness on a small engine, listening on PORT and ALIVE_PORT,
    checking every frame it sends (a GSO super-frame as the segments the
    kernel cuts from it), with the end-of-example invariants."""

    def __init__(self, *, fast: bool = False, **settings_):
        super().__init__(**{**SMALL, **settings_})
        self.listener = self.listen(PORT)
        self.listen(ALIVE_PORT)
        self.sent: list[Seg] = []
        self._alive_sport = 61000
        if fast:
            register_files(self)
            assert lib.sl_listen_set_fast(self.ptr, self.listener, 1) == 0
        self.start = self.counters()

    def flush(self) -> list[Seg]:
        self.engine.flush()
        out = []
        while (got := self.engine.tx_next()) is not None:
            data, flags = got
            out += check_super_frame(data) if flags & lib.SL_TX_GSO else [check_sent_frame(data)]
        self.sent += out
        return out

    def alive(self) -> None:
        """The invariants every example ends with."""
        c = self.counters()
        assert (c["frames_free"] + c["frames_fill"] + c["frames_rx_held"] + c["frames_tx"]
                + c["frames_sndq"]) == c["frames_total"], c
        shrunk = {k: v for k, v in deltas(self.start, c).items()
                  if k.startswith("drop_") and v < 0}
        assert not shrunk, shrunk
        if "rx_held" in c:      # the engine-wide account of what connections hold
            assert c["rx_held"] == c["rxq_bytes"] + c["ooo_bytes"], c
        self._alive_sport += 1
        p = Peer(self, ALIVE_PORT, sport=self._alive_sport)
        p.connect()
        assert p.conn, "no ACCEPT for a fresh handshake on another port"
        self.events = [e for e in self.events if e.conn != p.conn]
        p.deliver(b"still alive")
        got = [e.data for e in self.take_events(DATA) if e.conn == p.conn]
        assert b"".join(got) == b"still alive"


@contextlib.contextmanager
def stack(**kw):
    s = Stack(**kw)
    try:
        yield s
        s.alive()
    finally:
        s.close()


def lib_counter_fields() -> set[str]:
    return {name for name, _ in ffi.typeof("struct sl_counters").fields}


def deltas(before: dict, after: dict) -> dict:
    """How much each (scalar) counter moved."""
    return {k: after[k] - before[k] for k in after if isinstance(after[k], int)}


def conn_events(h: Harness, conn: int, type_: int) -> list:
    return [e for e in h.events if e.conn == conn and e.type == type_]


# ---- frames built field by field ---------------------------------------------------

def tcp_bytes(*, sport: int = 40000, dport: int = PORT, seq: int = 1000, ack: int = 0,
              flags: int = A, window: int = 65535, options: bytes = b"",
              payload: bytes = b"", doff: int | None = None, urg: int = 0) -> bytes:
    """A TCP header (checksum 0) + options + payload.  Options are padded
    to 4 bytes; beyond 40 bytes they cannot be described by the data offset
    and run into the payload, as on the wire."""
    options += b"\0" * (-len(options) % 4)
    if doff is None:
        doff = min(15, (20 + len(options)) // 4)
    return struct.pack("!HHIIBBHHH", sport, dport, seq % M32, ack % M32, (doff & 15) << 4,
                       flags & 0xFF, window & 0xFFFF, 0, urg) + options + payload


def pseudo(src: str, dst: str, length: int) -> bytes:
    return socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, length)


def frame(tcp: bytes, *, src: str = PEER_IP, dst: str = LOCAL_IP, ip_opts: bytes = b"",
          ihl: int | None = None, tot: int | None = None, frag: int = 0x4000,
          proto: int = 6, version: int = 4, ttl: int = 64, ip_csum_ok: bool = True,
          tcp_csum_ok: bool = True, dst_mac: bytes = LOCAL_MAC, src_mac: bytes = PEER_MAC,
          ethertype: int = 0x0800, pad: bytes = b"") -> bytes:
    """Ethernet + IPv4 around `tcp` with both checksums right unless told."""
    if len(tcp) >= 18:
        tcp = tcp[:16] + b"\0\0" + tcp[18:]
        c = checksum(pseudo(src, dst, len(tcp)) + tcp)
        if not tcp_csum_ok:
            c ^= 0x5A5A
        tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
    hl = 20 + len(ip_opts)
    ip = struct.pack("!BBHHHBBH4s4s", (version & 15) << 4 | ((hl // 4 if ihl is None else ihl) & 15),
                     0, (hl + len(tcp) if tot is None else tot) & 0xFFFF, 0x1234, frag & 0xFFFF,
                     ttl, proto, 0, socket.inet_aton(src), socket.inet_aton(dst)) + ip_opts
    c = checksum(ip)
    if not ip_csum_ok:
        c ^= 0x2222
    ip = ip[:10] + struct.pack("!H", c) + ip[12:]
    return dst_mac + src_mac + struct.pack("!H", ethertype) + ip + tcp + pad


# ---- an independent judge of what the parser must drop --------------------------

def options_malformed(o: bytes) -> bool:
    """RFC 9293 §3.2 option list rules, with the engine's stated strictness
    (a known option of the wrong size invalidates the segment)."""
    i = 0
    while i < len(o):
        kind = o[i]
        if kind == 0:
            return False
        if kind == 1:
            i += 1
            continue
        if i + 1 >= len(o):
            return True
        ln = o[i + 1]
        if ln < 2 or i + ln > len(o):
            return True
        if (kind, ln) in ((2, 4), (3, 3), (4, 2), (8, 10)):
            pass
        elif kind in (2, 3, 4, 8):
            return True
        elif kind == 5 and (ln < 10 or (ln - 2) % 8):
            return True
        i += ln
    return False


def must_drop(f: bytes) -> set[str]:
    """Every reason (counter name) for which the input path must drop frame
    `f`, as far as checking it is meaningful; empty if TCP must see it."""
    if len(f) < 34:
        return {"drop_short"}
    why = set()
    if f[:6] != LOCAL_MAC:
        why.add("drop_bad_mac")
    if f[12:14] != b"\x08\x00":
        why.add("drop_not_ipv4")
    if why:
        return why
    ip = f[14:]
    ihl, tot = (ip[0] & 15) * 4, struct.unpack("!H", ip[2:4])[0]
    if ip[0] >> 4 != 4 or ihl < 20 or tot < ihl:
        return {"drop_bad_ip_header"}
    if tot > len(ip):
        return {"drop_short"}
    if checksum(ip[:ihl]) != 0:
        why.add("drop_bad_ip_checksum")
    if struct.unpack("!H", ip[6:8])[0] & 0x3FFF:       # MF or a fragment offset
        why.add("drop_ip_fragment")
    if ip[9] not in (1, 6):
        why.add("drop_not_tcp")
    if ip[16:20] != socket.inet_aton(LOCAL_IP):
        why.add("drop_not_our_ip")
    src = ip[12:16]
    if src[0] in (0, 127) or src[0] >= 224:
        why.add("drop_bad_source")
    if ip[9] == 1:
        return why | ICMP_DROPS
    tcp = ip[ihl:tot]
    if len(tcp) < 20 or not 20 <= (tcp[12] >> 4) * 4 <= len(tcp):
        why.add("drop_bad_tcp_header")
        return why
    if checksum(ip[12:20] + struct.pack("!BBH", 0, 6, len(tcp)) + tcp) != 0:
        why.add("drop_bad_tcp_checksum")
    if tcp[13] & S and tcp[13] & (F | R):
        why.add("drop_bad_tcp_flags")
    if options_malformed(tcp[20:(tcp[12] >> 4) * 4]):
        why.add("drop_bad_tcp_options")
    return why


def inject_judged(h: Stack, f: bytes) -> tuple[set[str], list[Seg], list]:
    """Injects f; if `must_drop` says it must be dropped, checks that it was
    counted under exactly one applicable reason and had no effect."""
    why = must_drop(f)
    before = h.counters()
    n_events = len(h.events)
    h.inject(f)
    out = h.flush()
    after = h.counters()
    grew = {k: after[k] - before[k] for k in NET_DROPS if after[k] != before[k]}
    new_events = h.events[n_events:]
    if why:
        assert len(grew) == 1 and list(grew.values()) == [1], (why, grew, f.hex())
        assert set(grew) <= why, (why, grew, f.hex())
        assert out == [] and new_events == [], (why, out, new_events)
    else:
        # a frame the parser takes may still be refused by TCP for its flags
        assert set(grew) <= {"drop_bad_tcp_flags"}, (grew, f.hex())
    return why, out, new_events


# ---- strategies -------------------------------------------------------------------

WRAP = [0, 1, 2, 0x7FFFFFFF, 0x80000000, 0x80000001, M32 - 1, M32 - 2, M32 - 1460]
u32 = st.one_of(st.sampled_from(WRAP), st.integers(0, M32 - 1))
near = st.one_of(st.integers(-3000, 3000), st.sampled_from(
    [-(1 << 31), (1 << 31) - 1, 1 << 31, -(1 << 30), 1 << 30, 65535, -65535, 1 << 20]))


def option_items():
    """One TCP option: well-formed, odd, or broken."""
    edge = st.one_of(u32, st.integers(0, 5000))
    return st.one_of(
        st.just(b"\x01"), st.just(b"\x00"),
        st.builds(opt_mss, st.sampled_from([0, 1, 2, 87, 88, 536, 1460, 1461, 9000, 65535])),
        st.builds(opt_ws, st.sampled_from([0, 1, 7, 14, 15, 16, 31, 255])),
        st.just(OPT_SACK_PERM),
        st.builds(opt_ts, u32, u32),
        st.builds(lambda bl: opt_sack(*bl), st.lists(st.tuples(edge, edge), min_size=1,
                                                     max_size=4)),
        # malformed: zero/one/huge length, wrong size for a known kind, a
        # kind with its length byte cut off
        st.builds(lambda k, ln, body: bytes([k, ln]) + body, st.integers(0, 255),
                  st.sampled_from([0, 1, 2, 3, 5, 9, 11, 40, 41, 255]),
                  st.binary(max_size=12)),
        st.builds(lambda k: bytes([k]), st.sampled_from([2, 3, 4, 5, 8, 30, 254])),
    )


tcp_options = st.builds(b"".join, st.lists(option_items(), max_size=8))


@st.composite
def ip_mutation(draw) -> dict:
    """Keyword arguments for frame(): what is wrong at the IP level."""
    kind = draw(st.sampled_from(["none", "none", "options", "fragment", "tot", "ihl", "ip_csum",
                                 "tcp_csum", "version", "proto", "src", "dst", "mac",
                                 "ethertype", "pad"]))
    if kind == "options":
        return {"ip_opts": draw(st.one_of(
            st.sampled_from([b"\x01\x01\x01\x00", b"\x00" * 4,
                             b"\x94\x04\x00\x00",                 # router alert
                             b"\x07\x07\x04" + b"\0" * 5, b"\x44" * 40]),
            st.binary(min_size=4, max_size=40).map(lambda b: b[:len(b) - len(b) % 4])))}
    if kind == "fragment":
        return {"frag": draw(st.sampled_from([0x2000, 0x0001, 0x2001, 0x1FFF, 0x6000, 0x3FFF]))}
    if kind == "tot":
        return {"tot": draw(st.one_of(st.integers(0, 80), st.integers(0, 0xFFFF)))}
    if kind == "ihl":
        return {"ihl": draw(st.integers(0, 15))}
    if kind == "ip_csum":
        return {"ip_csum_ok": False}
    if kind == "tcp_csum":
        return {"tcp_csum_ok": False}
    if kind == "version":
        return {"version": draw(st.sampled_from([0, 6, 15]))}
    if kind == "proto":
        return {"proto": draw(st.sampled_from([0, 1, 17, 41, 255]))}
    if kind == "src":
        return {"src": draw(st.sampled_from(["127.0.0.1", "0.0.0.0", "224.0.0.1",
                                             "255.255.255.255", "240.1.2.3"]))}
    if kind == "dst":
        return {"dst": draw(st.sampled_from(["10.99.0.3", "255.255.255.255", "0.0.0.0"]))}
    if kind == "mac":
        return {"dst_mac": draw(st.sampled_from([b"\xff" * 6, b"\x02\0\0\0\0\x03", b"\0" * 6]))}
    if kind == "ethertype":
        return {"ethertype": draw(st.sampled_from([0x86DD, 0x0806, 0x8100, 0x0000, 0x0801]))}
    if kind == "pad":
        return {"pad": draw(st.binary(min_size=1, max_size=64))}
    return {}


# ---- (a) arbitrary bytes ------------------------------------------------------------

ETH = LOCAL_MAC + PEER_MAC + b"\x08\x00"


@examples(400)
@given(st.lists(st.one_of(st.binary(max_size=120),
                          st.binary(max_size=120).map(lambda b: ETH + b),
                          st.binary(max_size=1500)), min_size=1, max_size=8))
def test_arbitrary_bytes_as_frames(frames):
    with stack() as h:
        for f in frames:
            inject_judged(h, f)


@examples(400)
@given(st.lists(st.tuples(st.binary(min_size=0, max_size=100), ip_mutation()),
                min_size=1, max_size=6))
def test_arbitrary_tcp_headers_with_good_checksums(segments):
    """Random bytes as the TCP header (the checksum made right), so they
    get past IP and into TCP, options parsing and the state machine."""
    with stack() as h:
        for tcp, mut in segments:
            if len(tcp) >= 4:   # to the listening port or the closed one
                ports = struct.pack("!HH", 40000 + tcp[0] % 4, (PORT, CLOSED_PORT)[tcp[1] & 1])
                tcp = ports + tcp[4:]
            inject_judged(h, frame(tcp, **mut))


# ---- (b) structured mutations: the parser ---------------------------------------------

def valid_syn(**kw) -> bytes:
    opts = opt_mss(1460) + OPT_SACK_PERM + opt_ts(100, 0) + b"\x01" + opt_ws(7)
    return frame(tcp_bytes(flags=S, options=opts, payload=kw.pop("payload", b""), **kw))


@pytest.mark.parametrize("base", ["syn", "data"])
def test_truncated_at_every_length_is_dropped(base):
    """Ethernet may pad a frame, never cut it: every proper prefix of a valid
    frame is counted and dropped, and has no other effect."""
    with stack() as h:
        if base == "syn":
            full = valid_syn()
        else:
            p = Peer(h, PORT)
            p.connect()
            full = p.seg(flags="PA", payload=b"x" * 200)
        for n in range(len(full)):
            why, _, _ = inject_judged(h, full[:n])
            assert why, n
        # and the whole frame still works afterwards
        why, out, _ = inject_judged(h, full)
        assert not why
        if base == "syn":
            assert [s.flag_text for s in out] == ["SA"]
        else:
            assert b"".join(e.data for e in h.take_events(DATA)) == b"x" * 200


@pytest.mark.parametrize("ip_opts", [b"\x01\x01\x01\x00", b"\x94\x04\x00\x00",
                                     b"\x07\x0b\x04" + b"\0" * 9, b"\x01" * 40])
def test_ip_options_are_skipped(ip_opts):
    """A SYN with IP options (IHL > 5) is a SYN: the TCP header is found
    after the options."""
    with stack() as h:
        f = frame(tcp_bytes(flags=S, seq=5000, options=opt_mss(1400)), ip_opts=ip_opts)
        why, out, _ = inject_judged(h, f)
        assert not why and len(out) == 1 and out[0].has("SA") and out[0].ack == 5001


def test_ethernet_padding_is_ignored():
    with stack() as h:
        why, out, _ = inject_judged(h, valid_syn(seq=77) + b"\xAA" * 40)
        assert not why and len(out) == 1 and out[0].has("SA") and out[0].ack == 78


@pytest.mark.parametrize("frag", [0x2000, 0x0001, 0x2001, 0x1FFF, 0x3FFF, 0x6001])
def test_fragments_are_dropped(frag):
    with stack() as h:
        why, out, _ = inject_judged(h, frame(tcp_bytes(flags=S), frag=frag))
        assert why == {"drop_ip_fragment"}


@pytest.mark.parametrize("doff", range(16))
def test_every_data_offset(doff):
    """Data offsets 0..15 over a 20-byte header + 16 bytes of options-or-
    payload: < 5 and beyond the segment are header errors."""
    with stack() as h:
        body = opt_mss(1400) + b"\x01" * 12
        why, out, _ = inject_judged(h, frame(tcp_bytes(flags=S, options=body, doff=doff)))
        assert bool(why) == (doff < 5 or doff > 9), why
        if not why:
            assert len(out) == 1 and out[0].has("SA")


def expect_listen_or_closed(seg_flags: int, seq: int, ack: int, payload_len: int,
                            listening: bool, out: list[Seg], delta: dict) -> None:
    """RFC 9293 §3.10.7.1 (CLOSED) and §3.10.7.2 (LISTEN) for a segment
    that belongs to no connection."""
    if seg_flags & R:
        assert out == [], "a RST is never answered"
        return
    if seg_flags & A:
        assert len(out) == 1 and out[0].flags == R and out[0].seq == ack % M32, out
        return
    if not listening:
        want = (seq + payload_len + (1 if seg_flags & S else 0) + (1 if seg_flags & F else 0))
        assert len(out) == 1 and out[0].flags == R | A and out[0].seq == 0, out
        assert out[0].ack == want % M32
        assert delta["drop_no_listener"] == 1
        return
    if seg_flags & S:
        assert len(out) == 1 and out[0].has("SA") and out[0].ack == (seq + 1) % M32, out
        assert delta["syn_received"] == 1
        return
    assert out == [] and delta["drop_bad_tcp_flags"] == 1


@pytest.mark.parametrize("listening", [True, False], ids=["listen", "closed"])
def test_every_flag_combination_without_a_connection(listening):
    """All 256 flag bytes, to a listening and to a closed port."""
    with stack() as h:
        for flags in range(256):
            seq, ack = (M32 - 1 - flags * 977) % M32, flags * 1_000_003
            f = frame(tcp_bytes(sport=30000 + flags, dport=PORT if listening else CLOSED_PORT,
                                seq=seq, ack=ack, flags=flags, payload=b"hi" * (flags & 1)))
            before = h.counters()
            why, out, _ = inject_judged(h, f)
            after = h.counters()
            if why:
                assert why == {"drop_bad_tcp_flags"} and flags & S and flags & (F | R)
                continue
            delta = deltas(before, after)
            expect_listen_or_closed(flags, seq, ack, 2 * (flags & 1), listening, out, delta)


@examples(500)
@given(flags=st.integers(0, 255), seq=u32, ack=u32, window=st.integers(0, 65535),
       options=tcp_options, payload=st.binary(max_size=64), mut=ip_mutation(),
       listening=st.booleans())
def test_segments_without_a_connection(flags, seq, ack, window, options, payload, mut,
                                       listening):
    with stack() as h:
        f = frame(tcp_bytes(dport=PORT if listening else CLOSED_PORT, seq=seq, ack=ack,
                            flags=flags, window=window, options=options, payload=payload),
                  **mut)
        before = h.counters()
        why, out, _ = inject_judged(h, f)
        if why:
            return
        after = h.counters()
        delta = deltas(before, after)
        # where the TCP payload really starts (options beyond 40 bytes spill)
        tcp = f[14 + (f[14] & 15) * 4:14 + struct.unpack("!H", f[16:18])[0]]
        plen = len(tcp) - (tcp[12] >> 4) * 4
        expect_listen_or_closed(flags, seq, ack, plen, listening, out, delta)


@pytest.mark.parametrize("mss", [0, 1, 87, 88, 100, 65535])
def test_mss_extremes(mss):
    """MSS 0 or 1 must not make zero-length or endless segmentation: the
    stack clamps (to 88 here, as Linux's tcp_min_snd_mss) and every data
    segment carries 1..mss bytes."""
    with stack() as h:
        p = Peer(h, PORT, mss=mss)
        p.connect()
        info = h.info(p.conn)
        want = min(max(mss, 88), 1460) - 12      # the timestamp option is on
        assert info["mss"] == want
        assert h.write(p.conn, bytes(range(256)) * 20) == 5120
        out = h.flush()
        data = [s for s in out if s.payload]
        assert data and all(1 <= len(s.payload) <= want for s in data)
        assert b"".join(s.payload for s in data) == (bytes(range(256)) * 20)[:sum(
            len(s.payload) for s in data)]


@pytest.mark.parametrize("ws", [14, 15, 16, 100, 255])
def test_window_scale_above_14_is_14(ws):
    """RFC 7323 §2.3: a shift count above 14 is used as 14."""
    with stack() as h:
        p = Peer(h, PORT, ws=ws)
        p.connect()
        p.send(p.seg(window=3))
        assert h.info(p.conn)["snd_wnd"] == 3 << 14


# ---- (b) structured mutations: established connections ------------------------------

def connect_with_iss(h: Harness, iss: int, *, sport: int = 40000, accepted: bool = True,
                     **peer_kw) -> Peer:
    """A connection whose ISS (the stack's initial sequence number) is
    `iss`: RFC 6528 makes the ISN M + F(tuple, secret) with M a 4-µs clock,
    so F is learnt from a first handshake, that connection is reset, and the
    clock moved to where the same tuple gets `iss`."""
    p = Peer(h, PORT, sport=sport, **peer_kw)
    sa = p.connect()[0]
    h.inject(p.seg(flags="R"))
    h.flush()
    assert h.counters()["conns_reset"] >= 1
    h.events.clear()
    h.now += 4 * ((iss - sa.seq) % M32)
    h.engine.set_clock(h.now)
    p = Peer(h, PORT, sport=sport, **peer_kw)
    assert p.connect()[0].seq == iss % M32
    assert bool(p.conn) == accepted
    return p


def test_iss_near_wrap_helper_works():
    with stack() as h:
        p = connect_with_iss(h, M32 - 5)
        assert h.info(p.conn)["snd_nxt"] == M32 - 4


@st.composite
def hostile_segment(draw) -> dict:
    """A segment from the peer of an established connection: sequence and
    ack numbers near the right ones, near the window edges and half the
    sequence space away, any flags, hostile options."""
    return dict(seq_off=draw(near), ack_off=draw(near),
                flags=draw(st.one_of(st.integers(0, 255),
                                     st.sampled_from([A, P | A, F | A, R, R | A, S, S | A]))),
                window=draw(st.integers(0, 65535)),
                options=draw(st.one_of(st.none(), tcp_options)),
                payload=draw(st.one_of(st.just(b""), st.binary(max_size=40),
                                       st.just(b"Z" * 1400))),
                mut=draw(st.one_of(st.just({}), st.just({}), ip_mutation())),
                advance=draw(st.sampled_from([0, 0, 0, 0.05, 0.3, 1.5, 30.0])))


def peer_frame(p: Peer, seg: dict) -> bytes:
    """Peer.seg's frame, rebuilt with arbitrary flags and an IP mutation."""
    flags = seg["flags"]
    opts = p.options() if seg["options"] is None else seg["options"]
    tcp = tcp_bytes(sport=p.sport, dport=p.port, seq=p.snd_nxt + seg["seq_off"],
                    ack=p.rcv_nxt + seg["ack_off"], flags=flags, window=seg["window"],
                    options=opts, payload=seg["payload"])
    return frame(tcp, **seg["mut"])


def assert_conn_sane(h: Harness, conn: int) -> None:
    out = ffi.new("struct sl_conn_info *")
    if lib.sl_conn_info(h.ptr, conn, out) != 0:
        return      # gone (reset): fine
    i = out
    c = h.counters()
    if "rx_held" in c:
        assert c["rx_held"] == c["rxq_bytes"] + c["ooo_bytes"], c
    for k in ("packets_out", "sacked_out", "lost_out", "retrans_out", "send_queued",
              "ooo_bytes", "rxq_bytes", "ooo_count"):
        assert getattr(i, k) < 1 << 30, (k, getattr(i, k))
    assert i.sacked_out <= i.packets_out and i.lost_out <= i.packets_out
    assert i.retrans_out <= i.packets_out
    assert i.state <= 10


def finish(h: Stack, conn: int) -> None:
    """Aborts the connection: every frame and segment it held comes back."""
    rc = lib.sl_conn_abort(h.ptr, conn)
    assert rc in (0, -errno.ENOTCONN)
    h.flush()
    h.advance(0)
    c = h.counters()
    assert c["segs_in_use"] == 0 and c["frames_sndq"] == 0, c
    assert c["ooo_bytes"] == 0 and c["rxq_bytes"] == 0, c


@pytest.mark.parametrize("flags", range(256))
def test_every_flag_combination_in_an_established_connection(flags):
    """RFC 9293 §3.10.7.4 in order, for a segment at exactly RCV.NXT with
    two bytes of data: SYN with FIN/RST is malformed; RST resets (second
    check); SYN gets a challenge ACK (fourth, RFC 5961 §4.2); no ACK
    drops it (fifth); else the data is delivered and a FIN ends the input."""
    with stack() as h:
        p = Peer(h, PORT)
        p.connect()
        conn = p.conn
        before = h.counters()
        f = frame(tcp_bytes(sport=p.sport, dport=PORT, seq=p.snd_nxt, ack=p.rcv_nxt,
                            flags=flags, options=p.options(), payload=b"hi"))
        why, out, _ = inject_judged(h, f)
        delta = deltas(before, h.counters())
        data = b"".join(e.data for e in conn_events(h, conn, DATA))
        gone = lib.sl_conn_info(h.ptr, conn, ffi.new("struct sl_conn_info *")) != 0
        if flags & S and flags & (F | R):
            assert why == {"drop_bad_tcp_flags"} and not gone
        elif flags & R:
            assert gone and delta["rst_received"] == 1 and data == b""
            assert [e.err for e in conn_events(h, conn, lib.SL_EV_CLOSED)] == [-errno.ECONNRESET]
        elif flags & S:
            assert not gone and data == b"" and delta["challenge_acks"] == 1
            assert [s.flag_text for s in out] == ["A"] and out[0].ack == p.snd_nxt % M32
        elif not flags & A:
            assert not gone and data == b"" and delta["drop_no_ack"] == 1 and out == []
        else:
            assert not gone and data == b"hi"
            assert len(conn_events(h, conn, EOF)) == (1 if flags & F else 0)
            if flags & F:
                assert out and out[-1].ack == (p.snd_nxt + 3) % M32
        if not gone:
            finish(h, conn)


@examples(400)
@given(isn=u32, iss=st.one_of(st.none(), st.sampled_from([M32 - 1, M32 - 700, 0x7FFFFFFF])),
       written=st.sampled_from([0, 0, 3000, 20000]),
       segs=st.lists(hostile_segment(), min_size=1, max_size=8))
def test_hostile_segments_into_an_established_connection(isn, iss, written, segs):
    with stack() as h:
        if iss is None:
            p = Peer(h, PORT, isn=isn)
            p.connect()
        else:
            p = connect_with_iss(h, iss, isn=isn)
        conn = p.conn
        assert conn
        if written:
            assert h.write(conn, b"w" * written) == written
            h.flush()
        for seg in segs:
            h.inject(peer_frame(p, seg))
            h.flush()
            if seg["advance"]:
                h.advance(seg["advance"])
            assert_conn_sane(h, conn)
        finish(h, conn)


@examples(300)
@given(isn=st.sampled_from([M32 - 1, M32 - 3000, M32 - 70000, 0x7FFFFF00, 12345]),
       total=st.integers(1, 9000),
       pieces=st.lists(st.tuples(st.integers(-3000, 9500), st.integers(0, 1500)),
                       max_size=12),
       fin=st.booleans())
@example(isn=M32 - 1, total=3000, pieces=[(1000, 1000), (2500, 500), (0, 100)], fin=True)
def test_reassembly_delivers_the_stream_across_wrap(isn, total, pieces, fin):
    """Pieces of one byte stream, at any offsets (old, overlapping, out of
    order, beyond the end), with the peer's sequence numbers wrapping:
    what reaches Python is always a prefix of the stream, and once the
    stream is sent in order it is exactly the stream, then one EOF."""
    stream = bytes((i * 7 + i // 251) & 0xFF for i in range(total))
    with stack() as h:
        p = Peer(h, PORT, isn=isn)
        p.connect()
        conn = p.conn

        def got() -> bytes:
            return b"".join(e.data for e in conn_events(h, conn, DATA))

        for off, ln in pieces:
            # bytes outside [0, total) are made up: before the stream they
            # are old (trimmed), past its end they follow it
            data = bytes(stream[i] if 0 <= i < total else 0 for i in range(off, off + ln))
            p.send(p.seg(seq_off=off, flags="PA", payload=data))
            assert stream.startswith(got()[:total])
            assert_conn_sane(h, conn)
        for off in range(0, total, 1400):
            p.send(p.seg(seq_off=off, flags="PA", payload=stream[off:off + 1400]))
        d = got()
        # bytes past the stream's end may have been sent by a piece as zeros
        assert d[:total] == stream, (len(d), total)
        if fin:
            p.send(p.seg(seq_off=len(d), flags="FA"))
            assert len(conn_events(h, conn, EOF)) == 1
        finish(h, conn)


@examples(150)
@given(rcvbuf=st.sampled_from([4096, 6000, 65536]), rx_budget=st.sampled_from([0, 0, 5000]),
       ops=st.lists(st.one_of(
           st.tuples(st.just("seg"), st.integers(-2000, 70000), st.integers(1, 1400)),
           st.tuples(st.just("pause"), st.just(0), st.just(0)),
           st.tuples(st.just("resume"), st.just(0), st.just(0)),
           st.tuples(st.just("wait"), st.sampled_from([0.05, 1.0, 10.0]), st.just(0))),
           max_size=25))
def test_paused_reader_holds_at_most_its_window(rcvbuf, rx_budget, ops):
    """Python stops reading; a peer floods in and out of order, beyond the
    window: the engine holds at most rcvbuf bytes for the connection (the
    engine-wide rx_budget only shrinks windows) and never acknowledges more
    than it holds, and what Python finally reads is the stream."""
    total = 72000
    stream = bytes((i * 5 + i // 263) & 0xFF for i in range(total))
    budget = {"rx_budget": rx_budget} if "rx_held" in lib_counter_fields() else {}
    with stack(rcvbuf=rcvbuf, **budget) as h:
        p = Peer(h, PORT)
        p.connect()
        conn = p.conn
        for op, a, b in ops:
            if op == "seg":
                data = bytes(stream[i] if 0 <= i < total else 0 for i in range(a, a + b))
                out = p.send(p.seg(seq_off=a, flags="PA", payload=data))
                for s in out:
                    # acknowledged bytes are held (or were read), never more
                    acked = (s.ack - p.snd_nxt) % M32
                    read = sum(len(e.data) for e in conn_events(h, conn, DATA))
                    i = h.info(conn)
                    assert acked <= read + i["rxq_bytes"], (acked, read, i["rxq_bytes"])
            elif op == "pause":
                lib.sl_conn_pause_reading(h.ptr, conn)
            elif op == "resume":
                lib.sl_conn_resume_reading(h.ptr, conn)
                h.advance(0)
            else:
                h.advance(a)
            i = h.info(conn)
            assert i["rxq_bytes"] + i["ooo_bytes"] <= rcvbuf, i
        lib.sl_conn_resume_reading(h.ptr, conn)
        h.advance(0)
        got = b"".join(e.data for e in conn_events(h, conn, DATA))
        assert stream.startswith(got[:total])
        finish(h, conn)


class StreamLog:
    """Bytes seen at each stream offset: every transmission of an offset,
    first or retransmitted, must carry the same byte."""

    def __init__(self, base: int):
        self.base = base
        self.data = bytearray()
        self.known = bytearray()

    def add(self, s: Seg) -> None:
        if not s.payload:
            return
        off = (s.seq - self.base) % M32
        assert off < 1 << 30, ("data before the stream", s.seq, self.base)
        end = off + len(s.payload)
        if end > len(self.data):
            self.data.extend(b"\0" * (end - len(self.data)))
            self.known.extend(b"\0" * (end - len(self.known)))
        for i, b in enumerate(s.payload):
            if self.known[off + i]:
                assert self.data[off + i] == b, ("retransmission differs", off + i)
            self.data[off + i] = b
            self.known[off + i] = 1

    def complete(self) -> bytes:
        assert all(self.known), "hole in what was sent"
        return bytes(self.data)


def honest_peer(h: Stack, p: Peer, log: StreamLog, total) -> None:
    """Acknowledges what arrived in order, until total() bytes are there
    (total() may return None while it is not known yet)."""
    for _ in range(600):
        for s in h.sent:
            log.add(s)
        h.sent.clear()
        have = 0
        while have < len(log.known) and log.known[have]:
            have += 1
        want = total()
        if want is not None and have >= want:
            return
        p.tsval += 1
        h.inject(tcp_frame(sport=p.sport, dport=PORT, seq=p.snd_nxt, ack=log.base + have,
                           flags="A", window=65535, options=p.options()))
        if not h.flush():
            h.advance(1.0)
    raise AssertionError(f"the stream stalled at {have} bytes")


def send_hostile_acks(h: Stack, p: Peer, base: int, acks: list[dict]) -> None:
    for a in acks:
        opts = p.options() + (opt_sack(*[(base + x, base + y) for x, y in a["sack"]])
                              if a["sack"] else b"")
        p.tsval += 1
        h.inject(tcp_frame(sport=p.sport, dport=PORT, seq=p.snd_nxt, ack=base + a["ack"],
                           flags="A", window=a["window"], options=opts))
        h.flush()
        if a["icmp"]:
            # a router's "fragmentation needed" (path MTU discovery),
            # quoting a sequence number in flight or not
            off, mtu = a["icmp"]
            h.inject(icmp_frag_needed(base + off, mtu, sport=PORT, dport=p.sport))
            h.flush()
        if a["advance"]:
            h.advance(a["advance"])


@st.composite
def hostile_ack(draw) -> dict:
    edge = st.integers(-70000, 90000)
    icmp = st.tuples(edge, st.sampled_from([0, 68, 552, 576, 1000, 1280, 1400, 1500, 9000]))
    return dict(ack=draw(st.one_of(edge, st.sampled_from([-(1 << 31), 1 << 31, (1 << 31) - 1]))),
                window=draw(st.sampled_from([0, 1, 100, 1000, 65535])),
                sack=draw(st.lists(st.tuples(edge, edge), max_size=3)),  # + timestamps: 40
                advance=draw(st.sampled_from([0, 0, 0, 0.01, 0.25, 1.0, 5.0])),
                icmp=draw(st.one_of(st.none(), st.none(), icmp)))


@examples(250)
@given(iss=st.sampled_from([M32 - 1, M32 - 1000, M32 - 30000, 0x7FFFFFF0, 777]),
       size=st.sampled_from([1, 1000, 5000, 40000]),
       acks=st.lists(hostile_ack(), max_size=10), sack=st.booleans(),
       gso=st.sampled_from(["off", "on"]))
def test_send_side_survives_hostile_acks_and_sacks(iss, size, acks, sack, gso):
    """Python's data, with the stack's sequence numbers wrapping: hostile
    cumulative ACKs (old, too new, half the space away) and SACK blocks
    (inverted, wrapped, beyond what was sent), zero windows, timers; with
    GSO super-frames and without.  Every byte sent is the right byte; an
    honest peer then gets the whole stream and the send queue empties
    completely."""
    data = bytes((i * 13 + i // 256) & 0xFF for i in range(size))
    with stack(tx_gso=gso) as h:
        p = connect_with_iss(h, iss, sack=sack)
        conn = p.conn
        base = (iss + 1) % M32
        log = StreamLog(base)
        h.sent.clear()
        assert h.write(conn, data) == size
        h.flush()
        for a in acks:
            send_hostile_acks(h, p, base, [a])
            assert_conn_sane(h, conn)
        honest_peer(h, p, log, lambda: size)
        assert log.complete()[:size] == data
        p.tsval += 1
        h.inject(tcp_frame(sport=p.sport, dport=PORT, seq=p.snd_nxt, ack=base + size,
                           flags="A", window=65535, options=p.options()))
        h.flush()
        i = h.info(conn)
        assert (i["send_queued"], i["packets_out"], i["sacked_out"], i["lost_out"],
                i["retrans_out"]) == (0, 0, 0, 0, 0), i
        finish(h, conn)


# ---- the HTTP fast path ------------------------------------------------------------

PUBLIC = bytes((i * 31 + 7) & 0xFF for i in range(3000))
SMALLFILE = b"hello, fast path\n"
SECRET = b"TOP-SECRET-" * 40            # registered on another port only
GONE = b"REMOVED-FILE-" * 20            # registered, then removed
LAST_MODIFIED = b"Fri, 27 Nov 2026 03:22:42 GMT"
MTIME_NS = 1795749762 * 10 ** 9
BIG = bytes((i * 131 + i // 509) & 0xFF for i in range(60000))
FILES = {b"/static/a.txt": (PUBLIC, b"etag-a"), b"/static/s.txt": (SMALLFILE, b"etag-s"),
         b"/static/empty": (b"", b"etag-e"), b"/static/dir/x y.bin": (PUBLIC[:100], b"etag-x"),
         b"/static/big.bin": (BIG, b"etag-big")}


def put(h: Harness, port: int, path: bytes, body: bytes, etag: bytes) -> None:
    rc = lib.sl_static_put(h.ptr, port, path, body, len(body), b"text/plain", etag,
                           LAST_MODIFIED, MTIME_NS, ffi.NULL, 0)
    assert rc == 0, rc


def register_files(h: Harness) -> None:
    for path, (body, etag) in FILES.items():
        put(h, PORT, path, body, etag)
    put(h, CLOSED_PORT, b"/static/secret.txt", SECRET, b"etag-secret")
    put(h, CLOSED_PORT, b"/static/a.txt", SECRET, b"etag-secret")
    put(h, PORT, b"/static/gone.txt", GONE, b"etag-gone")
    assert lib.sl_static_remove(h.ptr, PORT, b"/static/gone.txt") == 0


def http_exchange(h: Stack, pieces: list[bytes], *, sport: int, order: list[int] | None = None,
                  fin: bool = True, mss: int = 1460) -> tuple[bytes, Peer]:
    """One connection to the fast-path port: the pieces go as separate
    segments (in `order` if given, else in order), then a FIN if asked; the
    peer ACKs whatever the engine sends.  Returns the response bytes."""
    p = Peer(h, PORT, sport=sport, mss=mss)
    p.connect()
    offs = list(itertools.accumulate([0] + [len(x) for x in pieces]))
    got = b""
    for i in (order if order is not None else range(len(pieces))):
        got += p.absorb(p.send(p.seg(seq_off=offs[i], flags="PA", payload=pieces[i])))
    p.snd_nxt += offs[-1]
    if fin:
        got += p.absorb(p.send(p.seg(flags="FA")))
        p.snd_nxt += 1
    for _ in range(200):
        new = p.absorb(p.send(p.seg()))
        got += new
        if not new:
            break
    return got, p


def handed_to_python(h: Harness, sport: int) -> tuple[int, bytes] | None:
    """The ACCEPT for the connection from `sport`, and its DATA bytes."""
    conns = [e.conn for e in h.events if e.type == ACCEPT]
    for conn in conns:
        out = ffi.new("struct sl_conn_info *")
        if lib.sl_conn_info(h.ptr, conn, out) == 0 and out.peer_port == sport:
            return conn, b"".join(e.data for e in conn_events(h, conn, DATA))
    return None


def norm_date(b: bytes) -> bytes:
    return re.sub(rb"\r\nDate: [^\r\n]*\r\n", b"\r\nDate: -\r\n", b)


def parse_responses(data: bytes, methods: list[bytes]) -> list[tuple[int, dict, bytes]]:
    """HTTP/1.x responses back to back; each one well-formed."""
    out, i = [], 0
    while i < len(data):
        j = data.find(b"\r\n\r\n", i)
        assert j >= 0, ("cut-off response header", data[i:i + 200])
        lines = data[i:j].split(b"\r\n")
        m = re.fullmatch(rb"HTTP/1\.[01] (\d{3}) [ -~]+", lines[0])
        assert m, lines[0]
        status = int(m.group(1))
        hdrs: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b": ")
            assert sep and re.fullmatch(rb"[!-~]+", name) and re.fullmatch(rb"[ -~\t]*", value), line
            assert name.lower() not in hdrs, ("duplicate header", name)
            hdrs[name.lower()] = value
        head = methods[len(out)] == b"HEAD" if len(out) < len(methods) else False
        i = j + 4
        if hdrs.get(b"transfer-encoding") == b"chunked":
            n = 0 if head else 5
            assert head or data[i:i + 5] == b"0\r\n\r\n"
        else:
            n = 0 if head or status == 304 else int(hdrs[b"content-length"])
        body = data[i:i + n]
        assert len(body) == n, "cut-off body"
        out.append((status, hdrs, body))
        i += n
    return out


def check_response(status: int, hdrs: dict, body: bytes, method: bytes) -> None:
    """A fast-path response serves one registered file correctly."""
    assert status in (200, 206, 304, 416), status
    if status == 416:
        m = re.fullmatch(rb"bytes \*/(\d+)", hdrs[b"content-range"])
        assert m and int(m.group(1)) in {len(b) for b, _ in FILES.values()}, hdrs
        return
    etag = hdrs.get(b"etag", b"").strip(b'"')
    files = {e: b for b, e in FILES.values()}
    assert etag in files, ("response for no registered file", hdrs)
    content = files[etag]
    if status == 200:
        assert int(hdrs[b"content-length"]) == len(content)
        assert body == (b"" if method == b"HEAD" else content)
    elif status == 206:
        m = re.fullmatch(rb"bytes (\d+)-(\d+)/(\d+)", hdrs[b"content-range"])
        a, b, size = map(int, m.groups())
        assert size == len(content) and a <= b < size
        assert body == content[a:b + 1] and int(hdrs[b"content-length"]) == b - a + 1


def methods_of(request: bytes) -> list[bytes]:
    return [r.split(b" ", 1)[0] for r in request.split(b"\r\n\r\n") if r]


def judge_http(h: Stack, request: bytes, got: bytes, sport: int) -> str:
    """(d)'s property.  Returns "fast", "python" or "both"."""
    for bad in (SECRET[:11], GONE[:13]):
        assert bad not in got, "bytes of an unregistered file were sent"
    handed = handed_to_python(h, sport)
    responses = parse_responses(got, methods_of(request))
    for (status, hdrs, body), method in zip(responses, methods_of(request) + [b"GET"] * 99):
        check_response(status, hdrs, body, method)
    if handed is None:
        assert responses, ("neither answered nor handed to Python", request)
        return "fast"
    conn, data = handed
    assert request.endswith(data) and data, ("Python did not get the exact bytes", data[:80])
    answered = request[:len(request) - len(data)]
    # what the fast path kept for itself is whole requests, one answer each
    assert len(responses) == answered.count(b"\r\n\r\n"), (answered, len(responses))
    return "both" if responses else "python"


def test_fast_path_answers_the_plain_request():
    """The baseline the other HTTP tests lean on: the fast path answers a
    GET for the registered file, without Python."""
    with stack(fast=True) as h:
        req = b"GET /static/a.txt HTTP/1.1\r\nHost: x\r\n\r\n"
        got, _ = http_exchange(h, [req], sport=42000)
        assert judge_http(h, req, got, 42000) == "fast"
        [(status, hdrs, body)] = parse_responses(got, [b"GET"])
        assert status == 200 and body == PUBLIC
        assert h.counters()["fast_requests"] == 1


BIG_REQUESTS = [b"GET /static/big.bin HTTP/1.1\r\n\r\n",
                b"GET /static/big.bin HTTP/1.1\r\nRange: bytes=777-40000\r\n\r\n",
                b"GET /static/big.bin HTTP/1.1\r\nRange: bytes=-3001\r\n\r\n",
                b"GET /static/a.txt HTTP/1.1\r\n\r\nGET /static/big.bin HTTP/1.0\r\n\r\n"]

SPLIT_REQUESTS = [
    b"GET /static/a.txt HTTP/1.1\r\nHost: x\r\n\r\n",
    b"HEAD /static/s.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"GET /static/a.txt HTTP/1.1\r\nRange: bytes=100-1999\r\nConnection: close\r\n\r\n",
    b"GET /static/s.txt HTTP/1.1\r\nIf-None-Match: W/\"etag-s\"\r\n\r\n",
    b"GET /static/s.txt HTTP/1.1\r\nRange: bytes=500-\r\n\r\n",
    b"GET /static/dir/x%20y.bin?q=1 HTTP/1.1\r\nHost: x\r\n\r\n"
    b"GET /static/empty HTTP/1.1\r\nHost: x\r\n\r\n",
]


@pytest.mark.parametrize("req", SPLIT_REQUESTS, ids=range(len(SPLIT_REQUESTS)))
def test_request_split_at_every_byte_gives_the_same_response(req):
    with stack(fast=True) as h:
        whole, _ = http_exchange(h, [req], sport=20000)
        assert judge_http(h, req, whole, 20000) == "fast"
        for k in range(1, len(req)):
            got, _ = http_exchange(h, [req[:k], req[k:]], sport=20000 + k)
            assert norm_date(got) == norm_date(whole), k
        assert h.counters()["fast_handovers"] == 0


@examples(150)
@given(req=st.sampled_from(SPLIT_REQUESTS + BIG_REQUESTS), data=st.data(),
       mss=st.sampled_from([88, 200, 536, 1460]))
def test_request_in_random_pieces_in_random_order_gives_the_same_response(req, data, mss):
    """Any cutting of the request, delivered in any order (reassembled),
    and any segment size of the response: the same response bytes."""
    cuts = sorted(data.draw(st.sets(st.integers(1, len(req) - 1), max_size=12)))
    pieces = [req[a:b] for a, b in zip([0] + cuts, cuts + [len(req)])]
    order = data.draw(st.permutations(range(len(pieces))))
    with stack(fast=True) as h:
        whole, _ = http_exchange(h, [req], sport=20000)
        got, _ = http_exchange(h, pieces, sport=20001, order=order, mss=mss)
        assert norm_date(got) == norm_date(whole)
        assert judge_http(h, req, got, 20001) == "fast"




def response_length(data: bytes, n: int) -> int | None:
    """Length of the first n responses in data, once their headers are in."""
    i = 0
    for _ in range(n):
        j = data.find(b"\r\n\r\n", i)
        if j < 0:
            return None
        i = j + 4 + int(re.search(rb"\r\nContent-Length: (\d+)\r\n", data[i:j + 2]).group(1))
    return i


def in_order(log: StreamLog) -> bytes:
    n = log.known.find(0)
    return bytes(log.data if n < 0 else log.data[:n])


@examples(150)
@given(iss=st.sampled_from([M32 - 1, M32 - 2000, M32 - 40000, 0x7FFFFFF0, 4242]),
       mss=st.sampled_from([88, 300, 536, 1460]), req=st.sampled_from(BIG_REQUESTS),
       acks=st.lists(hostile_ack(), max_size=8), sack=st.booleans(),
       gso=st.sampled_from(["off", "on"]))
def test_fast_path_response_survives_hostile_acks(iss, mss, req, acks, sack, gso):
    """A fast-path response (pre-segmented body, cached checksums, segments
    split by reference when the window is narrow, runs of them as GSO
    super-frames or not) under the same hostile ACKs: every byte,
    retransmitted or not, is the right byte, and the honest peer gets the
    complete, correct response."""
    with stack(fast=True, tx_gso=gso) as h:
        p = connect_with_iss(h, iss, sack=sack, mss=mss, accepted=False)
        base = (iss + 1) % M32
        log = StreamLog(base)
        h.sent.clear()
        p.deliver(req)
        send_hostile_acks(h, p, base, acks)
        n = req.count(b"\r\n\r\n")
        honest_peer(h, p, log, lambda: response_length(in_order(log), n))
        stream = log.complete()
        responses = parse_responses(stream[:response_length(stream, n)], methods_of(req))
        assert len(responses) == n
        for status, hdrs, body in responses:
            check_response(status, hdrs, body, b"GET")
        assert h.counters()["fast_handovers"] == 0


@pytest.mark.parametrize("change", ["replace", "remove", "replace-shorter"])
def test_file_changed_during_its_response_keeps_the_old_bytes(change):
    """The response in flight (and its retransmissions after an RTO) keep
    the bytes it started with; the next request gets the new file."""
    new = bytes(255 - b for b in BIG)[: 1000 if change == "replace-shorter" else len(BIG)]
    with stack(fast=True) as h:
        p = Peer(h, PORT, sport=46500)
        p.connect()
        base = p.rcv_nxt
        log = StreamLog(base)
        h.sent.clear()
        p.deliver(b"GET /static/big.bin HTTP/1.1\r\n\r\n")
        if change == "remove":
            assert lib.sl_static_remove(h.ptr, PORT, b"/static/big.bin") == 0
        else:
            put(h, PORT, b"/static/big.bin", new, b"etag-new")
        h.advance(3.0)          # the first flight is lost: retransmitted
        honest_peer(h, p, log, lambda: response_length(in_order(log), 1))
        p.rcv_nxt = (base + response_length(log.complete(), 1)) % M32
        [(status, hdrs, body)] = parse_responses(log.complete(), [b"GET"])
        assert status == 200 and hdrs[b"etag"] == b'"etag-big"' and body == BIG
        assert h.counters()["retransmits"] > 0
        again, _ = http_exchange(h, [b"GET /static/big.bin HTTP/1.1\r\n\r\n"], sport=46501)
        if change == "remove":
            assert handed_to_python(h, 46501) is not None and again == b""
        else:
            [(status, hdrs, body)] = parse_responses(again, [b"GET"])
            assert status == 200 and body == new


# ---- (d) hostile HTTP -------------------------------------------------------------

TRAVERSAL = [b"/static/../static/a.txt", b"/static/%2e%2e/static/a.txt",
             b"/static/%2E%2E/secret.txt", b"/static/.%2e/secret.txt",
             b"/static/..%2fsecret.txt", b"/static%2fa.txt", b"/static/a.txt%2f",
             b"/static/./a.txt", b"/static//a.txt", b"//static/a.txt", b"/static/a.txt/.",
             b"/static/a.txt/..", b"/static\\a.txt", b"/static/%5ca.txt",
             b"/static/a.txt%00", b"/static/a.txt%00.png", b"/static/%00", b"/static/gone.txt",
             b"/static/secret.txt", b"/static/a.txt#frag", b"/static/a.txt%23",
             b"/static/a.txt%", b"/static/a.txt%2",
             b"/static/a.txt%zz", b"/static/a.txt%%41", b"/static/a.txt%G1", b"/static/a.txt%1G"]

HOSTILE_TABLE = [
    # header injection
    b"GET /static/a.txt HTTP/1.1\r\nHost: x\rX-Injected: 1\r\n\r\n",
    b"GET /static/a.txt HTTP/1.1\r\nHost: x\nX-Injected: 1\r\n\r\n",
    b"GET /static/a.txt HTTP/1.1\r\nX-A: b\x00c\r\n\r\n",
    b"GET /static/a.txt\r\nX: 1 HTTP/1.1\r\n\r\n",
    b"GET /static/a.txt%0d%0aX-Injected:%201 HTTP/1.1\r\n\r\n",
    b"GET /static/a.txt HTTP/1.1\r\n Folded: yes\r\n\r\n",
    b"GET /static/a.txt HTTP/1.1\r\nHost : x\r\n\r\n",
    b"GET /static/a.txt HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
    b"GET /static/a.txt HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET /static/a.txt HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\nhello",
    # NUL
    b"GET /static/a.txt\x00 HTTP/1.1\r\n\r\n",
    b"GET /static/a.txt HTTP/1.1\x00\r\n\r\n",
    b"\x00GET /static/a.txt HTTP/1.1\r\n\r\n",
    # method confusion
    b"get /static/a.txt HTTP/1.1\r\n\r\n", b"GETX /static/a.txt HTTP/1.1\r\n\r\n",
    b"GET  /static/a.txt HTTP/1.1\r\n\r\n", b"HEAD\t/static/a.txt HTTP/1.1\r\n\r\n",
    b"GET\t/static/a.txt HTTP/1.1\r\n\r\n", b"GET /static/a.txt\tHTTP/1.1\r\n\r\n",
    b"GET /static/a.txt  HTTP/1.1\r\n\r\n", b"POST /static/a.txt HTTP/1.1\r\n\r\n",
    b"GET /static/a.txt HTTP/1.2\r\n\r\n", b"GET /static/a.txt HTTP/2.0\r\n\r\n",
    b"GET /static/a.txt http/1.1\r\n\r\n", b"GET /static/a.txt HTTP/1.1 \r\n\r\n",
    b"GET /static/a.txt\r\n\r\n", b"GET /static/a.txt HTTP/1.1\n\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    # absolute-form, authority-form, asterisk
    b"GET http://x/static/a.txt HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET https://x:80/static/a.txt HTTP/1.1\r\n\r\n",
    b"CONNECT x:80 HTTP/1.1\r\n\r\n", b"GET x:80 HTTP/1.1\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\n\r\n", b"GET * HTTP/1.1\r\n\r\n",
    # headers the fast path must not interpret
    b"GET /static/a.txt HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"GET /static/a.txt HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
    b"GET /static/a.txt HTTP/1.1\r\nIf-Match: \"etag-a\"\r\n\r\n",
    b"GET /static/a.txt HTTP/1.1\r\nIf-None-Match: etag-a\r\n\r\n",
    b"GET /static/a.txt HTTP/1.1\r\nRange: bytes=0-1,5-6\r\n\r\n",
    b"GET /static/a.txt HTTP/1.1\r\nRange: bytes=99999999999999999999-\r\n\r\n",
    b"GET /static/a.txt HTTP/1.1\r\nRange: items=0-1\r\n\r\n",
    b"GET /static/a.txt HTTP/1.1\r\nIf-Modified-Since: yesterday\r\n\r\n",
] + [b"GET " + t + b" HTTP/1.1\r\nHost: x\r\n\r\n" for t in TRAVERSAL]


@pytest.mark.parametrize("req", HOSTILE_TABLE, ids=range(len(HOSTILE_TABLE)))
def test_hostile_request_is_handed_to_python(req):
    """None of these is a plain GET/HEAD of a registered file: each goes to
    Python, byte for byte, and nothing is answered from C."""
    with stack(fast=True) as h:
        got, _ = http_exchange(h, [req], sport=43000)
        assert judge_http(h, req, got, 43000) == "python", got[:200]
        assert h.counters()["fast_requests"] == 0


@pytest.mark.parametrize("n", [8200, 9000, 20000])
def test_overlong_request_goes_to_python(n):
    """More than 8 KiB without the end of the header block: Python gets all
    of it, in order, whatever the segment boundaries."""
    for req in (b"GET /" + b"a" * n + b" HTTP/1.1\r\nHost: x\r\n\r\n",
                b"GET /static/a.txt HTTP/1.1\r\nX-Pad: " + b"p" * n + b"\r\n\r\n"):
        with stack(fast=True) as h:
            pieces = [req[i:i + 1400] for i in range(0, len(req), 1400)]
            got, _ = http_exchange(h, pieces, sport=43001)
            assert judge_http(h, req, got, 43001) == "python"


def test_pipelined_then_hostile_keeps_the_order():
    """Answered requests stay answered; the first one the fast path does not
    take, and everything after it, go to Python."""
    ok = b"GET /static/s.txt HTTP/1.1\r\n\r\n"
    bad = b"GET /static/../x HTTP/1.1\r\n\r\n"
    req = ok + ok + bad + ok
    with stack(fast=True) as h:
        got, _ = http_exchange(h, [req], sport=43002)
        assert judge_http(h, req, got, 43002) == "both"
        assert handed_to_python(h, 43002)[1] == bad + ok


@pytest.mark.parametrize("mss", [300, 1460])
def test_python_writes_wait_for_the_fast_responses(mss):
    """A fast-path response still going out, then a request for Python:
    Python's reply follows the fast response on the wire, never inside it."""
    big = b"GET /static/big.bin HTTP/1.1\r\n\r\n"
    other = b"GET /dynamic HTTP/1.1\r\n\r\n"
    reply = b"HTTP/1.1 204 No Content\r\n\r\n"
    with stack(fast=True) as h:
        p = Peer(h, PORT, sport=47000, mss=mss)
        p.connect()
        log = StreamLog(p.rcv_nxt)
        h.sent.clear()
        p.deliver(big + other)
        conn, data = handed_to_python(h, 47000)
        assert data == other
        written = 0
        for _ in range(300):
            if written < len(reply):
                written += max(0, h.write(conn, reply[written:]))
            for seg in h.sent:
                log.add(seg)
            h.sent.clear()
            have = in_order(log)
            n = response_length(have, 1)
            if n is not None and len(have) >= n + len(reply):
                break
            p.tsval += 1
            h.inject(tcp_frame(sport=p.sport, dport=PORT, seq=p.snd_nxt,
                               ack=log.base + len(have), flags="A", options=p.options()))
            h.flush()
        stream = in_order(log)
        n = response_length(stream, 1)
        [(status, hdrs, body)] = parse_responses(stream[:n], [b"GET"])
        assert status == 200 and body == BIG
        assert stream[n:] == reply


def _join(parts):
    return b"".join(parts)


METHODS = [b"GET", b"HEAD", b"get", b"Get", b"GETX", b"GE", b"POST", b"PUT", b"OPTIONS",
           b"CONNECT", b"TRACE", b"PRI", b"HEAD\t", b"\x00GET", b"GET\x00", b""]
SEGMENTS = [b"static", b"a.txt", b"s.txt", b"secret.txt", b"gone.txt", b"empty", b"dir",
            b"x%20y.bin", b"..", b".", b"%2e%2e", b"%2E", b"%2f", b"%2F", b"%5c", b"%00",
            b"%0d%0a", b"%", b"%4", b"%zz", b"%41", b"\\", b"?q=1", b"#f", b"\x00", b"\r",
            b"\n", b"\t", b" ", b"\xc3\xa9", b"\xff", b"/", b"//", b"http:", b"x:80", b"*",
            b"~", b"a" * 300]
TARGETS = st.one_of(
    st.sampled_from([b"/static/a.txt", b"/static/s.txt", b"/static/empty", b"/static/dir/x%20y.bin"]
                    + TRAVERSAL),
    st.lists(st.sampled_from(SEGMENTS), max_size=6).map(lambda s: b"/" + b"/".join(s)),
    st.lists(st.sampled_from(SEGMENTS), max_size=6).map(_join),
)
VERSIONS = [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.2", b"HTTP/2.0", b"http/1.1", b"HTTP/1.1 ",
            b"HTTP/1.10", b"HTTP/1", b"", b"HTTP/1.1\x00", b"HTTP/1.1\r"]
HEADER_NAMES = [b"Host", b"Range", b"If-None-Match", b"If-Modified-Since", b"Connection",
                b"Content-Length", b"Transfer-Encoding", b"Accept-Encoding", b"Expect",
                b"Upgrade", b"If-Range", b"X-Injected", b"Host ", b" Host", b"Ho st",
                b"Host\x00", b"", b"R\xe9f"]
HEADER_VALUES = [b"x", b"", b"x\r\nX-Evil: 1", b"x\nX-Evil: 1", b"x\rX-Evil: 1", b"\x00",
                 b"a\x7fb", b"bytes=0-10", b"bytes=-5", b"bytes=5-", b"bytes=10-5",
                 b"bytes=-0", b"bytes=-", b"bytes=0-99999999999999999999", b"bytes=", b"*",
                 b'"etag-a"', b'W/"etag-a"', b'"etag-s", "x"', b'"etag-a",', b'W/"', b"close",
                 b"keep-alive", b"upgrade", b"close, upgrade", b"0", b"5", b"chunked",
                 b"gzip", b"Fri, 27 Nov 2026 03:22:42 GMT", b"Sun, 06 Nov 1994 08:49:37 GMT",
                 b"Fri, 31 Feb 2026 99:99:99 GMT", b"\t x \t"]
EOLS = [b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b"\r\r\n", b"\n\r"]


GOOD_TARGETS = [b"/static/a.txt", b"/static/s.txt", b"/static/empty", b"/static/dir/x%20y.bin",
                b"/static/big.bin",
                b"/static/a.txt?x=1&y=/../", b"/static/%61.txt", b"/static/a%2etxt"]
GOOD_HEADERS = [(b"Host", b"x"), (b"Range", b"bytes=0-10"), (b"Range", b"bytes=-5"),
                (b"Range", b"bytes=5-"), (b"Range", b"bytes=10-5"), (b"Range", b"bytes=99999-"),
                (b"Range", b"bytes=-"), (b"If-None-Match", b'"etag-a"'),
                (b"If-None-Match", b'W/"etag-s", "zz"'), (b"If-None-Match", b"*"),
                (b"If-Modified-Since", b"Fri, 27 Nov 2026 03:22:42 GMT"),
                (b"If-Modified-Since", b"Sun, 06 Nov 1994 08:49:37 GMT"),
                (b"Connection", b"close"), (b"Connection", b"keep-alive"),
                (b"Accept-Encoding", b"gzip"), (b"User-Agent", b"fuzz/1.0"),
                (b"Content-Length", b"0")]
MUTATIONS = ["method", "target", "version", "header", "insert", "delete", "eol", "append",
             "pad", "dup"]


@st.composite
def mutated_request(draw) -> bytes:
    """A valid GET/HEAD with zero to three things made wrong."""
    method = draw(st.sampled_from([b"GET", b"GET", b"HEAD"]))
    target = draw(st.sampled_from(GOOD_TARGETS))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"]))
    headers = draw(st.lists(st.sampled_from(GOOD_HEADERS), max_size=3, unique_by=lambda h: h[0]))
    muts = draw(st.lists(st.sampled_from(MUTATIONS), max_size=3))
    if "method" in muts:
        method = draw(st.sampled_from(METHODS))
    if "target" in muts:
        target = draw(TARGETS)
    if "version" in muts:
        version = draw(st.sampled_from(VERSIONS))
    if "header" in muts:
        headers.append((draw(st.sampled_from(HEADER_NAMES)), draw(st.sampled_from(HEADER_VALUES))))
    if "dup" in muts and headers:
        headers.append(headers[0])
    if "pad" in muts:
        headers.append((b"X-Pad", b"p" * draw(st.sampled_from([4000, 8100, 8150, 8200, 9000]))))
    req = bytearray(method + b" " + target + b" " + version + b"\r\n"
                    + b"".join(n + b": " + v + b"\r\n" for n, v in headers) + b"\r\n")
    if "insert" in muts:
        req.insert(draw(st.integers(0, len(req))),
                   draw(st.sampled_from(b"\x00\r\n\t %\x7f\xff:/")))
    if "delete" in muts:
        del req[draw(st.integers(0, len(req) - 1))]
    if "eol" in muts:
        at = [m.start() for m in re.finditer(rb"\r\n", req)]
        i = draw(st.sampled_from(at))
        req[i:i + 2] = draw(st.sampled_from([b"\n", b"\r", b"\r\r\n", b"\n\r", b""]))
    if "append" in muts:
        req += draw(st.sampled_from([b"GET /static/s.txt HTTP/1.1\r\n\r\n", b"hello",
                                     b"GET /static/a.txt HTTP/1.1\r\n", b"\r\n", b"\x00",
                                     b"HEAD /static/a.txt HTTP/1.0\r\n\r\n"]))
    return bytes(req)


@st.composite
def composed_request(draw) -> bytes:
    """A request put together from hostile parts."""
    sp = lambda: draw(st.sampled_from([b" ", b" ", b" ", b"  ", b"\t", b"\x00", b"\x0b", b""]))
    eol = lambda: draw(st.sampled_from(EOLS))
    line = (draw(st.sampled_from(METHODS)) + sp() + draw(TARGETS) + sp()
            + draw(st.sampled_from(VERSIONS)) + eol())
    headers = draw(st.lists(st.tuples(st.sampled_from(HEADER_NAMES),
                                      st.sampled_from(HEADER_VALUES)), max_size=5))
    block = line + b"".join(n + b":" + draw(st.sampled_from([b" ", b"", b"\t"])) + v + eol()
                            for n, v in headers)
    if draw(st.booleans()):
        block += b"X-Pad: " + b"p" * draw(st.sampled_from([10, 4000, 8100, 8200, 9000])) + b"\r\n"
    block += eol()
    if draw(st.booleans()):         # pipelined, or a body, or garbage
        block += draw(st.sampled_from([b"GET /static/s.txt HTTP/1.1\r\n\r\n", b"hello",
                                       b"GET /static/a.txt HTTP/1.1\r\n", b"\r\n", b"\x00"]))
    return block


@examples(600)
@given(req=st.one_of(mutated_request(), mutated_request(), composed_request()),
       seg=st.sampled_from([1400, 1400, 7, 1]), mss=st.sampled_from([88, 536, 1460, 1460]))
def test_hostile_http_is_answered_correctly_or_handed_over(req, seg, mss):
    seg = max(seg, len(req) // 40 + 1)
    pieces = [req[i:i + seg] for i in range(0, len(req), seg)]
    with stack(fast=True) as h:
        got, _ = http_exchange(h, pieces, sport=44000, mss=mss)
        event(judge_http(h, req, got, 44000))


# ---- heap accounting for leak reproductions -----------------------------------------

def heap_in_use() -> int:
    """Bytes the C heap has handed out and not taken back (ASan's count
    under the sanitizer build, glibc's otherwise)."""
    proc = ctypes.CDLL(None)
    try:
        f = proc.__sanitizer_get_current_allocated_bytes
    except AttributeError:
        class Mallinfo2(ctypes.Structure):
            _fields_ = [(n, ctypes.c_size_t) for n in (
                "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                "uordblks", "fordblks", "keepcost")]
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.mallinfo2.restype = Mallinfo2
        m = libc.mallinfo2()
        return m.uordblks + m.hblkhd
    f.restype = ctypes.c_size_t
    return f()


def test_heap_in_use_sees_a_malloc():
    """The leak checks below can fail: a C allocation shows up."""
    proc = ctypes.CDLL(None)        # the malloc the engine gets (ASan's when preloaded)
    proc.malloc.restype = ctypes.c_void_p
    before = heap_in_use()
    ptr = proc.malloc(1 << 20)
    try:
        assert heap_in_use() - before >= 1 << 20
    finally:
        proc.free(ctypes.c_void_p(ptr))


# ---- bugs the fuzzers found, fixed: their reproductions stay as tests --------------

@pytest.mark.parametrize("first", [
    b"GET /static/big.bin HTTP/1.1\r\nConnection: close\r\n\r\n",
    b"GET /static/big.bin HTTP/1.0\r\n\r\n"], ids=["close", "http10"])
def test_more_bytes_after_connection_close_do_not_cut_the_response(first):
    """The client pipelines one more request, in its own segment, right after
    a request that asks to close: the fast path must still send the whole
    response (then FIN), as it does when both come in one segment."""
    with stack(fast=True) as h:
        p = Peer(h, PORT, sport=46000)
        p.connect()
        segs = p.deliver(first)
        segs += p.deliver(b"GET /static/s.txt HTTP/1.1\r\n\r\n")
        got = p.absorb(segs)
        for _ in range(100):
            out = p.send(p.seg())
            segs += out
            new = p.absorb(out)
            got += new
            if not new:
                break
        [(status, hdrs, body)] = parse_responses(got, [b"GET"])
        assert status == 200 and body == BIG, f"{len(body)} of {len(BIG)} body bytes"
        assert not any(s.has("R") for s in segs)
        assert h.counters()["drop_data_after_close"] == 0


def test_fast_path_held_request_buffers_do_not_leak():
    """A keep-alive client whose every request arrives in two segments (the
    first ends before the blank line): the heap must not grow per request."""
    head = b"GET /static/s.txt HTTP/1.1\r\nX-Pad: " + b"p" * 1300   # incomplete
    tail = b"\r\n\r\n"

    def requests(h: Stack, p: Peer, n: int) -> None:
        for _ in range(n):
            got = p.absorb(p.deliver(head))
            got += p.absorb(p.deliver(tail))
            got += p.absorb(p.send(p.seg()))
            h.sent.clear()
            assert got.startswith(b"HTTP/1.1 200 OK\r\n") and got.endswith(SMALLFILE)

    with stack(fast=True) as h:
        p = Peer(h, PORT, sport=45000)
        p.connect()
        requests(h, p, 20)          # warm up the Python side
        before = heap_in_use()
        requests(h, p, 400)         # 400 * ~1.3 KiB if each one leaks
        grown = heap_in_use() - before
        assert h.counters()["fast_requests"] == 420
    assert grown < 150_000, f"the C heap grew by {grown} bytes over 400 requests"


# ---- hand-back: Python's answers framed as they are written (http_frame.c) --------

RETURNED = lib.SL_EV_RETURNED
DYNAMIC = b"GET /dynamic HTTP/1.1\r\n\r\n"
AFTER = b"GET /static/s.txt HTTP/1.1\r\n\r\n"


def python_answers(h: Stack, pieces: list[bytes], sport: int,
                   request: bytes = DYNAMIC) -> tuple[str, bytes]:
    """A request for Python and a static one behind it on one connection;
    "Python" writes `pieces` (in one loop iteration), then a poll.  Returns
    the verdict ("back", "pending", or the fast_stay_* counter that moved)
    and what the peer received."""
    p = Peer(h, PORT, sport=sport)
    p.connect()
    before = h.counters()
    got = p.absorb(p.deliver(request + AFTER))
    conn, data = handed_to_python(h, sport)
    assert data == request  # one request at a time; the next one waits
    for piece in pieces:
        assert h.write(conn, piece) == len(piece)
    for _ in range(20):     # polls (later() runs), ACKs for what came
        new = p.absorb(h.advance(0.001))
        new += p.absorb(p.send(p.seg()))
        got += new
        if not new:
            break
    after = h.counters()
    stays = [k for k in after if k.startswith("fast_stay_") and after[k] != before[k]]
    given = b"".join(e.data for e in conn_events(h, conn, DATA))
    # back: Python's transport stays, idle (no event), while the fast path
    # answers; RETURNED only when the fast path ends the connection
    assert not [e for e in h.events if e.conn == conn and e.type == RETURNED]
    h.events = [e for e in h.events if e.conn != conn]
    if after["fast_handbacks"] != before["fast_handbacks"]:
        assert not stays and after["fast_requests"] == before["fast_requests"] + 1
        assert after["fast_handbacks"] == before["fast_handbacks"] + 1
        return "back", got
    assert after["fast_requests"] == before["fast_requests"]
    if not stays:  # not complete yet: the static request still waits
        assert after["fast_handbacks"] == before["fast_handbacks"] and given == request
        return "pending", got
    assert len(stays) == 1, stays
    assert given.endswith(AFTER)  # the static request went to Python
    return stays[0], got


@st.composite
def framed_response(draw) -> bytes:
    """A response whose end RFC 9112 §6.3 makes certain: any status but
    101, interim 1xx first, fields, Content-Length or chunked (any chunks,
    extensions, trailers), or no content (204, 304)."""
    out = b""
    for _ in range(draw(st.integers(0, 2))):
        out += b"HTTP/1.1 %d Interim\r\nX-I: 1\r\n\r\n" % draw(st.sampled_from([100, 102, 103]))
    status = draw(st.sampled_from([200, 201, 204, 206, 301, 304, 404, 500, 599]))
    values = st.text(alphabet="abcXYZ019-_;=,/\"() \t", max_size=20).map(str.encode)
    fields = b"".join(b"X-%d: %s\r\n" % (i, v)
                      for i, v in enumerate(draw(st.lists(values, max_size=4))))
    head = b"HTTP/1.1 %d Some Reason\r\n%s" % (status, fields)
    if status in (204, 304):
        return out + head + b"\r\n"
    body = draw(st.binary(max_size=3000))
    if draw(st.booleans()):
        return out + head + b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    chunks, i = b"", 0
    while i < len(body):
        n = draw(st.integers(1, len(body) - i))
        ext = draw(st.sampled_from([b"", b";a=b", b" ;x"]))
        chunks += b"%x%s\r\n%s\r\n" % (n, ext, body[i:i + n])
        i += n
    trailer = draw(st.sampled_from([b"", b"X-Sum: 9\r\n"]))
    return out + head + b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n" + trailer + \
        b"\r\n"


def cut(data: bytes, points: list[int]) -> list[bytes]:
    points = sorted({p % (len(data) + 1) for p in points})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:]) if b > a]


@examples(150)
@given(resp=framed_response(), points=st.lists(st.integers(0, 1 << 16), max_size=8))
def test_framed_response_in_any_pieces_comes_back(resp, points):
    """A response with a certain end, written in any pieces: the connection
    comes back, the static request behind it is answered in C, after it."""
    with stack(fast=True) as h:
        verdict, got = python_answers(h, cut(resp, points), 30000)
        assert verdict == "back"
        assert got.startswith(resp)
        [(status, _, body)] = parse_responses(got[len(resp):], [b"GET"])
        assert status == 200 and body == SMALLFILE


HOSTILE_RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n Folded: x\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/2 200\r\n\r\n",
    b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
]


@examples(200)
@given(data=st.data(), points=st.lists(st.integers(0, 1 << 16), max_size=6))
def test_any_python_output_in_any_pieces_gives_one_verdict(data, points):
    """Whatever Python writes (hostile, mutated, random bytes), in whatever
    pieces: the engine never crashes, and decides exactly as for the same
    bytes written at once (the framing reads a stream, not writes)."""
    base = data.draw(st.sampled_from(HOSTILE_RESPONSES) | framed_response())
    how = data.draw(st.sampled_from(["as is", "byte", "cut", "random"]))
    if how == "byte" and base:
        i = data.draw(st.integers(0, len(base) - 1))
        base = base[:i] + bytes([data.draw(st.integers(0, 255))]) + base[i + 1:]
    elif how == "cut":
        base = base[:data.draw(st.integers(0, len(base)))]
    elif how == "random":
        base = data.draw(st.binary(min_size=1, max_size=300))
    if not base:
        return
    with stack(fast=True) as h:
        whole, _ = python_answers(h, [base], 31000)
        pieces, _ = python_answers(h, cut(base, points), 31001)
        event(whole)
        assert pieces == whole


@pytest.mark.parametrize("request_", [
    b"HEAD /dynamic HTTP/1.1\r\n\r\n",
    b"POST /p HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
])
def test_head_and_request_bodies_are_framed(request_):
    """HEAD: its response ends at the blank line whatever Content-Length
    says; a request body goes to Python with its request, and only then does
    the connection come back."""
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"
    if not request_.startswith(b"HEAD"):
        resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    with stack(fast=True) as h:
        verdict, got = python_answers(h, [resp], 32000, request=request_)
        assert verdict == "back" and got.startswith(resp)


def test_python_transport_stays_idle_while_the_fast_path_answers():
    """Back with the fast path, the connection keeps Python's transport,
    idle: its writes wait for its turn, its close ends only Python's side
    (no FIN), and the next dynamic request then comes with a new ACCEPT; a
    close by the fast path tells a transport still attached (RETURNED)."""
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    with stack(fast=True) as h:
        p = Peer(h, PORT, sport=33000)
        p.connect()
        p.deliver(DYNAMIC)
        conn, data = handed_to_python(h, 33000)
        assert data == DYNAMIC
        h.events.clear()
        assert h.write(conn, ok) == len(ok)
        p.absorb(h.flush())
        p.absorb(h.advance(0.001))
        before = h.counters()
        assert before["fast_handbacks"] == 1
        assert h.write(conn, b"unasked") == 0          # not Python's turn
        p.absorb(p.deliver(AFTER))
        assert h.counters()["fast_requests"] == before["fast_requests"] + 1
        assert not conn_events(h, conn, DATA)
        assert lib.sl_conn_close(h.ptr, conn) == 0    # an idle timer's close
        assert not any(seg.has("F") for seg in h.flush())
        assert h.info(conn)["flags"] & 32 == 0          # no longer accepted
        h.events.clear()
        p.absorb(p.deliver(DYNAMIC))
        assert [e.conn for e in h.take_events(ACCEPT)] == [conn]
        assert b"".join(e.data for e in conn_events(h, conn, DATA)) == DYNAMIC
        assert h.write(conn, ok) == len(ok)
        p.absorb(h.flush())
        p.absorb(h.advance(0.001))
        assert h.counters()["fast_handbacks"] == 2
        h.events.clear()
        p.absorb(p.deliver(b"GET /static/s.txt HTTP/1.1\r\nConnection: close\r\n\r\n"))
        assert [e.type for e in h.events if e.conn == conn] == [RETURNED]
