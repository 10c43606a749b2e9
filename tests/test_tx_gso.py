"""GSO super-frames on the lab's veth (tx_gso, native/tx_gso.c).

Runs of full segments leave the engine as one packet of up to 64 KiB
through a packet socket; the rest, retransmissions included, as AF_XDP
frames.  Served to real kernel clients in the client namespace: static
fast-path bodies and Python-written bodies, byte for byte, on a clean link,
under loss, reordering and duplication, and to a reader whose window
closes and shrinks.  One connection's data never reorders across the two
TX paths: a capture on the client veth shows every data packet either
continuing the stream exactly or resending what was sent before.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import struct
import subprocess
import sys
import textwrap

import pytest

import specloop
from specloop import netlab

from labtools import arun_client, client_argv, nft_loss, serving_files_and_bytes

pytestmark = pytest.mark.lab

PORT = 8094
URL = f"http://{netlab.SERVER_IP}:{PORT}"
SIZES = {"one.bin": 1 << 20, "sixteen.bin": 16 << 20}


def pattern(n: int) -> bytes:
    """n deterministic bytes (not a multiple of the MSS anywhere)."""
    block = hashlib.sha256(b"gso").digest() * 2047
    return (block * (n // len(block) + 1))[:n]


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("gso")
    os.chmod(d, 0o755)
    for name, size in SIZES.items():
        (d / name).write_bytes(os.urandom(size))
    return d


def serving(files):
    """aiohttp with the static fast path on /static (files up to 8 MiB;
    larger ones are FileResponse's sendfile) and Python-written bodies on
    /bytes?n=N."""
    return serving_files_and_bytes(files, PORT, pattern, max_file_size=8 << 20)


async def curl_digests(*urls: str, timeout: float = 120) -> list[str]:
    """sha256 of each URL's body, fetched one after the other by curl."""
    rc, out, err = await arun_client(
        "sh", "-c", " ; ".join(f"curl -sS '{u}' | sha256sum" for u in urls), timeout=timeout)
    assert rc == 0, err.decode()[-2000:]
    return [line.split()[0] for line in out.decode().splitlines()]


AIOHTTP_CLIENT = """
import asyncio, hashlib, sys
import aiohttp
async def main():
    async with aiohttp.ClientSession() as s:   # one keep-alive connection
        for url in sys.argv[1:]:
            async with s.get(url) as r:
                h = hashlib.sha256()
                async for chunk in r.content.iter_any():
                    h.update(chunk)
                print(r.status, h.hexdigest())
asyncio.run(main())
"""


async def aiohttp_digests(*urls: str, timeout: float = 120) -> list[str]:
    rc, out, err = await arun_client(sys.executable, "-c", AIOHTTP_CLIENT, *urls,
                                     timeout=timeout)
    assert rc == 0, err.decode()[-2000:]
    lines = [line.split() for line in out.decode().splitlines()]
    assert [status for status, _ in lines] == ["200"] * len(urls), lines
    return [d for _, d in lines]


def expected(files) -> tuple[list[str], list[str]]:
    urls, want = [], []
    for name, size in SIZES.items():
        urls += [f"{URL}/static/{name}", f"{URL}/bytes?n={size + 1001}"]
        want += [digest((files / name).read_bytes()), digest(pattern(size + 1001))]
    return urls, want


def test_static_and_python_bodies_byte_exact_with_super_frames(gso_loop, files):
    loop = gso_loop
    urls, want = expected(files)

    async def main():
        async with serving(files):
            assert await curl_digests(*urls) == want
            assert await aiohttp_digests(*urls) == want

    loop.run_until_complete(asyncio.wait_for(main(), 240))
    c = loop.stack.counters()
    assert c["tx_gso_available"] == 1 and c["tx_gso_errors"] == 0
    body_bytes = 2 * sum(size * 2 + 1001 for size in SIZES.values())
    # nearly every byte went in super-frames, many segments each
    assert c["tx_gso_bytes"] > body_bytes * 0.9
    assert c["tx_gso_segments"] > 8 * c["tx_gso_frames"] > 0
    # one.bin from the fast path (curl's and aiohttp's); sixteen.bin is over
    # max_file_size: FileResponse's sendfile (loop.sendfile: file pages read
    # straight into segments, framed by hand-back as they are queued), and
    # each keep-alive connection comes back after it and after /bytes
    assert c["fast_requests"] == 2
    assert c["fast_handovers"] == 6 and c["fast_handbacks"] >= 4


def two_files_counters(ifname: str, tx_gso: str, files) -> dict:
    """A fresh loop with ``tx_gso`` serves the first two URLs to curl,
    byte-exact; returns its engine's counters."""
    urls, want = expected(files)
    loop = specloop.new_event_loop(interface=ifname, tx_gso=tx_gso)
    asyncio.set_event_loop(loop)
    try:
        async def main():
            async with serving(files):
                assert await curl_digests(urls[0], urls[1]) == want[:2]

        loop.run_until_complete(asyncio.wait_for(main(), 120))
        return loop.stack.counters()
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def test_tx_gso_off_and_auto(in_server_ns, files):
    """off: every segment an AF_XDP frame, as before; auto: on here."""
    for mode, available in (("off", 0), ("auto", 1)):
        c = two_files_counters(in_server_ns.server_if, mode, files)
        assert c["tx_gso_available"] == available, mode
        assert (c["tx_gso_frames"] > 0) == bool(available), mode
        assert c["tx_gso_fallback_segments"] == 0


def test_tx_gso_without_tso(in_server_ns, files):
    """TSO off on the interface: auto sends frames (the bypass to the driver
    cannot segment; nothing is tried and fails); on has the kernel cut its
    super-frames in software on the qdisc path.  Bytes exact either way."""
    ifname = in_server_ns.server_if

    def tso(state: str) -> None:
        subprocess.run(["ethtool", "-K", ifname, "tso", state, "gso", state], check=True,
                       capture_output=True)

    tso("off")
    try:
        for mode in ("auto", "on"):
            c = two_files_counters(ifname, mode, files)
            assert c["tx_gso_errors"] == 0 and c["tx_gso_fallback_segments"] == 0, (mode, c)
            if mode == "auto":
                assert (c["tx_gso_available"], c["tx_gso_software"],
                        c["tx_gso_frames"]) == (0, 0, 0), c
            else:
                assert c["tx_gso_available"] == c["tx_gso_software"] == 1, c
                assert c["tx_gso_segments"] > c["tx_gso_frames"] > 0, c
    finally:
        tso("on")


# ---- one connection's order across the two TX paths --------------------------------

def read_pcap(path: str) -> list[bytes]:
    """The frames of a classic pcap file (Ethernet, any snap length)."""
    with open(path, "rb") as f:
        data = f.read()
    magic = data[:4]
    endian = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">",
              b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">"}[magic]
    assert struct.unpack(endian + "I", data[20:24])[0] == 1  # LINKTYPE_ETHERNET
    frames, off = [], 24
    while off + 16 <= len(data):
        incl = struct.unpack(endian + "I", data[off + 8:off + 12])[0]
        frames.append(data[off + 16:off + 16 + incl])
        off += 16 + incl
    return frames


