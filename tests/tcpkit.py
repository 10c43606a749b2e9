"""Crafted TCP segments against a test engine (no interface, no socket).

``Harness`` wraps :meth:`specloop.engine.Engine.for_test`: frames go in
with ``inject``, what the stack sends comes back as parsed ``Seg`` objects,
the clock is set by the test.  ``Peer`` plays the remote TCP: it builds
segments relative to what it knows of the connection (``seg(seq_off=…,
flags="A")``), so unit tests read like the RFC's examples.
"""

from __future__ import annotations

import dataclasses
import socket
import struct

from specloop.config import Config
from specloop.engine import Engine, ffi, lib

LOCAL_MAC = bytes.fromhex("020000000002")
PEER_MAC = bytes.fromhex("020000000001")
LOCAL_IP = "10.99.0.2"
PEER_IP = "10.99.0.1"

FLAG_BITS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10, "U": 0x20}


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def flags_of(text: str) -> int:
    return sum(FLAG_BITS[c] for c in text)


def tcp_frame(*, src: str = PEER_IP, dst: str = LOCAL_IP, sport: int, dport: int,
              seq: int, ack: int = 0, flags: str | int = "A", window: int = 65535,
              options: bytes = b"", payload: bytes = b"", src_mac: bytes = PEER_MAC,
              dst_mac: bytes = LOCAL_MAC, bad_checksum: bool = False, ttl: int = 64) -> bytes:
    """An Ethernet/IPv4/TCP frame with correct checksums (unless asked)."""
    fl = flags_of(flags) if isinstance(flags, str) else flags
    options += b"\0" * (-len(options) % 4)
    off = (20 + len(options)) // 4
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                      off << 4, fl, window, 0, 0) + options + payload
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(tcp))
    csum = checksum(pseudo + tcp)
    if bad_checksum:
        csum ^= 0x1234
    tcp = tcp[:16] + struct.pack("!H", csum) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0x4000, ttl, 6, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return dst_mac + src_mac + b"\x08\x00" + ip + tcp


ROUTER_IP = "10.99.0.254"


def icmp_frag_needed(seq: int, mtu: int, *, sport: int = 80, dport: int = 40000,
                     quoted_src: str = LOCAL_IP, icmp_type: int = 3, code: int = 4,
                     bad_checksum: bool = False, quote: int = 8) -> bytes:
    """A router's "fragmentation needed" (RFC 792, RFC 1191 §4) about one of
    our segments: the quoted IPv4 header and `quote` bytes of its TCP header."""
    tcp = struct.pack("!HHII", sport, dport, seq & 0xFFFFFFFF, 0) + b"\x50\x10" + b"\0" * 6
    inner = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + 1448, 7, 0x4000, 63, 6, 0,
                        socket.inet_aton(quoted_src), socket.inet_aton(PEER_IP))
    inner = inner[:10] + struct.pack("!H", checksum(inner)) + inner[12:]
    body = struct.pack("!BBHHH", icmp_type, code, 0, 0, mtu) + inner + tcp[:quote]
    csum = checksum(body) ^ (0x1234 if bad_checksum else 0)
    body = body[:2] + struct.pack("!H", csum) + body[4:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0xC0, 20 + len(body), 9, 0, 64, 1, 0,
                     socket.inet_aton(ROUTER_IP), socket.inet_aton(LOCAL_IP))
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return LOCAL_MAC + PEER_MAC + b"\x08\x00" + ip + body


def opt_mss(v: int) -> bytes:
    return struct.pack("!BBH", 2, 4, v)


def opt_ws(v: int) -> bytes:
    return struct.pack("!BBB", 3, 3, v)


OPT_SACK_PERM = b"\x04\x02"


def opt_ts(val: int, ecr: int) -> bytes:
    return struct.pack("!BBII", 8, 10, val & 0xFFFFFFFF, ecr & 0xFFFFFFFF)


def opt_sack(*blocks: tuple[int, int]) -> bytes:
    return struct.pack("!BB", 5, 2 + 8 * len(blocks)) + b"".join(
        struct.pack("!II", a & 0xFFFFFFFF, b & 0xFFFFFFFF) for a, b in blocks)


@dataclasses.dataclass
class Seg:
    """A segment the stack sent, parsed (and its checksums verified)."""

    src: str
    dst: str
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    window: int
    options: dict
    payload: bytes
    checksums_ok: bool
    super_frame: "Super | None" = None  # the GSO super-frame it was cut from

    def has(self, text: str) -> bool:
        return all(self.flags & FLAG_BITS[c] for c in text)

    @property
    def flag_text(self) -> str:
        return "".join(c for c, b in FLAG_BITS.items() if self.flags & b)


