"""loop.sendfile over the bypass with super-frames: file-backed segments.

The send queue references the file instead of a copy (native/tcp_out.c
tcp_queue_file): runs go as GSO super-frames, sent from a mapping of the
file (native/tx_gso.c gso_xmit_mapped) or, for small files and where the
mapping cannot serve, spliced from the page cache to the packet socket
(gso_xmit_file); lone segments and retransmissions are read into a frame
when sent.  Served to curl in the client namespace, checked by sha256: on
a clean link (mapped; a small file spliced), under loss, under loss with
the engine's own reordering and duplication (whose impairment reads the
runs instead); a file truncated while it is being sent ends its
connection, not the process; a file that grows past its mapping between
two sendfile calls is spliced from there on; the engine's descriptor is
closed when the last byte is acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time

import pytest

import specloop
from specloop import netlab

from labtools import arun_client, nft_loss

pytestmark = pytest.mark.lab

PORT = 8095
URL = f"http://{netlab.SERVER_IP}:{PORT}"


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A 100 MiB + 777 bytes file (not a multiple of a page or the MSS)."""
    d = tmp_path_factory.mktemp("sendfile")
    path = d / "big.bin"
    with open(path, "wb") as f:
        for _ in range(100):
            f.write(os.urandom(1 << 20))
        f.write(os.urandom(777))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


@contextlib.asynccontextmanager
async def serving(loop, errors: list):
    """HTTP/1.0-ish: GET /<path> answers the file with loop.sendfile
    (native, no fallback), then closes."""
    async def handle(reader, writer):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ")[1].decode()
            size = os.path.getsize(path)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n" % size)
            with open(path, "rb") as f:
                await loop.sendfile(writer.transport, f, fallback=False)
        except (OSError, asyncio.IncompleteReadError) as e:
            errors.append(e)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, netlab.SERVER_IP, PORT)
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()


async def curl_sha(path, timeout: float = 240, opts: str = "") -> tuple[int, str, str]:
    rc, out, err = await arun_client(
        "bash", "-c", f"set -o pipefail; curl -sS {opts} '{URL}{path}' | sha256sum",
        timeout=timeout)
    return rc, out.decode().split()[0] if out else "", err.decode()


