"""Writes the seed corpus for native/fuzz/fuzz_input.c into a directory.

Each seed is a program in fuzz_input.c's format (see its header comment):
valid handshakes, fast-path requests (whole, cut, pipelined, ranges),
connections handed to "Python" with writes, SACK and timers, a SYN flood
answered with cookies, TIME-WAIT reuse, files replaced under a response.
The fuzzer mutates from there into the states they reach.

    python native/fuzz/make_corpus.py build/fuzz/seeds
"""

from __future__ import annotations

import pathlib
import struct
import sys

RAW, SYN, SEG, MUT, FLUSH, HTTP, CLOCK, API, ACK, STATIC, LISTEN, FLOOD = range(12)
FIN, SYNF, RST, PSH, ACKF = 0x01, 0x02, 0x04, 0x08, 0x10
ALL_OPTS = 0x0F
P_FAST, P_FAST2, P_PLAIN, P_OTHER = range(4)


def u16(v: int) -> bytes:
    return struct.pack("!H", v & 0xFFFF)


def u32(v: int) -> bytes:
    return struct.pack("!I", v & 0xFFFFFFFF)


def syn(peer: int, isn: int = 1000, opt: int = ALL_OPTS, mss: int = 1460, ws: int = 7) -> bytes:
    return bytes([SYN, peer, opt]) + u16(mss) + bytes([ws]) + u32(isn)


def seg(peer: int, flags: int = ACKF, payload: bytes = b"", *, seqm: int = 0, ackm: int = 0,
        seq: int = 0, ack: int = 0, wnd: int = 65535, optm: int = 1,
        sack: list[tuple[int, int]] = (), raw_opts: bytes | None = None) -> bytes:
    out = bytes([SEG, peer, flags, seqm, ackm]) + u32(seq) + u32(ack) + u16(wnd)
    if sack:
        optm |= 2 | ((len(sack) - 1) << 2)
    if raw_opts is not None:
        optm |= 0x80
    out += bytes([optm])
    for a, b in sack:
        out += u16(a) + u16(b)
    if raw_opts is not None:
        out += bytes([len(raw_opts)]) + raw_opts
    return out + u16(len(payload)) + payload


def mut(segment: bytes, how: int, at: int, val: int) -> bytes:
    return bytes([MUT]) + segment[1:] + bytes([how]) + u16(at) + bytes([val])


def http(peer: int, which: int, cut: int = 0) -> bytes:
    return bytes([HTTP, peer, which, cut])


def ack(peer: int, wnd: int = 65535) -> bytes:
    return bytes([ACK, peer]) + u16(wnd)


def clock(step: int) -> bytes:
    return bytes([CLOCK, step])


def api(which: int, call: int, arg: int = 0) -> bytes:
    return bytes([API, which, call]) + u16(arg)


def flush() -> bytes:
    return bytes([FLUSH])


def drain(peer: int, rounds: int = 6) -> bytes:
    return (flush() + ack(peer)) * rounds + flush()


def connect(peer: int, **kw) -> bytes:
    return syn(peer, **kw) + flush() + ack(peer) + flush()


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def raw_syn(sport: int, dport: int) -> bytes:
    """A whole SYN frame, for the RAW operation."""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 77, 0, 6 << 4, SYNF, 65535, 0, 0) + \
        b"\x02\x04\x05\xb4"
    src, dst = bytes([10, 99, 0, 1]), bytes([10, 99, 0, 2])
    c = checksum(src + dst + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)
    tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0x4000, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    frame = bytes([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 8, 0]) + ip + tcp
    return bytes([RAW]) + u16(len(frame)) + frame


