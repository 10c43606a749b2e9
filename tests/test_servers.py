"""Every asyncio server, unchanged, over the bypass: uvicorn (FastAPI),
hypercorn (Starlette), Tornado's HTTPServer, a websockets echo server and an
``asyncio.start_server`` echo server, each to kernel clients in the client
namespace; and the APIs that stay on the kernel on a bypass loop
(``connect_accepted_socket``, ``create_unix_server``) keep working.

Servers that want their own process (uvicorn, hypercorn, Tornado) run as
subprocesses in the server namespace with SPECLOOP_INTERFACE set, the apps
in tests/server_apps/.  While a client holds a keep-alive connection open,
``ss`` in the server namespace must show no kernel connection on the port
(and no kernel listener, or only the wildcard placeholder): the engine is
what answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import select
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Iterator

import pytest

from specloop import netlab
from specloop.transports import BypassTransport

from labtools import (arun_client, client_argv, kernel_conns_in_server_ns,
                      listeners_in_server_ns, stop_server)

pytestmark = pytest.mark.lab

APPS = Path(__file__).resolve().parent / "server_apps"
HOST = netlab.SERVER_IP


def pattern(n: int) -> bytes:
    block = hashlib.sha256(b"specloop").digest() * 2048  # 64 KiB
    return (block * (n // len(block) + 1))[:n]


def xdp_attached() -> bool:
    link = netlab.status()["namespaces"][netlab.SERVER_NS]["link"]
    return bool(link and link["xdp_attached"])


def client_conns(port: int) -> list[str]:
    """Established kernel connections in the client namespace to the server's port."""
    out = subprocess.run(client_argv("ss", "-Htn", "state", "established",
                                     f"dst {HOST}:{port}"),
                         capture_output=True, text=True, check=True, timeout=10).stdout
    return [line for line in out.splitlines() if line.strip()]


def _readline(proc: subprocess.Popen, timeout: float) -> str:
    """A line of proc's stdout, or "" at EOF; TimeoutError after ``timeout``."""
    fd = proc.stdout.fileno()  # type: ignore[union-attr]
    buf = b""
    deadline = time.monotonic() + timeout
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError(f"no line from {proc.args!r} within {timeout} s (got {buf!r})")
        chunk = os.read(fd, 1)
        if not chunk:
            break
        buf += chunk
    return buf.decode(errors="replace")


@contextlib.contextmanager
def server_process(*argv: str, ready: str | None = None,
                   timeout: float = 30) -> Iterator[subprocess.Popen]:
    """``python argv...`` in the server namespace with SPECLOOP_INTERFACE set
    (output to ``proc.log()``); waits for a line matching ``ready`` if given;
    stopped (SIGTERM, then SIGKILL) on exit."""
    env = dict(os.environ, SPECLOOP_INTERFACE=netlab.SERVER_IF, PYTHONUNBUFFERED="1")
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(netlab.in_ns(netlab.SERVER_NS, sys.executable, *argv),
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=APPS)

    final: list[str] = []

    def text() -> str:
        if final:
            return final[0]
        log.seek(0)
        return log.read().decode(errors="replace")

    proc.log = text  # type: ignore[attr-defined]
    try:
        if ready is not None:
            deadline = time.monotonic() + timeout
            while not re.search(ready, text()):
                if proc.poll() is not None:
                    pytest.fail(f"server exited ({proc.returncode}) before ready:\n{text()}")
                if time.monotonic() > deadline:
                    pytest.fail(f"server not ready within {timeout} s:\n{text()}")
                time.sleep(0.05)
        yield proc
    finally:
        stop_server(proc, 10)
        final.append(text())
        log.close()