def order_violations(frames: list[bytes], sport: int) -> tuple[list, int, int]:
    """Per connection from sport, every data packet must either continue
    the stream exactly where the highest byte sent so far ends (new data)
    or lie wholly below it (a retransmission).  A gap or a partial overlap
    means data overtook data sent before it.  Returns the violations, the
    number of data packets, and how many were retransmissions."""
    top: dict[int, int] = {}
    bad, n, resent = [], 0, 0
    for f in frames:
        if len(f) < 54 or f[12:14] != b"\x08\x00" or f[23] != 6:
            continue
        ihl = (f[14] & 15) * 4
        tot = struct.unpack("!H", f[16:18])[0]
        t = 14 + ihl
        src, dst, seq = struct.unpack("!HHI", f[t:t + 8])
        if src != sport:
            continue
        plen = tot - ihl - (f[t + 12] >> 4) * 4
        if plen <= 0:
            continue
        n += 1
        end = (seq + plen) & 0xFFFFFFFF
        if dst not in top:
            top[dst] = end
            continue
        gap = ((seq - top[dst] + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)
        past = ((end - top[dst] + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)
        if gap == 0:
            top[dst] = end
        elif past <= 0:
            resent += 1
        else:
            bad.append((dst, seq, plen, top[dst]))
    return bad, n, resent


@contextlib.contextmanager
def capture(path: str, port: int):
    """tcpdump on the client veth: the server's packets in the order they
    reached the client (before its netfilter drops them)."""
    proc = subprocess.Popen(client_argv("tcpdump", "--immediate-mode", "-i", netlab.CLIENT_IF,
                                        "-nn", "-s", "128", "-B", "65536", "-w", path,
                                        f"tcp src port {port}"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert "listening" in line, line
        yield proc
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        proc.stats = err  # "N packets captured ... M packets dropped by kernel"


@contextlib.contextmanager
def pinned_thread(cpu: int):
    """This thread on one CPU: two packets it sends cannot cross on the
    veth by being queued to two CPUs' backlogs (that is the kernel's
    reordering, not ours)."""
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu % os.cpu_count()})
    try:
        yield
    finally:
        os.sched_setaffinity(0, old)


def test_data_never_goes_backwards_across_the_two_paths(gso_loop, files, tmp_path):
    """Under loss both paths carry one connection's data: new runs as
    super-frames, retransmissions as AF_XDP frames.  On the wire every data
    packet continues the stream or resends what was sent before."""
    loop = gso_loop
    urls, want = expected(files)
    pcap = str(tmp_path / "srv.pcap")

    async def main():
        async with serving(files):
            with nft_loss(3):
                assert await curl_digests(*urls, timeout=180) == want

    with pinned_thread(1), capture(pcap, PORT) as dump:
        loop.run_until_complete(asyncio.wait_for(main(), 240))
    captured, received, dropped = (int(line.split()[0]) for line in dump.stats.splitlines()[-3:])
    assert captured == received and dropped == 0, dump.stats
    bad, n, resent = order_violations(read_pcap(pcap), PORT)
    c = loop.stack.counters()
    assert c["tx_gso_frames"] > 100 and c["retransmits"] > 10, c
    assert resent > 10 and n > c["tx_gso_frames"]
    assert bad == [], bad[:10]


def test_order_check_sees_a_reordered_stream():
    """The check above, on made-up frames: it tells a retransmission from
    new data that overtook older data."""
    def frame(seq: int, plen: int) -> bytes:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + 20 + plen, 0, 0, 64, 6, 0,
                         b"\x0a\0\0\x02", b"\x0a\0\0\x01")
        return b"\0" * 12 + b"\x08\x00" + ip + struct.pack("!HHIIBBHHH", PORT, 5000, seq, 0,
                                                             0x50, 0x10, 0, 0, 0)
    good = [frame(1000, 100), frame(1100, 300), frame(1100, 100), frame(1400, 50)]
    assert order_violations(good, PORT) == ([], 4, 1)
    overtaken = [frame(1000, 100), frame(1200, 100), frame(1100, 100)]
    assert order_violations(overtaken, PORT)[0] == [(5000, 1200, 100, 1100)]
    wrapped = [frame(0xFFFFFF00, 0x100), frame(0, 10), frame(0xFFFFFF80, 0x10)]
    assert order_violations(wrapped, PORT) == ([], 3, 1)


# ---- faults ------------------------------------------------------------------------

def test_byte_exact_under_loss_reordering_and_duplication(gso_loop, files):
    loop = gso_loop
    urls, want = expected(files)
    loop.stack.impair(tx_reorder=0.05, rx_reorder=0.05, tx_dup=0.01, rx_dup=0.01, seed=7)

    async def main():
        async with serving(files):
            with nft_loss(5):
                assert await curl_digests(*urls, timeout=240) == want

    loop.run_until_complete(asyncio.wait_for(main(), 300))
    c = loop.stack.counters()
    assert c["tx_gso_frames"] > 50 and c["retransmits"] > 50
    assert c["impair_tx_reordered"] > 10 and c["impair_tx_duplicated"] > 0
    loop.stack.unimpair()


READER = """
import hashlib, socket, sys, time
slow = {slow}
s = socket.socket()
if slow:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window, scale 0
if {mss}:
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, {mss})
s.settimeout(120)
s.connect(("{host}", {port}))
for path in sys.argv[1:]:
    s.sendall(("GET " + path + " HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n").encode())
    if slow:
        time.sleep(1.0)              # the window closes: zero-window probes
    head = b""
    while b"\\r\\n\\r\\n" not in head:
        head += s.recv(1)
    n = int([l for l in head.split(b"\\r\\n") if l.lower().startswith(b"content-length")]
            [0].split(b":")[1])
    h, got, i = hashlib.sha256(), 0, 0
    while got < n:
        d = s.recv(min(1500 if slow else 1 << 20, n - got))
        if not d:
            break
        h.update(d)
        got += len(d)
        i += 1
        if slow and i % 64 == 0:
            time.sleep(0.002)        # slow: the window opens and closes
    print(got, h.hexdigest(), flush=True)
"""


def read_both(loop, files, *, slow: bool = False, mss: int = 0) -> None:
    """The 1 MiB static file and a Python-written body, on one keep-alive
    connection from a Python reader in the client namespace."""
    big = files / "one.bin"
    paths = ["/static/one.bin", f"/bytes?n={(1 << 20) + 77}"]
    want = [f"{1 << 20} {digest(big.read_bytes())}",
            f"{(1 << 20) + 77} {digest(pattern((1 << 20) + 77))}"]
    code = textwrap.dedent(READER.format(host=netlab.SERVER_IP, port=PORT, slow=slow, mss=mss))

    async def main():
        async with serving(files):
            rc, out, err = await arun_client(sys.executable, "-c", code, *paths, timeout=150)
            assert rc == 0, err.decode()[-2000:]
            assert out.decode().splitlines() == want

    loop.run_until_complete(asyncio.wait_for(main(), 180))


def test_zero_and_shrinking_window_reader_gets_every_byte(gso_loop, files):
    """A reader with a 4 KiB receive buffer that stops, then reads slowly,
    in a namespace whose kernel may shrink its window
    (net.ipv4.tcp_shrink_window=1): every byte arrives."""
    sysctl = "net.ipv4.tcp_shrink_window"
    old = subprocess.run(client_argv("sysctl", "-n", sysctl), capture_output=True,
                         text=True).stdout.strip()
    if old:
        subprocess.run(client_argv("sysctl", "-qw", f"{sysctl}=1"), check=True)
    try:
        read_both(gso_loop, files, slow=True)
    finally:
        if old:
            subprocess.run(client_argv("sysctl", "-qw", f"{sysctl}={old}"), check=True)
    c = gso_loop.stack.counters()
    assert c["tx_gso_frames"] > 0 and c["zero_window_probes"] > 0


def test_small_peer_mss(gso_loop, files):
    """A peer announcing MSS 600: super-frames are cut at 588 bytes (600
    minus the timestamp option) and the kernel takes them as such."""
    read_both(gso_loop, files, mss=600)
    c = gso_loop.stack.counters()
    assert c["tx_gso_frames"] > 0 and c["tx_gso_errors"] == 0
    assert c["tx_gso_bytes"] / c["tx_gso_segments"] <= 588