async def settle(loop, cond, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return True
        await asyncio.sleep(0.05)
    return cond()


def run(loop, coro, timeout: float = 300):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


def fetch_exact(loop, path, want: str, times: int) -> list:
    """Serves ``path`` to curl ``times`` times, each byte-exact, then waits
    for the engine to let go of the file; returns the handler's errors."""
    errors: list = []

    async def main():
        async with serving(loop, errors):
            for _ in range(times):
                rc, got, err = await curl_sha(path)
                assert rc == 0 and got == want, err
            assert await settle(loop, lambda: loop.stack.counters()["files_open"] == 0)

    run(loop, main())
    return errors


def test_sendfile_100mib_byte_exact_mapped(gso_loop, big):
    loop, (path, want) = gso_loop, big
    fds = open_fds()
    assert fetch_exact(loop, path, want, 2) == []
    c = loop.stack.counters()
    size = path.stat().st_size
    # nearly every byte sent from the file's mapping, in big super-frames
    assert c["tx_gso_mapped_frames"] > 2 * size / 65536
    assert c["tx_gso_splice_frames"] == 0 and c["tx_gso_map_failures"] == 0
    # one mapping per loop.sendfile(), though its queue empties between the
    # engine calls that make it up (the engine holds the file meanwhile)
    assert c["files_mapped"] == 2
    assert c["tx_gso_bytes"] > 2 * size * 0.95
    assert c["tx_gso_segments"] > 30 * c["tx_gso_frames"]
    assert c["file_short_reads"] == 0 and c["tx_gso_errors"] == 0
    assert c["files_open"] == 0 and c["frames_sndq"] == 0
    assert open_fds() == fds


def test_sendfile_small_file_spliced(gso_loop, tmp_path):
    """A file under the mapping's threshold (8 MiB) is spliced."""
    loop = gso_loop
    path = tmp_path / "small.bin"
    path.write_bytes(os.urandom(200_000))
    os.chmod(tmp_path, 0o755)
    want = hashlib.sha256(path.read_bytes()).hexdigest()
    assert fetch_exact(loop, path, want, 3) == []
    c = loop.stack.counters()
    assert c["tx_gso_splice_frames"] >= 3 and c["tx_gso_mapped_frames"] == 0
    assert c["file_short_reads"] == 0 and c["tx_gso_errors"] == 0


def test_sendfile_file_grown_past_its_mapping_is_spliced(gso_loop, tmp_path):
    """Two sendfile calls on one connection share the engine's file while
    the first call's tail is queued; bytes appended in between lie beyond
    the mapping made for the first: those runs are spliced, byte-exact."""
    loop = gso_loop
    path = tmp_path / "grows.bin"
    first, extra = os.urandom(12 << 20), os.urandom(4 << 20)
    path.write_bytes(first)
    os.chmod(tmp_path, 0o755)
    want = hashlib.sha256(first + extra).hexdigest()
    errors: list = []

    async def handle(reader, writer):
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n" % (len(first) + len(extra)))
            with open(path, "rb") as f:
                await loop.sendfile(writer.transport, f, 0, len(first), fallback=False)
                with open(path, "ab") as w:
                    w.write(extra)
                await loop.sendfile(writer.transport, f, len(first), len(extra),
                                    fallback=False)
        except (OSError, asyncio.IncompleteReadError) as e:
            errors.append(e)
        finally:
            writer.close()

    async def main():
        server = await asyncio.start_server(handle, netlab.SERVER_IP, PORT)
        try:
            rc, got, err = await curl_sha("/grows")
            assert rc == 0 and got == want, err
            assert await settle(loop, lambda: loop.stack.counters()["files_open"] == 0)
        finally:
            server.close()
            await server.wait_closed()

    run(loop, main())
    assert errors == []
    c = loop.stack.counters()
    assert c["tx_gso_mapped_frames"] > 0
    assert c["tx_gso_map_failures"] == 1 and c["tx_gso_splice_frames"] > 0
    assert c["file_short_reads"] == 0 and c["files_open"] == 0


def test_sendfile_byte_exact_under_loss(gso_loop, big):
    """Client-side drops: runs sent from the mapping, lost segments read
    from the file and retransmitted per MSS."""
    loop, (path, want) = gso_loop, big
    errors: list = []

    async def main():
        async with serving(loop, errors):
            with nft_loss(3):
                rc, got, err = await curl_sha(path, timeout=280)
            assert rc == 0 and got == want, err
            assert await settle(loop, lambda: loop.stack.counters()["files_open"] == 0)

    run(loop, main())
    c = loop.stack.counters()
    assert c["tx_gso_mapped_frames"] > 500 and c["retransmits"] > 100
    assert c["file_reads_retransmit"] > 100 and c["file_short_reads"] == 0
    assert c["files_open"] == 0


def test_sendfile_byte_exact_under_loss_reordering_and_duplication(gso_loop, big):
    loop, (path, want) = gso_loop, big
    errors: list = []
    loop.stack.impair(tx_reorder=0.03, rx_reorder=0.03, tx_dup=0.01, rx_dup=0.01, seed=11)

    async def main():
        async with serving(loop, errors):
            with nft_loss(2):
                rc, got, err = await curl_sha(path, timeout=280)
            assert rc == 0 and got == want, err
            assert await settle(loop, lambda: loop.stack.counters()["files_open"] == 0)

    try:
        run(loop, main())
    finally:
        loop.stack.unimpair()
    c = loop.stack.counters()
    assert c["tx_gso_frames"] > 500 and c["retransmits"] > 100
    assert c["impair_tx_reordered"] > 10 and c["impair_tx_duplicated"] > 0
    assert c["file_reads_retransmit"] > 0 and c["file_short_reads"] == 0


def test_sendfile_file_truncated_while_sent_ends_the_connection(gso_loop, tmp_path):
    """The file shrinks under the send queue: the process goes on, the
    connection is reset, the counter says so, the descriptor is closed."""
    loop = gso_loop
    path = tmp_path / "shrinks.bin"
    with open(path, "wb") as f:
        for _ in range(64):
            f.write(os.urandom(1 << 20))
    small = tmp_path / "small.bin"
    small.write_bytes(os.urandom(300_000))
    os.chmod(tmp_path, 0o755)
    errors: list = []
    fds = open_fds()

    async def main():
        async with serving(loop, errors):
            fetch = asyncio.ensure_future(curl_sha(path, timeout=120, opts="--limit-rate 4M"))
            await asyncio.sleep(1.0)
            os.truncate(path, 1 << 20)
            rc, got, err = await fetch
            assert rc != 0  # cut short: reset
            assert await settle(loop, lambda: loop.stack.counters()["files_open"] == 0)
            # the server goes on serving
            rc, got, err = await curl_sha(small)
            assert rc == 0 and got == hashlib.sha256(small.read_bytes()).hexdigest(), err

    run(loop, main(), 180)
    c = loop.stack.counters()
    assert c["file_short_reads"] == 1 and c["rst_sent"] >= 1
    # the 64 MiB file went from its mapping: a send from the part cut off
    # fails in the kernel (EFAULT), never as a SIGBUS here
    assert c["tx_gso_mapped_frames"] > 0
    assert c["files_open"] == 0
    assert open_fds() == fds