def check_http(port: int, *, wildcard: bool = False, server: subprocess.Popen | None = None,
               mib: int = 8) -> dict:
    """tests/server_apps/http_check.py in the client namespace against
    HOST:port: GET, a large POST, a large GET, all on one keep-alive
    connection; while it is held open, the kernel of the server namespace
    must have no connection on the port (and no listener, unless
    ``wildcard``: then only the placeholder)."""
    proc = subprocess.Popen(
        client_argv(sys.executable, str(APPS / "http_check.py"), HOST, str(port), "--hold",
                    "--post-mib", str(mib), "--get-mib", str(mib)),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = _readline(proc, 90)
        if not line.startswith("HOLD"):
            proc.wait(10)
            log = server.log() if server is not None else ""  # type: ignore[attr-defined]
            pytest.fail(f"client failed: {line}{proc.stderr.read().decode()}\n"  # type: ignore
                        f"server said:\n{log}")
        seen = {"listeners": listeners_in_server_ns(port),
                "kernel_conns": kernel_conns_in_server_ns(port),
                "client_conns": client_conns(port), "xdp": xdp_attached()}
        out, err = proc.communicate(b"\n", timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["ok"], (result, err.decode())
    assert seen["client_conns"], seen            # the client's connection is up ...
    assert seen["kernel_conns"] == [], seen      # ... and the server's kernel has none
    assert seen["xdp"], seen
    if wildcard:  # the placeholder listens for the other interfaces
        assert len(seen["listeners"]) <= 1, seen
    else:
        assert seen["listeners"] == [], seen
    return result


# ---- uvicorn ---------------------------------------------------------------------




@pytest.mark.parametrize("mode", ["loop", "install", "sockets", "fd"])
def test_uvicorn_fastapi(lab, mode):
    """uvicorn with a FastAPI app: loop chosen by uvicorn's own setting
    (``loop="specloop:new_event_loop"``) or by ``specloop.install()`` with
    ``loop="none"``; uvicorn binding its own socket (``sockets``) or given
    one (``--fd``) takes the sock= path of create_server."""
    port = {"loop": 9401, "install": 9402, "sockets": 9403, "fd": 9404}[mode]
    with server_process("uvicorn_server.py", mode, HOST, str(port),
                        ready=r"Uvicorn running on|Application startup complete") as server:
        check_http(port, server=server)
    log = server.log()  # type: ignore[attr-defined]
    assert "Traceback" not in log, log


# ---- hypercorn -------------------------------------------------------------------


@pytest.mark.parametrize("host", [HOST, "0.0.0.0", "::"])
def test_hypercorn_starlette(lab, host):
    """hypercorn.asyncio.serve with a Starlette app: hypercorn binds its own
    socket (to the bypass address, 0.0.0.0, or a dual-stack ::) and passes it
    to asyncio.start_server(sock=...)."""
    port = {HOST: 9411, "0.0.0.0": 9412, "::": 9413}[host]
    with server_process("hypercorn_server.py", host, str(port),
                        ready=r"Running on http://") as server:
        check_http(port, wildcard=host != HOST, server=server)
    log = server.log()  # type: ignore[attr-defined]
    assert "Traceback" not in log, log


# ---- tornado -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["specloop", "sockets"])
def test_tornado_httpserver(lab, mode):
    """Tornado's HTTPServer and an unchanged tornado.web app through
    specloop.tornado.listen (or bind_sockets + specloop.tornado.add_sockets)."""
    port = {"specloop": 9421, "sockets": 9422}[mode]
    with server_process("tornado_server.py", mode, HOST, str(port), ready="READY") as server:
        check_http(port, server=server)
    log = server.log()  # type: ignore[attr-defined]
    assert "Traceback" not in log, log


def test_tornado_own_listen_fails_loudly(lab):
    """Tornado's own listen() watches a kernel listening socket with
    loop.add_reader and accept()s it itself: no create_server, so the bypass
    cannot carry it; specloop refuses instead of serving it silently."""
    port = 9423
    with server_process("tornado_server.py", "tornado", HOST, str(port)) as server:
        deadline = time.monotonic() + 20
        while server.poll() is None and "READY" not in server.log():  # type: ignore
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert server.poll() is not None and "Traceback" in server.log(), (  # type: ignore
            "served silently by the kernel: " + str(listeners_in_server_ns(port)))


# ---- in-process servers: websockets, asyncio streams ------------------------------


WS_CLIENT = """
import os, sys
from websockets.sync.client import connect
port = int(sys.argv[1])
with connect(f"ws://10.55.0.2:{port}/echo", max_size=None, open_timeout=20) as ws:
    for i in range(50):
        ws.send(f"message {i}")
        assert ws.recv(timeout=20) == f"message {i}"
    big = os.urandom(6 << 20)
    ws.send(big)
    assert ws.recv(timeout=60) == big
    print("HOLD", flush=True)
    sys.stdin.readline()
    ws.send("last")
    assert ws.recv(timeout=20) == "last"
print("OK")
"""


async def _held_client(argv: list[str], check) -> bytes:
    """Runs a client in slcli that prints HOLD with its connection open,
    calls ``check()`` then, and returns the client's output."""
    proc = await asyncio.create_subprocess_exec(
        *client_argv(*argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 90)  # type: ignore[union-attr]
        if line.strip() != b"HOLD":
            err = await proc.stderr.read()  # type: ignore[union-attr]
            pytest.fail(f"client failed: {line!r} {err.decode()}")
        await check()
        out, err = await asyncio.wait_for(proc.communicate(b"\n"), 30)
        assert proc.returncode == 0, err.decode()
        return line + out
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def _bypass_checks(loop, port: int, *, opened_before: int):
    async def check():
        assert client_conns(port)
        if loop.stack is not None:
            assert loop.stack.counters()["conns_opened"] > opened_before
            assert kernel_conns_in_server_ns(port) == []
            assert listeners_in_server_ns(port) == []
    return check


def test_websockets_echo(serve_loop):
    """websockets' serve() (create_server(host, port)): many messages on one
    connection and a 6 MiB one, to websockets' own client in slcli."""
    from websockets.asyncio.server import serve

    loop = serve_loop
    port = 9431

    async def echo(ws):
        async for message in ws:
            await ws.send(message)

    async def main():
        opened = loop.stack.counters()["conns_opened"] if loop.stack else 0
        async with serve(echo, HOST, port, max_size=None) as server:
            if loop.stack is not None:
                assert all(type(s.getsockname()) is tuple for s in server.sockets)
            out = await _held_client([sys.executable, "-c", WS_CLIENT, str(port)],
                                     _bypass_checks(loop, port, opened_before=opened))
            assert out.endswith(b"OK\n"), out

    loop.run_until_complete(asyncio.wait_for(main(), 120))


ECHO_CLIENT = """
import os, socket, sys, threading
port = int(sys.argv[1])
s = socket.create_connection(("10.55.0.2", port), timeout=30)
for i in range(20):                     # round trips on one connection
    msg = b"ping %d\\n" % i
    s.sendall(msg)
    got = b""
    while not got.endswith(b"\\n"):
        got += s.recv(100)
    assert got == msg, got
big = os.urandom(16 << 20) + b"\\n"     # a large body both ways
t = threading.Thread(target=s.sendall, args=(big,))
t.start()
got = bytearray()
while len(got) < len(big):
    chunk = s.recv(1 << 20)
    assert chunk, len(got)
    got += chunk
t.join()
assert got == big
print("HOLD", flush=True)
sys.stdin.readline()
s.shutdown(socket.SHUT_WR)
assert s.recv(10) == b""
print("OK")
"""


def test_start_server_echo(serve_loop):
    """asyncio.start_server: StreamReader/StreamWriter over the transport,
    line round trips and a 16 MiB line echoed with drain()."""
    loop = serve_loop
    port = 9441
    served = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        served.append(type(writer.transport))
        try:
            while line := await reader.readline():
                writer.write(line)
                await writer.drain()
        finally:
            writer.close()
            await writer.wait_closed()

    async def main():
        opened = loop.stack.counters()["conns_opened"] if loop.stack else 0
        server = await asyncio.start_server(handle, HOST, port, limit=32 << 20)
        async with server:
            out = await _held_client([sys.executable, "-c", ECHO_CLIENT, str(port)],
                                     _bypass_checks(loop, port, opened_before=opened))
            assert out.endswith(b"OK\n"), out
        assert len(served) == 1
        assert (served[0] is BypassTransport) == (loop.stack is not None)

    loop.run_until_complete(asyncio.wait_for(main(), 120))


SLOW_READER = """
import hashlib, socket, sys, time
s = socket.create_connection(("10.55.0.2", int(sys.argv[1])), timeout=30)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
time.sleep(1.5)                       # the server must wait in drain()
h = hashlib.sha256()
n = 0
while chunk := s.recv(1 << 16):
    h.update(chunk)
    n += len(chunk)
print(n, h.hexdigest())
"""


def test_start_server_drain_backpressure(serve_loop):
    """StreamWriter.drain() waits while the peer does not read: the write
    buffer stays near the high-water mark instead of taking all 32 MiB."""
    loop = serve_loop
    port = 9442
    total, chunk = 32 << 20, 256 << 10
    data = pattern(total)
    seen = {"max_buffer": 0, "waited": 0.0}

    async def handle(reader, writer):
        high = writer.transport.get_write_buffer_limits()[1]
        seen["high"] = high
        for off in range(0, total, chunk):
            writer.write(data[off:off + chunk])
            seen["max_buffer"] = max(seen["max_buffer"], writer.transport.get_write_buffer_size())
            t = time.monotonic()
            await writer.drain()
            seen["waited"] += time.monotonic() - t
        writer.close()
        await writer.wait_closed()

    async def main():
        server = await asyncio.start_server(handle, HOST, port)
        async with server:
            rc, out, err = await arun_client(sys.executable, "-c", SLOW_READER, str(port),
                                             timeout=90)
        assert rc == 0, err.decode()
        n, digest = out.decode().split()
        assert int(n) == total and digest == hashlib.sha256(data).hexdigest()

    loop.run_until_complete(asyncio.wait_for(main(), 120))
    assert seen["waited"] > 1.0, seen
    assert seen["max_buffer"] <= seen["high"] + chunk, seen


def test_start_server_sock_takes_over_options(serve_loop, caplog):
    """asyncio.start_server(sock=...) with a socket the server bound and set
    options on: connections get the options the engine carries (as accept()
    inherits them), the others are said to be ignored."""
    loop = serve_loop
    port = 9443
    with netlab.inside(netlab.SERVER_NS):
        sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 42)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 5)
    sock.bind((HOST, port))
    got = {}

    async def handle(reader, writer):
        s = writer.get_extra_info("socket")
        got["keepalive"] = s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        got["keepidle"] = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
        got["transport"] = type(writer.transport)
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    async def main():
        with caplog.at_level(logging.WARNING, logger="specloop"):
            server = await asyncio.start_server(handle, sock=sock, backlog=16)
        async with server:
            assert server.sockets[0].getsockname() == (HOST, port)
            rc, out, err = await arun_client(sys.executable, "-c", textwrap.dedent(f"""
                import socket
                s = socket.create_connection(("{HOST}", {port}), timeout=20)
                s.sendall(b"hi\\n"); print(s.recv(10))"""), timeout=60)
            assert rc == 0 and out.strip() == b"b'hi\\n'", err

    loop.run_until_complete(asyncio.wait_for(main(), 60))
    assert got["keepalive"] == 1 and got["keepidle"] == 42, got
    if loop.stack is not None:
        assert got["transport"] is BypassTransport
        assert "TCP_DEFER_ACCEPT" in caplog.text and "ignored" in caplog.text


def test_reuse_port_cannot_share_a_bypass_port(serve_loop):
    """Two servers on one port with reuse_port share it on the kernel; on the
    bypass one loop serves a port, so the second fails loudly."""
    loop = serve_loop

    async def main():
        first = await loop.create_server(asyncio.Protocol, HOST, 9451, reuse_port=True)
        try:
            if loop.stack is None:
                second = await loop.create_server(asyncio.Protocol, HOST, 9451,
                                                  reuse_port=True)
                second.close()
            else:
                with pytest.raises(OSError, match="address already in use.*reuse_port"):
                    await loop.create_server(asyncio.Protocol, HOST, 9451, reuse_port=True)
        finally:
            first.close()
            await first.wait_closed()

    loop.run_until_complete(asyncio.wait_for(main(), 30))


def test_sock_in_another_namespace_stays_on_the_kernel(bypass_loop):
    """A socket bound in another network namespace is not on the bypass
    interface, even bound to 0.0.0.0: the kernel serves it."""
    loop = bypass_loop
    sock = socket.socket()  # the root namespace
    sock.bind(("127.0.0.1", 0))
    wild = socket.socket()
    wild.bind(("0.0.0.0", 0))

    async def main():
        for s in (sock, wild):
            server = await asyncio.start_server(lambda r, w: w.close(), sock=s)
            try:
                assert type(server.sockets[0]._sock) is socket.socket  # a kernel listener
            finally:
                server.close()
                await server.wait_closed()

    loop.run_until_complete(asyncio.wait_for(main(), 30))


# ---- the kernel paths of a bypass loop --------------------------------------------


class _Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

    def eof_received(self):
        return False


def test_connect_accepted_socket_stays_on_kernel(bypass_loop):
    """A kernel connection accepted by the program itself, even on the bypass
    address (an unsteered port), is served by asyncio's kernel transport."""
    loop = bypass_loop
    with netlab.inside(netlab.SERVER_NS):
        lsock = socket.create_server((HOST, 9461))
    lsock.setblocking(False)
    before = loop.stack.counters()["conns_opened"]

    async def main():
        client = asyncio.ensure_future(arun_client(sys.executable, "-c", textwrap.dedent(f"""
            import os, socket
            s = socket.create_connection(("{HOST}", 9461), timeout=20)
            data = os.urandom(1 << 20)
            s.sendall(data); s.shutdown(socket.SHUT_WR)
            got = b""
            while c := s.recv(1 << 16):
                got += c
            print(got == data)"""), timeout=60))
        conn, _ = await loop.sock_accept(lsock)
        transport, _ = await loop.connect_accepted_socket(_Echo, conn)
        assert not isinstance(transport, BypassTransport)
        assert kernel_conns_in_server_ns(9461)  # the kernel has it
        rc, out, err = await client
        assert rc == 0 and out.strip() == b"True", err
        transport.close()

    try:
        loop.run_until_complete(asyncio.wait_for(main(), 60))
    finally:
        lsock.close()
    assert loop.stack.counters()["conns_opened"] == before


def test_create_unix_server_stays_on_kernel(bypass_loop):
    loop = bypass_loop
    data = os.urandom(4 << 20)

    async def main(path):
        server = await loop.create_unix_server(_Echo, path)
        async with server:
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(data)
            writer.write_eof()
            got = await reader.read()
            writer.close()
            await writer.wait_closed()
            assert got == data

    with tempfile.TemporaryDirectory() as d:
        loop.run_until_complete(asyncio.wait_for(main(os.path.join(d, "s")), 60))


def test_start_unix_server_streams(bypass_loop):
    loop = bypass_loop

    async def handle(reader, writer):
        writer.write((await reader.readline()).upper())
        await writer.drain()
        writer.close()

    async def main(path):
        async with await asyncio.start_unix_server(handle, path):
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(b"hello\n")
            assert await reader.readline() == b"HELLO\n"
            writer.close()
            await writer.wait_closed()

    with tempfile.TemporaryDirectory() as d:
        loop.run_until_complete(asyncio.wait_for(main(os.path.join(d, "s")), 30))