def parse(frame: bytes) -> Seg:
    ip = frame[14:]
    ihl = (ip[0] & 15) * 4
    tot = struct.unpack("!H", ip[2:4])[0]
    tcp = ip[ihl:tot]
    src, dst = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
    sport, dport, seq, ack, off, fl, win = struct.unpack("!HHIIBBH", tcp[:16])
    doff = (off >> 4) * 4
    opts: dict = {}
    raw = tcp[20:doff]
    i = 0
    while i < len(raw):
        kind = raw[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        ln = raw[i + 1]
        body = raw[i + 2:i + ln]
        if kind == 2:
            opts["mss"] = struct.unpack("!H", body)[0]
        elif kind == 3:
            opts["ws"] = body[0]
        elif kind == 4:
            opts["sack_perm"] = True
        elif kind == 8:
            opts["ts"] = struct.unpack("!II", body)
        elif kind == 5:
            opts["sack"] = [struct.unpack("!II", body[j:j + 8]) for j in range(0, len(body), 8)]
        i += ln
    pseudo = ip[12:20] + struct.pack("!BBH", 0, 6, len(tcp))
    ok = checksum(ip[:ihl]) == 0 and checksum(pseudo + tcp) == 0
    return Seg(src, dst, sport, dport, seq, ack, fl, win, opts, tcp[doff:], ok)


VNET_HDR = struct.Struct("=BBHHHH")  # struct virtio_net_hdr, host byte order
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_GSO_TCPV4 = 1


@dataclasses.dataclass
class Super:
    """A GSO super-frame the stack sent: its virtio_net_hdr, the frame, and
    what the kernel's segmentation (tcp_gso_segment) makes of it."""

    vnet_flags: int
    gso_type: int
    hdr_len: int
    gso_size: int
    csum_start: int
    csum_offset: int
    frame: bytes = dataclasses.field(repr=False)

    @classmethod
    def parse(cls, data: bytes) -> "Super":
        return cls(*VNET_HDR.unpack_from(data), frame=data[VNET_HDR.size:])

    @property
    def whole(self) -> Seg:
        """The frame as one segment (its checksum is a partial one)."""
        return parse(self.frame)

    def partial_checksum_ok(self) -> bool:
        """The TCP checksum field holds the folded, not complemented,
        pseudo-header sum of the whole TCP length (NEEDS_CSUM)."""
        ip = self.frame[14:]
        tcp_len = struct.unpack("!H", ip[2:4])[0] - (ip[0] & 15) * 4
        pseudo = ip[12:20] + struct.pack("!BBH", 0, 6, tcp_len)
        field = struct.unpack("!H", self.frame[self.csum_start + self.csum_offset:
                                              self.csum_start + self.csum_offset + 2])[0]
        return field == ~checksum(pseudo) & 0xFFFF

    def segments(self) -> list[Seg]:
        """The MSS-sized segments the kernel cuts it into: sequence numbers
        and IPv4 ids counted on, FIN and PSH on the last only, checksums
        completed."""
        f = self.frame
        ihl = (f[14] & 15) * 4
        hdr = f[:self.hdr_len]
        payload = f[self.hdr_len:14 + struct.unpack("!H", f[16:18])[0]]
        seq0 = struct.unpack("!I", hdr[14 + ihl + 4:14 + ihl + 8])[0]
        ipid0 = struct.unpack("!H", hdr[18:20])[0]
        out = []
        chunks = [payload[i:i + self.gso_size] for i in range(0, len(payload), self.gso_size)]
        for n, chunk in enumerate(chunks):
            h = bytearray(hdr)
            struct.pack_into("!H", h, 16, len(h) - 14 + len(chunk))
            struct.pack_into("!H", h, 18, (ipid0 + n) & 0xFFFF)
            struct.pack_into("!H", h, 24, 0)
            struct.pack_into("!H", h, 24, checksum(bytes(h[14:14 + ihl])))
            t = 14 + ihl
            struct.pack_into("!I", h, t + 4, (seq0 + n * self.gso_size) & 0xFFFFFFFF)
            if n != len(chunks) - 1:
                h[t + 13] &= ~(FLAG_BITS["F"] | FLAG_BITS["P"]) & 0xFF
            struct.pack_into("!H", h, t + 16, 0)
            tcp = bytes(h[t:]) + chunk
            pseudo = h[26:34] + struct.pack("!BBH", 0, 6, len(tcp))
            struct.pack_into("!H", h, t + 16, checksum(bytes(pseudo) + tcp))
            seg = parse(bytes(h) + chunk)
            seg.super_frame = self
            out.append(seg)
        return out


@dataclasses.dataclass
class Event:
    type: int
    conn: int
    arg: int
    err: int
    data: bytes


class Harness:
    """A test engine with helpers.  ``settings`` go to Config."""

    def __init__(self, **settings):
        cfg = Config.resolve({"frame_count": 4096, "ring_size": 256, "max_conns": 1024,
                              **settings}, environ={})
        self.engine = Engine.for_test(cfg, mac=LOCAL_MAC.hex(":"), ipv4=LOCAL_IP)
        self.ptr = self.engine.ptr
        self.now = 1_000_000_000  # µs; the tests move it
        self.engine.set_clock(self.now)
        self.events: list[Event] = []
        self.supers: list[Super] = []  # GSO super-frames sent (tx_gso="on")

    def close(self) -> None:
        self.engine.close()

    def advance(self, seconds: float) -> list["Seg"]:
        """Moves the clock and lets timers fire (a poll), then flushes;
        returns what the stack sent."""
        self.now += int(seconds * 1e6)
        self.engine.set_clock(self.now)
        self._collect(self.engine.poll(0))
        return self.flush()

    def _collect(self, n: int) -> None:
        for i in range(n):
            ev = self.engine.events[i]
            data = ffi.buffer(ev.data, ev.len)[:] if ev.len else b""
            self.events.append(Event(ev.type, ev.conn, ev.arg, ev.err, data))

    def inject(self, frame: bytes) -> None:
        self._collect(self.engine.inject(frame))

    def flush(self) -> list[Seg]:
        """End of a loop iteration: what the stack sends now (a GSO
        super-frame as the segments the kernel cuts it into, each with its
        ``super_frame``; ``self.supers`` keeps them whole)."""
        self.engine.flush()
        out = []
        while (got := self.engine.tx_next()) is not None:
            data, flags = got
            if flags & lib.SL_TX_GSO:
                sf = Super.parse(data)
                self.supers.append(sf)
                out += sf.segments()
            else:
                out.append(parse(data))
        return out

    def take_events(self, type_: int | None = None) -> list[Event]:
        evs = [e for e in self.events if type_ is None or e.type == type_]
        self.events = [e for e in self.events if e not in evs]
        return evs

    def counters(self) -> dict:
        return self.engine.counters()

    def listen(self, port: int, backlog: int = 16) -> int:
        rc = lib.sl_listen(self.ptr, port, backlog, 1)
        assert rc >= 0, rc
        return rc

    def write(self, conn: int, data: bytes) -> int:
        return lib.sl_conn_write(self.ptr, conn, ffi.from_buffer(data), len(data))

    def info(self, conn: int) -> dict:
        out = ffi.new("struct sl_conn_info *")
        rc = lib.sl_conn_info(self.ptr, conn, out)
        assert rc == 0, rc
        return {name: getattr(out, name) for name, _ in ffi.typeof(out[0]).fields}


class Peer:
    """The remote end of one connection, built from what the stack sent."""

    def __init__(self, h: Harness, port: int, sport: int = 40000, isn: int = 1000,
                 ts: bool = True, sack: bool = True, ws: int | None = 7, mss: int = 1460):
        self.h, self.port, self.sport = h, port, sport
        self.isn = isn
        self.snd_nxt = isn          # our next sequence number
        self.rcv_nxt = 0            # the stack's next sequence number
        self.ts, self.sack, self.ws, self.mss = ts, sack, ws, mss
        self.tsval = 5000
        self.ts_recent = 0
        self.conn = 0

    def options(self, syn: bool = False) -> bytes:
        o = b""
        if syn:
            o += opt_mss(self.mss)
            if self.sack:
                o += OPT_SACK_PERM
            if self.ws is not None:
                o += opt_ws(self.ws)
        if self.ts:
            o += b"\x01\x01" + opt_ts(self.tsval, self.ts_recent)
        return o

    def seg(self, *, seq_off: int = 0, ack_off: int = 0, flags: str = "A",
            payload: bytes = b"", window: int = 65535, options: bytes | None = None,
            **kw) -> bytes:
        """A segment from the peer, sequence numbers relative to its state."""
        return tcp_frame(sport=self.sport, dport=self.port, seq=self.snd_nxt + seq_off,
                         ack=self.rcv_nxt + ack_off, flags=flags, window=window,
                         options=self.options() if options is None else options,
                         payload=payload, **kw)

    def send(self, frame: bytes) -> list[Seg]:
        self.h.inject(frame)
        return self.h.flush()

    def connect(self, rtt: float = 0.0) -> list[Seg]:
        """Three-way handshake, the ACK ``rtt`` seconds after the SYN-ACK;
        returns the SYN-ACK (as a list of segments)."""
        syn = tcp_frame(sport=self.sport, dport=self.port, seq=self.isn, flags="S",
                        window=65535, options=self.options(syn=True))
        out = self.send(syn)
        synacks = [s for s in out if s.has("SA")]
        assert synacks, out
        sa = synacks[0]
        self.snd_nxt = self.isn + 1
        self.rcv_nxt = sa.seq + 1
        if "ts" in sa.options:
            self.ts_recent = sa.options["ts"][0]
        self.tsval += 1
        if rtt:
            self.h.advance(rtt)
        self.send(self.seg())
        acc = self.h.take_events(lib.SL_EV_ACCEPT)
        if acc:
            self.conn = acc[-1].conn
        return out

    def deliver(self, payload: bytes, flags: str = "PA") -> list[Seg]:
        """Sends payload in order and advances our sequence number."""
        out = self.send(self.seg(flags=flags, payload=payload))
        self.snd_nxt += len(payload) + (1 if "F" in flags else 0)
        return out

    def absorb(self, segs: list[Seg]) -> bytes:
        """Takes in-order data the stack sent; returns it."""
        data = b""
        for s in segs:
            if s.seq == self.rcv_nxt and (s.payload or s.has("F")):
                data += s.payload
                self.rcv_nxt += len(s.payload) + (1 if s.has("F") else 0)
            if "ts" in s.options:
                self.ts_recent = s.options["ts"][0]
        return data