SEEDS = {
    "fast-get": b"\x00" + connect(P_FAST) + http(P_FAST, 0) + drain(P_FAST),
    "fast-cut-pipelined": b"\x01" + connect(P_FAST2) + http(P_FAST2, 5, 17) + drain(P_FAST2)
    + seg(P_FAST2, FIN | ACKF) + drain(P_FAST2, 2),
    "fast-range-big": b"\x02" + connect(P_FAST) + http(P_FAST, 2, 30) + drain(P_FAST, 12),
    "fast-head-close": b"\x03" + connect(P_FAST) + http(P_FAST, 1) + http(P_FAST, 4)
    + drain(P_FAST, 4),
    "fast-handover": b"\x00" + connect(P_FAST) + http(P_FAST, 7) + http(P_FAST, 0)
    + drain(P_FAST) + api(0, 0, 500) + drain(P_FAST, 3) + api(0, 4),
    # hand-back: Python answers (API 10/11: canned responses), the
    # connection comes back, the held requests are served or handed on
    "fast-handback": b"\x00" + connect(P_FAST) + http(P_FAST, 12) + drain(P_FAST)
    + api(0, 10, 0) + drain(P_FAST, 3) + api(0, 10, 3) + drain(P_FAST, 4),
    "fast-handback-cut": b"\x00" + connect(P_FAST) + http(P_FAST, 13, 40) + drain(P_FAST)
    + api(0, 11, (20 << 8) | 2) + flush() + api(0, 11, (200 << 8) | 2) + drain(P_FAST, 4)
    + api(0, 10, 1) + drain(P_FAST, 3),
    "fast-handback-stays": b"\x00" + connect(P_FAST) + http(P_FAST, 12) + drain(P_FAST)
    + api(0, 10, 4) + drain(P_FAST, 3) + http(P_FAST, 14) + http(P_FAST, 15)
    + seg(P_FAST, FIN | ACKF) + drain(P_FAST, 3),
    "fast-variants": b"\x00" + connect(P_FAST) + http(P_FAST, 17) + drain(P_FAST, 10),
    "fast-incomplete-eof": b"\x10" + connect(P_FAST) + http(P_FAST, 10)
    + seg(P_FAST, FIN | ACKF) + drain(P_FAST, 3),
    "fast-keepalive-idle": b"\x10" + connect(P_FAST) + http(P_FAST, 0) + drain(P_FAST)
    + clock(5) + clock(5) + drain(P_FAST, 2),
    "fast-file-replaced": b"\x00" + connect(P_FAST) + http(P_FAST, 2) + flush()
    + bytes([STATIC, 2]) + ack(P_FAST) + bytes([STATIC, 0]) + drain(P_FAST, 10),
    "fast-listener-closed": b"\x00" + connect(P_FAST) + http(P_FAST, 10) + bytes([LISTEN, 4])
    + drain(P_FAST, 3) + bytes([LISTEN, 6]) + connect(P_FAST2) + http(P_FAST2, 0)
    + drain(P_FAST2),
    "fast-cut-twice": b"\x00" + connect(P_FAST) + http(P_FAST, 0, 10) + drain(P_FAST, 2)
    + http(P_FAST, 0, 10) + drain(P_FAST, 2),
    "plain-echo": b"\x01" + connect(P_PLAIN) + seg(P_PLAIN, PSH | ACKF, b"hello")
    + api(0, 0, 3000) + drain(P_PLAIN, 4) + api(0, 3) + drain(P_PLAIN, 2)
    + seg(P_PLAIN, FIN | ACKF) + drain(P_PLAIN, 2) + clock(6),
    "plain-sack-rto": b"\x02" + connect(P_PLAIN) + api(0, 1, 4000) + flush()
    + seg(P_PLAIN, ackm=2, ack=90, sack=[(200, 400), (600, 800)])
    + seg(P_PLAIN, sack=[(500, 300)]) + clock(3) + clock(4) + drain(P_PLAIN, 10),
    "plain-ooo-data": b"\x03" + connect(P_PLAIN) + seg(P_PLAIN, PSH | ACKF, b"B" * 500,
                                                       seqm=1, seq=100)
    + seg(P_PLAIN, PSH | ACKF, b"A" * 100) + seg(P_PLAIN, PSH | ACKF, b"C" * 300, seqm=1, seq=50)
    + drain(P_PLAIN, 2) + api(0, 6) + seg(P_PLAIN, PSH | ACKF, b"D" * 1000) + api(0, 7)
    + drain(P_PLAIN, 2),
    "plain-time-wait-reuse": b"\x00" + connect(P_PLAIN) + seg(P_PLAIN, FIN | ACKF)
    + flush() + api(0, 4) + drain(P_PLAIN, 2) + syn(P_PLAIN, isn=900000) + drain(P_PLAIN, 2),
    "plain-zero-window": b"\x00" + connect(P_PLAIN) + api(0, 1, 4000) + flush()
    + ack(P_PLAIN, 1) + clock(4) + clock(5) + ack(P_PLAIN) + drain(P_PLAIN, 6),
    "syn-flood-cookies": b"\x08" + bytes([FLOOD, 20]) + flush() + connect(P_FAST)
    + http(P_FAST, 0) + drain(P_FAST, 3),
    "closed-port": b"\x00" + connect(P_OTHER) + seg(P_OTHER, PSH | ACKF, b"x") + flush(),
    "mutations": b"\x00" + connect(P_PLAIN)
    + mut(seg(P_PLAIN, PSH | ACKF, b"abc"), 0, 20, 0x55)
    + mut(seg(P_PLAIN, PSH | ACKF, b"abc"), 1, 40, 0)
    + mut(seg(P_PLAIN, PSH | ACKF, b"abc"), 2, 0, 7)
    + mut(seg(P_PLAIN, PSH | ACKF, b"abc"), 3, 0x2000, 0)
    + mut(seg(P_PLAIN, PSH | ACKF, b"abc"), 5, 0, 3)
    + mut(seg(P_PLAIN, PSH | ACKF, b"abc"), 7, 21, 0xFF) + drain(P_PLAIN, 2),
    "options": b"\x00" + syn(P_PLAIN, opt=ALL_OPTS, mss=0, ws=200) + flush() + ack(P_PLAIN)
    + seg(P_PLAIN, raw_opts=b"\x05\x0a" + u32(1) + u32(0) + b"\x08\x0a" + u32(9) + u32(9))
    + seg(P_PLAIN, raw_opts=b"\x03\x00\x01\x01") + api(0, 0, 2000) + drain(P_PLAIN, 3),
    "raw-syn": b"\x00" + raw_syn(45000, 80) + raw_syn(45001, 81) + flush(),
    "rst-and-syn-in-window": b"\x00" + connect(P_PLAIN) + seg(P_PLAIN, RST, seqm=1, seq=5)
    + seg(P_PLAIN, SYNF, seqm=1, seq=9) + flush() + seg(P_PLAIN, RST) + flush(),
}


def main(out: str) -> None:
    d = pathlib.Path(out)
    d.mkdir(parents=True, exist_ok=True)
    for name, data in SEEDS.items():
        (d / name).write_bytes(data)
        # the same program with GSO super-frames on (configuration bit 6)
        (d / f"{name}-gso").write_bytes(bytes([data[0] | 0x40]) + data[1:])
    print(f"{2 * len(SEEDS)} seeds in {d}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "build/fuzz/seeds")
