"""specloop's TCP on a bad link: loss, reordering, duplication, delay.

netem is absent on this kernel (FACTS.md), so the link is impaired by the
test: nftables drops packets in the client namespace (a real kernel drop,
both directions), and the engine's own fault injection (``Stack.impair``)
reorders, duplicates and delays at its RX/TX boundary.  Transfers are
checked byte for byte; the time limit is the "no stall" property.
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
import textwrap
import time

import pytest

from specloop import netlab
from specloop.engine import ffi, lib

from labtools import arun_client, client_argv, nft_loss

pytestmark = pytest.mark.lab

PORT = 9400
HOST = netlab.SERVER_IP
BLOCK = hashlib.sha256(b"down").digest() * (1 << 15)  # 1 MiB


class Exchange(asyncio.Protocol):
    """Takes n bytes in, answers with their sha256 and then n bytes out."""

    def __init__(self, n: int, loop):
        self.n = n
        self.got = 0
        self.h = hashlib.sha256()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.t = transport

    def data_received(self, data):
        self.h.update(data)
        self.got += len(data)
        if self.got == self.n:
            self.t.write(self.h.hexdigest().encode())
            for off in range(0, self.n, len(BLOCK)):
                self.t.write(BLOCK[:self.n - off])
            self.t.close()

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


CLIENT = """
import hashlib, socket, sys, threading
n = int(sys.argv[1])
s = socket.create_connection(("{host}", {port}), timeout={timeout})
up = (bytes(range(256)) * 4096)[:n]
sender = threading.Thread(target=lambda: [s.sendall(up) for _ in range(n // len(up))])
sender.start()
h = hashlib.sha256()
for _ in range(n // len(up)):
    h.update(up)
digest = b""
while len(digest) < 64:
    d = s.recv(64 - len(digest))
    if not d:
        break
    digest += d
sender.join()
down = hashlib.sha256()
got = 0
while True:
    d = s.recv(1 << 20)
    if not d:
        break
    down.update(d)
    got += len(d)
block = hashlib.sha256(b"down").digest() * (1 << 15)
want = hashlib.sha256()
for off in range(0, n, len(block)):
    want.update(block[:n - off])
print(digest.decode() == h.hexdigest(), down.hexdigest() == want.hexdigest(), got)
"""


def conn_states(loop) -> list[dict]:
    """What the engine knows of each of its connections."""
    eng = loop.stack.engine
    ids = ffi.new("uint32_t[64]")
    out = []
    for i in range(min(lib.sl_conn_list(eng.ptr, ids, 64), 64)):
        info = ffi.new("struct sl_conn_info *")
        if lib.sl_conn_info(eng.ptr, ids[i], info) == 0:
            out.append({k: getattr(info, k) for k, _ in ffi.typeof(info[0]).fields})
    return out


def exchange(loop, n: int, limit: float) -> None:
    """n bytes up, their digest and n bytes down, within limit seconds;
    if not, the failure shows where each side stood."""
    async def main():
        protos = []
        server = await loop.create_server(
            lambda: protos.append(Exchange(n, loop)) or protos[-1], HOST, PORT)
        try:
            rc, out, err = await arun_client(
                sys.executable, "-c", textwrap.dedent(CLIENT.format(host=HOST, port=PORT, timeout=limit)),
                str(n), timeout=limit)
            assert rc == 0, err.decode()[-2000:]
            assert out.split() == [b"True", b"True", str(n).encode()]
            assert await asyncio.wait_for(protos[0].lost, 10) is None
        finally:
            server.close()

    try:
        loop.run_until_complete(asyncio.wait_for(main(), limit + 20))
    except (asyncio.TimeoutError, AssertionError) as e:
        ss = subprocess.run(client_argv("ss", "-tinoe", "dst", HOST), capture_output=True,
                            text=True).stdout
        raise AssertionError(f"{e!r}\nengine: {loop.stack.counters()}\n"
                             f"connections: {conn_states(loop)}\nclient's ss: {ss}") from e


@pytest.fixture
def bypass_serve_loop(in_server_ns):
    import specloop

    loop = specloop.new_event_loop(interface=in_server_ns.server_if)
    try:
        yield loop
    finally:
        loop.close()


def test_64mib_each_way_loss_reorder_duplication(bypass_serve_loop):
    loop = bypass_serve_loop
    loop.stack.impair(rx_reorder=0.05, tx_reorder=0.05, rx_dup=0.01, tx_dup=0.01,
                      reorder_delay=0.001, seed=11)
    with nft_loss(5):
        exchange(loop, 64 << 20, limit=150)
    c = loop.stack.counters()
    # the faults really happened, and the stack really recovered from them
    # (a GSO super-frame of up to 45 segments is one packet to the impairment)
    assert c["impair_rx_reordered"] > 1000 and c["impair_tx_reordered"] > 100
    assert c["impair_rx_duplicated"] > 100 and c["impair_tx_duplicated"] > 20
    assert c["retransmits"] > 500 and c["ooo_segments"] > 500
    loop.stack.unimpair()
    for _ in range(20):
        loop.run_until_complete(asyncio.sleep(0.05))
    c = loop.stack.counters()
    assert c["frames_sndq"] == 0 and c["segs_in_use"] == 0 and c["ooo_bytes"] == 0


def test_delay_and_reordering(bypass_serve_loop):
    loop = bypass_serve_loop
    # 5 ms each way (a 10 ms RTT), a fifth of the frames 3 ms later still
    loop.stack.impair(delay=0.005, rx_reorder=0.2, tx_reorder=0.2, reorder_delay=0.003, seed=5)
    exchange(loop, 8 << 20, limit=90)
    c = loop.stack.counters()
    # fewer TX packets to reorder: GSO super-frames (one packet each)
    assert c["impair_rx_reordered"] > 100 and c["impair_tx_reordered"] > 20


@pytest.mark.timeout(420)
def test_heavy_loss_still_completes(bypass_serve_loop):
    # At 20% loss each way a retransmission is lost again often enough that
    # RTO backoff alone can stall one direction for minutes: either TCP (the
    # kernel client's upload too) backs off, a retransmission or its ACK is
    # lost with p = 0.36, and 9 in a row is a 200 s stall.  The loss matrix
    # (docs/loss-recovery.md) measured 1 MiB at 20% with p90s of 160-240 s
    # for our TCP and runs the kernel's never finished; two fresh-clone CI
    # runs of 1 MiB here hit 180 s and 300 s (30 runs on their own took
    # 0.1-33 s).  256 KiB each way takes a quarter of the RTOs, and so far
    # fewer long tails; the client waits as long as the test, which asserts
    # completion and the bytes, and shows both sides' state if it stalls.
    loop = bypass_serve_loop
    t0 = time.monotonic()
    with nft_loss(20):
        exchange(loop, 256 << 10, limit=300)
    c = loop.stack.counters()
    # the figures issue 12 compares with the kernel's (shown with -s)
    print(f"\nheavy_loss: {time.monotonic() - t0:.1f} s, rto_expired {c['rto_expired']}, "
          f"retransmits {c['retransmits']}, fast_retransmits {c['fast_retransmits']}, "
          f"tail_loss_probes {c['tail_loss_probes']}, retransmits_lost {c['retransmits_lost']}")
