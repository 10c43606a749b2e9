"""benchmarks/ws_load.c, the ws-echo workload's client, is a checker: it
passes against a right echo however the server cuts its frames, and exits
nonzero, saying why, on a wrong echo or a wrong handshake.

The servers here are a few lines of RFC 6455 on asyncio streams, on the
loopback (no lab needed): each answers the handshake and echoes, or gets
one thing wrong on purpose.  ``make tools`` (part of ``make setup``) builds
build/tools/ws_load.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import pathlib
import struct
import subprocess
from typing import Awaitable, Callable

import pytest

WS_LOAD = pathlib.Path(__file__).resolve().parent.parent / "build" / "tools" / "ws_load"
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
HELLO = b"Hello, world!"


@pytest.fixture(scope="module")
def ws_load() -> pathlib.Path:
    if not os.access(WS_LOAD, os.X_OK):
        pytest.fail(f"{WS_LOAD} is missing: run `make tools`")
    return WS_LOAD


def _frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """An unmasked server frame (payload < 126 bytes)."""
    assert len(payload) < 126
    return bytes([(0x80 if fin else 0) | opcode, len(payload)]) + payload


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One masked client frame: (opcode, unmasked payload)."""
    b0, b1 = await reader.readexactly(2)
    assert b1 & 0x80, "client frames must be masked"
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", await reader.readexactly(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", await reader.readexactly(8))
    mask = await reader.readexactly(4)
    data = await reader.readexactly(n)
    return b0 & 0x0F, bytes(b ^ mask[i % 4] for i, b in enumerate(data))


Echo = Callable[[asyncio.StreamWriter, int, bytes], Awaitable[None]]


async def _serve_ws(echo: Echo, status: bytes = b"101 Switching Protocols",
                    bad_accept: bool = False) -> asyncio.Server:
    """A WebSocket server on 127.0.0.1 whose answer to each data frame is
    ``echo(writer, opcode, payload)``; a Close is answered and the
    connection closed, a Pong ignored."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                       if line.lower().startswith(b"sec-websocket-key:"))
            accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
            if bad_accept:
                accept = accept[:-2] + b"A="
            writer.write(b"HTTP/1.1 " + status + b"\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            while True:
                op, data = await _read_frame(reader)
                if op == 0x8:
                    writer.write(_frame(0x8, data))
                    await writer.drain()
                    break
                if op == 0xA:       # the answer to a ping of ours
                    continue
                await echo(writer, op, data)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def _run(ws_load: pathlib.Path, echo: Echo, *args: str,
               **server_kw: object) -> tuple[int, str, str]:
    server = await _serve_ws(echo, **server_kw)  # type: ignore[arg-type]
    port = server.sockets[0].getsockname()[1]
    try:
        proc = await asyncio.create_subprocess_exec(
            str(ws_load), *args, "127.0.0.1", str(port), "/",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        server.close()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _good(writer: asyncio.StreamWriter, op: int, data: bytes) -> None:
    writer.write(_frame(op, data))


async def _trickle(writer: asyncio.StreamWriter, op: int, data: bytes) -> None:
    """A ping first, then the echo in two fragments, all written a byte at
    a time: every frame split across reads, and control frames between."""
    out = _frame(0x9, b"are you there") + _frame(op, data[:5], fin=False) \
        + _frame(0xA, b"unasked pong") + _frame(0x0, data[5:])
    for i in range(len(out)):
        writer.write(out[i:i + 1])
        await writer.drain()
        await asyncio.sleep(0)


def test_ws_load_right_echo(ws_load: pathlib.Path) -> None:
    """A plain echo and a trickled, fragmented one with pings: both pass,
    every message counted, with its round-trip percentiles."""
    for echo, args in ((_good, ("-c", "4", "-w", "0.1", "-d", "0.3")),
                       (_trickle, ("-c", "3", "-w", "0", "-d", "0.3", "-b"))):
        rc, out, err = asyncio.run(_run(ws_load, echo, *args))
        assert rc == 0, err
        r = json.loads(out.splitlines()[-1])
        assert r["messages"] > 0 and r["error_count"] == 0, r
        assert r["bytes"] == 13 * r["messages"]
        lat = r["latency_us"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"], lat
        assert 0 <= r["client_busy"] <= 1.5


def test_ws_load_sync_waits_for_go(ws_load: pathlib.Path) -> None:
    """-s: after the warm-up, WARM, then nothing is measured until a line
    comes on stdin."""

    async def main() -> tuple[int, bytes, bytes]:
        server = await _serve_ws(_good)
        port = server.sockets[0].getsockname()[1]
        proc = await asyncio.create_subprocess_exec(
            str(ws_load), "-s", "-c", "2", "-w", "0.1", "-d", "0.2", "127.0.0.1", str(port),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdin is not None
        assert await asyncio.wait_for(proc.stdout.readline(), 10) == b"WARM\n"
        await asyncio.sleep(0.5)            # longer than -d: still waiting
        assert proc.returncode is None
        out, err = await asyncio.wait_for(proc.communicate(b"\n"), 10)
        server.close()
        return proc.returncode or 0, out, err

    rc, out, err = asyncio.run(main())
    assert rc == 0, err
    r = json.loads(out)
    assert r["messages"] > 0 and 0.19 < r["seconds"] < 0.4, r


async def _corrupt(writer: asyncio.StreamWriter, op: int, data: bytes) -> None:
    writer.write(_frame(op, data[:-1] + b"?"))


async def _as_binary(writer: asyncio.StreamWriter, op: int, data: bytes) -> None:
    writer.write(_frame(0x2 if op == 0x1 else 0x1, data))


async def _longer(writer: asyncio.StreamWriter, op: int, data: bytes) -> None:
    writer.write(_frame(op, data + b"!"))


async def _shorter(writer: asyncio.StreamWriter, op: int, data: bytes) -> None:
    writer.write(_frame(op, data[:-1]))


async def _corrupt_later(writer: asyncio.StreamWriter, op: int, data: bytes) -> None:
    """Right for a while, then one wrong byte: every echo is checked."""
    _corrupt_later.n += 1  # type: ignore[attr-defined]
    await (_corrupt if _corrupt_later.n == 500 else _good)(  # type: ignore[attr-defined]
        writer, op, data)


async def _masked(writer: asyncio.StreamWriter, op: int, data: bytes) -> None:
    writer.write(bytes([0x80 | op, 0x80 | len(data)]) + b"\0\0\0\0" + data)


@pytest.mark.parametrize("echo, kw, says", [
    (_corrupt, {}, "echo mismatch"),
    (_corrupt_later, {}, "echo mismatch"),
    (_as_binary, {}, "echo mismatch"),
    (_longer, {}, "echo mismatch"),
    (_shorter, {}, "echo mismatch"),
    (_masked, {}, "masked frame"),
    (_good, {"bad_accept": True}, "Sec-WebSocket-Accept"),
    (_good, {"status": b"200 OK"}, "not 101"),
], ids=["corrupt", "corrupt-500th", "opcode", "longer", "shorter", "masked", "accept",
        "status"])
def test_ws_load_fails_loudly(ws_load: pathlib.Path, echo: Echo, kw: dict, says: str) -> None:
    """A wrong echo or handshake: nonzero exit, the reason on stderr, no
    result on stdout."""
    _corrupt_later.n = 0  # type: ignore[attr-defined]
    rc, out, err = asyncio.run(_run(ws_load, echo, "-c", "2", "-w", "0", "-d", "2", **kw))
    assert rc == 1, (rc, out, err)
    assert says in err, err
    assert out == "", out
