"""asyncio transport and server semantics, the same on both paths.

Each case runs on the kernel path and over the bypass against real kernel
clients in the client namespace; asyncio's own selector transport is the
reference for what a protocol sees.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import resource
import signal
import socket
import sys
import textwrap

import pytest

from specloop import netlab

from labtools import arun_client, client_argv, nft_drop_all

pytestmark = pytest.mark.lab

PORT = 9300
HOST = netlab.SERVER_IP


def assert_idle(loop) -> None:
    """Bypass only: no frame, segment or byte is left held by any connection."""
    if loop.stack is None:
        return
    c = loop.stack.counters()
    assert c["frames_sndq"] == 0 and c["frames_tx"] == 0 and c["frames_rx_held"] == 0, c
    assert c["frames_free"] + c["frames_fill"] == c["frames_total"], c
    assert c["segs_in_use"] == 0 and c["ooo_bytes"] == 0 and c["rxq_bytes"] == 0, c
    assert c["conns"] == c["conns_time_wait"], c


def client(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code), *args]


class Recorder(asyncio.Protocol):
    """Records what asyncio promises a protocol: the call order and data."""

    def __init__(self, loop):
        self.events: list[str] = []
        self.data = bytearray()
        self.lost = loop.create_future()
        self.made = loop.create_future()
        self.eof = loop.create_future()
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")
        self.made.set_result(transport)

    def data_received(self, data):
        assert isinstance(data, bytes)
        self.data += data

    def eof_received(self):
        self.events.append("eof")
        self.eof.set_result(None)

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.set_result(exc)


def run(loop, coro, timeout=60):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


def test_clean_close_by_peer(serve_loop, path):
    async def main():
        loop = asyncio.get_running_loop()
        protos = []
        server = await loop.create_server(lambda: protos.append(Recorder(loop)) or protos[-1],
                                          HOST, PORT)
        rc, out, err = await arun_client(*client(f"""
            import socket
            s = socket.create_connection(("{HOST}", {PORT}), timeout=5)
            s.sendall(b"x" * 100000)
            s.shutdown(socket.SHUT_WR)
            print(s.recv(10))
        """))
        assert rc == 0, err
        p = protos[0]
        assert await p.lost is None
        assert p.events == ["made", "eof", "lost"]
        assert bytes(p.data) == b"x" * 100000
        t = p.transport
        assert t.is_closing()
        peer = t.get_extra_info("peername")
        assert peer[0] == netlab.CLIENT_IP and t.get_extra_info("sockname") == (HOST, PORT)
        server.close()
        await server.wait_closed()

    run(serve_loop, main())
    assert_idle(serve_loop)


def test_write_eof_half_close(serve_loop, path):
    class Half(Recorder):
        def connection_made(self, transport):
            super().connection_made(transport)
            assert transport.can_write_eof()
            transport.write(b"from server " * 1000)
            transport.write_eof()
            with pytest.raises(RuntimeError):
                transport.write(b"late")

        def eof_received(self):
            super().eof_received()
            return True  # keep the transport open (we already sent our EOF)

    async def main():
        loop = asyncio.get_running_loop()
        protos = []
        server = await loop.create_server(lambda: protos.append(Half(loop)) or protos[-1],
                                          HOST, PORT)
        rc, out, err = await arun_client(*client(f"""
            import socket
            s = socket.create_connection(("{HOST}", {PORT}), timeout=5)
            got = b""
            while True:
                d = s.recv(65536)
                if not d:
                    break
                got += d
            # our side still sends after the server's FIN
            s.sendall(b"after your eof")
            s.shutdown(socket.SHUT_WR)
            print(len(got), got == b"from server " * 1000)
        """))
        assert rc == 0, err
        assert out.split() == [b"12000", b"True"]
        p = protos[0]
        await p.eof
        assert bytes(p.data) == b"after your eof"
        p.transport.close()
        assert await p.lost is None
        server.close()

    run(serve_loop, main())
    assert_idle(serve_loop)


def test_socket_options_and_extra_info(serve_loop, path):
    async def main():
        loop = asyncio.get_running_loop()
        protos = []
        server = await loop.create_server(lambda: protos.append(Recorder(loop)) or protos[-1],
                                          HOST, PORT)
        proc = await asyncio.create_subprocess_exec(*client_argv(*client(f"""
            import socket, sys
            s = socket.create_connection(("{HOST}", {PORT}), timeout=5)
            sys.stdin.read()
        """)), stdin=asyncio.subprocess.PIPE)
        try:
            t = await asyncio.wait_for(protos_made(protos), 10)
            sock = t.get_extra_info("socket")
            assert sock is not None and sock.family == socket.AF_INET
            # asyncio's transports turn Nagle off; so does the bypass
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
            assert not sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30)
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30
            if path == "bypass":
                with pytest.raises(OSError) as info:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
                assert info.value.errno == errno.ENOPROTOOPT
                with pytest.raises(ValueError, match="invalid value"):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 0)
                with pytest.raises(ValueError, match="invalid value"):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1 << 40)
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30
            assert t.get_extra_info("peername")[0] == netlab.CLIENT_IP
            assert t.get_protocol() is protos[0]
            assert t.is_reading()
            t.pause_reading()
            assert not t.is_reading()
            t.resume_reading()
            assert t.is_reading()
            t.close()
            assert await protos[0].lost is None
            if path == "bypass":
                with pytest.raises(OSError) as info:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                assert info.value.errno == errno.EBADF
        finally:
            proc.stdin.close()
            await proc.wait()
        server.close()

    run(serve_loop, main())


async def protos_made(protos):
    while not protos:
        await asyncio.sleep(0.01)
    return await protos[0].made


def test_abort_resets_the_peer(serve_loop, path):
    async def main():
        loop = asyncio.get_running_loop()
        protos = []
        server = await loop.create_server(lambda: protos.append(Recorder(loop)) or protos[-1],
                                          HOST, PORT)
        proc = await asyncio.create_subprocess_exec(*client_argv(*client(f"""
            import socket, time
            s = socket.create_connection(("{HOST}", {PORT}), timeout=5)
            s.sendall(b"hello")
            try:
                while s.recv(65536):
                    pass
                print("eof")
            except ConnectionResetError:
                print("reset")
        """)), stdout=asyncio.subprocess.PIPE)
        t = await asyncio.wait_for(protos_made(protos), 10)
        while not protos[0].data:
            await asyncio.sleep(0.01)
        t.write(b"y" * 1000)
        t.abort()
        assert await protos[0].lost is None
        out, _ = await proc.communicate()
        # bypass: abort is a RST (as the issue asks); asyncio's abort closes
        # the kernel socket, which sends a FIN when nothing is unread
        assert out.strip() == (b"reset" if path == "bypass" else b"eof")
        server.close()

    run(serve_loop, main())
    assert_idle(serve_loop)


def test_flow_control_pause_and_resume_writing(serve_loop, path):
    n = 40 << 20

    class Writer(Recorder):
        paused = resumed = 0

        def connection_made(self, transport):
            super().connection_made(transport)
            transport.set_write_buffer_limits(high=256 * 1024)
            assert transport.get_write_buffer_limits() == (64 * 1024, 256 * 1024)
            block = os.urandom(1 << 20)
            self.digest = hashlib.sha256()
            for _ in range(n >> 20):
                transport.write(block)
                self.digest.update(block)
            transport.close()

        def pause_writing(self):
            self.paused += 1

        def resume_writing(self):
            self.resumed += 1

    async def main():
        loop = asyncio.get_running_loop()
        protos = []
        server = await loop.create_server(lambda: protos.append(Writer(loop)) or protos[-1],
                                          HOST, PORT)
        rc, out, err = await arun_client(*client(f"""
            import socket, hashlib, time
            s = socket.create_connection(("{HOST}", {PORT}), timeout=30)
            time.sleep(0.5)   # let the server's buffers fill
            h = hashlib.sha256()
            while True:
                d = s.recv(1 << 20)
                if not d:
                    break
                h.update(d)
            print(h.hexdigest())
        """), timeout=120)
        assert rc == 0, err
        p = protos[0]
        assert out.strip().decode() == p.digest.hexdigest()
        assert p.paused >= 1 and p.resumed >= 1
        assert await p.lost is None
        assert p.transport.get_write_buffer_size() == 0
        server.close()

    run(serve_loop, main(), timeout=150)
    assert_idle(serve_loop)


def test_pause_reading_holds_data(serve_loop, path):
    n = 16 << 20

    class Slow(Recorder):
        def data_received(self, data):
            super().data_received(data)
            if not getattr(self, "paused_once", False) and len(self.data) > 100000:
                self.paused_once = True
                self.transport.pause_reading()
                asyncio.get_running_loop().call_later(0.5, self.transport.resume_reading)

    async def main():
        loop = asyncio.get_running_loop()
        protos = []
        server = await loop.create_server(lambda: protos.append(Slow(loop)) or protos[-1],
                                          HOST, PORT)
        rc, out, err = await arun_client(*client(f"""
            import socket
            s = socket.create_connection(("{HOST}", {PORT}), timeout=30)
            s.sendall(bytes(range(256)) * {n // 256})
            s.close()
        """), timeout=60)
        assert rc == 0, err
        p = protos[0]
        await p.lost
        assert p.paused_once
        assert bytes(p.data) == bytes(range(256)) * (n // 256)
        server.close()

    run(serve_loop, main())
    assert_idle(serve_loop)


def test_buffered_protocol(serve_loop, path):
    n = 20 << 20

    class Buffered(asyncio.BufferedProtocol):
        def __init__(self, loop):
            self.buf = bytearray(1000)
            self.h = hashlib.sha256()
            self.count = 0
            self.lost = loop.create_future()

        def connection_made(self, transport):
            self.transport = transport

        def get_buffer(self, sizehint):
            return self.buf

        def buffer_updated(self, nbytes):
            self.h.update(self.buf[:nbytes])
            self.count += nbytes

        def eof_received(self):
            self.transport.write(self.h.hexdigest().encode())
            self.transport.close()

        def connection_lost(self, exc):
            self.lost.set_result(exc)

    async def main():
        loop = asyncio.get_running_loop()
        protos = []
        server = await loop.create_server(lambda: protos.append(Buffered(loop)) or protos[-1],
                                          HOST, PORT)
        rc, out, err = await arun_client(*client(f"""
            import socket, hashlib
            s = socket.create_connection(("{HOST}", {PORT}), timeout=30)
            data = bytes(range(251)) * ({n} // 251)
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            print(s.recv(100).decode() == hashlib.sha256(data).hexdigest())
        """), timeout=60)
        assert rc == 0, err
        assert out.strip() == b"True"
        assert await protos[0].lost is None
        server.close()

    run(serve_loop, main())
    assert_idle(serve_loop)


def test_sendfile(serve_loop, path, tmp_path):
    data = os.urandom(10 << 20)
    f = tmp_path / "f.bin"
    f.write_bytes(data)

    async def main():
        loop = asyncio.get_running_loop()
        protos = []
        server = await loop.create_server(lambda: protos.append(Recorder(loop)) or protos[-1],
                                          HOST, PORT)
        proc = await asyncio.create_subprocess_exec(*client_argv(*client(f"""
            import socket, hashlib
            s = socket.create_connection(("{HOST}", {PORT}), timeout=30)
            h = hashlib.sha256()
            while True:
                d = s.recv(1 << 20)
                if not d:
                    break
                h.update(d)
            print(h.hexdigest())
        """)), stdout=asyncio.subprocess.PIPE)
        t = await asyncio.wait_for(protos_made(protos), 10)
        with open(f, "rb") as fh:
            t.write(b"HEAD")
            sent = await loop.sendfile(t, fh, 1000, len(data) - 2000)
            assert sent == len(data) - 2000
            assert fh.tell() == len(data) - 1000
        t.write(b"TAIL")
        t.close()
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert out.strip().decode() == hashlib.sha256(b"HEAD" + data[1000:-1000] + b"TAIL").hexdigest()
        if path == "bypass":
            # natively: no executor thread read the file
            assert loop._default_executor is None
        server.close()

    run(serve_loop, main())
    assert_idle(serve_loop)


def test_server_api(serve_loop, path):
    async def connect() -> str:
        rc, out, err = await arun_client(*client(f"""
            import socket
            try:
                s = socket.create_connection(("{HOST}", {PORT}), timeout=2)
                s.sendall(b"ping")
                print("ok", s.recv(10).decode())
            except ConnectionRefusedError:
                print("refused")
        """))
        return out.decode().strip()

    class Pong(asyncio.Protocol):
        def connection_made(self, transport):
            self.t = transport

        def data_received(self, data):
            self.t.write(b"pong")
            self.t.close()

    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Pong, HOST, PORT, start_serving=False)
        assert not server.is_serving()
        assert server.get_loop() is loop
        assert [s.getsockname() for s in server.sockets] == [(HOST, PORT)]
        assert await connect() == "refused"
        await server.start_serving()
        assert server.is_serving()
        assert await connect() == "ok pong"
        server.close()
        assert not server.is_serving() and server.sockets == ()
        await server.wait_closed()
        assert await connect() == "refused"

        async with await loop.create_server(Pong, HOST, PORT) as server2:
            task = asyncio.ensure_future(server2.serve_forever())
            await asyncio.sleep(0.05)
            assert await connect() == "ok pong"
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert not server2.is_serving()
        assert await connect() == "refused"

    run(serve_loop, main())


def test_address_in_use(serve_loop, path):
    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(asyncio.Protocol, HOST, PORT)
        with pytest.raises(OSError) as info:
            await loop.create_server(asyncio.Protocol, HOST, PORT, reuse_address=False)
        assert info.value.errno == errno.EADDRINUSE
        server.close()
        await server.wait_closed()
        server = await loop.create_server(asyncio.Protocol, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        assert port != 0
        server.close()

    run(serve_loop, main())


def test_peer_reset_mid_transfer(serve_loop, path):
    class Blaster(Recorder):
        def connection_made(self, transport):
            super().connection_made(transport)
            self.write_more()

        def write_more(self):
            if not self.transport.is_closing():
                self.transport.write(b"z" * (1 << 20))
                asyncio.get_running_loop().call_later(0.01, self.write_more)

    async def main():
        loop = asyncio.get_running_loop()
        protos = []
        server = await loop.create_server(lambda: protos.append(Blaster(loop)) or protos[-1],
                                          HOST, PORT)
        rc, out, err = await arun_client(*client(f"""
            import socket, struct
            s = socket.create_connection(("{HOST}", {PORT}), timeout=5)
            got = 0
            while got < (4 << 20):
                got += len(s.recv(1 << 20))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()   # RST
        """))
        assert rc == 0, err
        exc = await asyncio.wait_for(protos[0].lost, 10)
        assert isinstance(exc, ConnectionResetError), exc
        server.close()

    run(serve_loop, main())
    assert_idle(serve_loop)


def test_client_killed(serve_loop, path):
    async def main():
        loop = asyncio.get_running_loop()
        protos = []
        server = await loop.create_server(lambda: protos.append(Recorder(loop)) or protos[-1],
                                          HOST, PORT)
        proc = await asyncio.create_subprocess_exec(*client_argv(*client(f"""
            import socket, time
            s = socket.create_connection(("{HOST}", {PORT}), timeout=5)
            s.sendall(b"a" * 10000)
            time.sleep(60)
        """)))
        t = await asyncio.wait_for(protos_made(protos), 10)
        # unread data in the client's kernel socket: its close is a RST
        t.write(b"b" * 100000)
        while len(protos[0].data) < 10000:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
        exc = await asyncio.wait_for(protos[0].lost, 10)
        assert isinstance(exc, ConnectionResetError), exc
        server.close()

    run(serve_loop, main())
    assert_idle(serve_loop)


def test_half_open_peer_times_out(serve_loop, path):
    """The peer vanishes without a word (every packet dropped): with
    TCP_USER_TIMEOUT the connection ends in TimeoutError on both paths."""

    async def main():
        loop = asyncio.get_running_loop()
        protos = []
        server = await loop.create_server(lambda: protos.append(Recorder(loop)) or protos[-1],
                                          HOST, PORT)
        proc = await asyncio.create_subprocess_exec(*client_argv(*client(f"""
            import socket, sys
            s = socket.create_connection(("{HOST}", {PORT}), timeout=5)
            s.sendall(b"hi")
            sys.stdin.read()
        """)), stdin=asyncio.subprocess.PIPE)
        t = await asyncio.wait_for(protos_made(protos), 10)
        t.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 1500)
        try:
            with nft_drop_all():
                t.write(b"into the void" * 1000)
                exc = await asyncio.wait_for(protos[0].lost, 30)
        finally:
            proc.stdin.close()
            proc.kill()
            await proc.wait()
        assert isinstance(exc, TimeoutError), exc
        server.close()

    run(serve_loop, main(), timeout=60)
    assert_idle(serve_loop)


def test_thousand_connections(serve_loop, path):
    """1,000 connections held open at once, each served, then closed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 8192), max(hard, 8192)))

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.t = transport

        def data_received(self, data):
            self.t.write(data.upper())

    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Echo, HOST, PORT, backlog=2048)
        code = textwrap.dedent(f"""
            import asyncio, resource
            resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
            async def one(i, ready, go):
                r, w = await asyncio.open_connection("{HOST}", {PORT})
                w.write(b"conn %d " % i)
                got = await r.readexactly(len(b"CONN %d " % i))
                assert got == b"CONN %d " % i, got
                ready.append(i)
                await go.wait()
                w.write(b"bye")
                assert await r.readexactly(3) == b"BYE"
                w.close()
                await w.wait_closed()
            async def main():
                ready, go = [], asyncio.Event()
                tasks = [asyncio.create_task(one(i, ready, go)) for i in range(1000)]
                while len(ready) < 1000:
                    await asyncio.sleep(0.05)
                    for t in tasks:
                        if t.done() and t.exception():
                            raise t.exception()
                print("open", len(ready), flush=True)
                await asyncio.sleep(0.5)
                go.set()
                await asyncio.gather(*tasks)
                print("done")
            asyncio.run(main())
        """)
        proc = await asyncio.create_subprocess_exec(*client_argv(sys.executable, "-c", code),
                                                    stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert line.strip() == b"open 1000", (line, (await proc.stderr.read())[-2000:])
        if path == "bypass":
            c = loop.stack.counters()
            assert c["conns"] - c["conns_time_wait"] >= 1000
            assert loop.stack.connections() >= 1000
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err[-2000:]
        assert out.strip() == b"done"
        server.close()

    run(serve_loop, main(), timeout=150)
    # the peers closed: the server side must have let go of everything
    for _ in range(50):
        serve_loop.run_until_complete(asyncio.sleep(0.05))
    assert_idle(serve_loop)


@pytest.mark.parametrize("kind", ["data_received", "get_buffer"])
def test_protocol_errors_reach_the_exception_handler(serve_loop, path, kind):
    """A protocol callback that raises: the loop's exception handler gets
    asyncio's message, the connection is reset and connection_lost gets the
    exception (the bypass delivers from C, with CPython's wording)."""

    class Bad(asyncio.Protocol):
        def __init__(self, loop):
            self.lost = loop.create_future()

        def data_received(self, data):
            raise ValueError("bad request")

        def connection_lost(self, exc):
            self.lost.set_result(exc)

    class BadBuffered(asyncio.BufferedProtocol):
        def __init__(self, loop):
            self.lost = loop.create_future()

        def get_buffer(self, sizehint):
            return bytearray()

        def buffer_updated(self, nbytes):
            raise AssertionError("never: the buffer was empty")

        def connection_lost(self, exc):
            self.lost.set_result(exc)

    contexts = []
    serve_loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    factory = Bad if kind == "data_received" else BadBuffered

    async def main():
        loop = asyncio.get_running_loop()
        protos = []
        server = await loop.create_server(lambda: protos.append(factory(loop)) or protos[-1],
                                          HOST, PORT)
        rc, out, err = await arun_client(*client(f"""
            import socket
            s = socket.create_connection(("{HOST}", {PORT}), timeout=10)
            s.sendall(b"hello")
            try:
                print(repr(s.recv(10)))
            except ConnectionResetError:
                print("reset")
        """), timeout=30)
        assert rc == 0, err
        exc = await protos[0].lost
        server.close()
        return out.strip(), exc

    out, exc = run(serve_loop, main())
    assert out in (b"reset", b"b''"), out
    assert len(contexts) == 1, contexts
    ctx = contexts[0]
    if kind == "data_received":
        assert ctx["message"] == "Fatal error: protocol.data_received() call failed."
        assert isinstance(ctx["exception"], ValueError)
    else:
        assert ctx["message"] == "Fatal error: protocol.get_buffer() call failed."
        assert isinstance(ctx["exception"], RuntimeError)
        assert "empty buffer" in str(ctx["exception"])
    assert exc is ctx["exception"]
    assert_idle(serve_loop)


def test_a_write_leaves_at_write_time_on_an_idle_loop(serve_loop, path, tmp_path):
    """A loop that woke for one request sends what a callback writes at
    write() time, as the kernel's TCP does, not after the rest of the
    loop iteration: the server's callback writes its answer and then waits,
    inside the callback, until the client says it has it (a file the
    client creates).  A write held to the end of the iteration would never
    reach the client while the callback waits."""
    got = tmp_path / "got"

    class Answer(asyncio.Protocol):
        confirmed: list[bool] = []

        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            if data == b"hello":        # a first exchange: the loop is idle after it
                self.transport.write(b"hi")
                return
            # answered by a later callback, as frameworks answer from a task
            asyncio.get_running_loop().call_soon(self.answer)

        def answer(self):
            self.transport.write(b"pong")
            import time
            deadline = time.monotonic() + 10
            while not got.exists() and time.monotonic() < deadline:
                time.sleep(0.005)
            Answer.confirmed.append(got.exists())

    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Answer, HOST, PORT)
        rc, out, err = await arun_client(*client(f"""
            import pathlib, socket
            import time
            s = socket.create_connection(("{HOST}", {PORT}), timeout=30)
            s.sendall(b"hello")
            assert s.recv(10) == b"hi"
            time.sleep(0.3)                  # the server's loop waits, idle
            s.sendall(b"ping")
            print(s.recv(10))
            pathlib.Path({str(got)!r}).touch()
        """))
        assert rc == 0, err
        assert out.strip() == b"b'pong'"
        server.close()
        await server.wait_closed()

    run(serve_loop, main())
    assert Answer.confirmed == [True]
    if serve_loop.stack is not None:
        assert serve_loop.stack.counters()["loop_eager_flushes"] >= 1


@pytest.mark.parametrize("path", ["bypass"], indirect=True)   # kernel sockets: no kick
def test_writes_of_a_busy_iteration_leave_together(serve_loop, path):
    """Under load (one wait finds several connections' requests) the
    answers written in the iteration leave together at its end, none on its
    own at write time."""
    n = 8
    protos: list[asyncio.Protocol] = []

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            protos.append(self)

        def data_received(self, data):
            # answered by a later callback, as frameworks answer from a task
            asyncio.get_running_loop().call_soon(self.transport.write, data)

    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Echo, HOST, PORT)
        client_done = asyncio.ensure_future(arun_client(*client(f"""
            import socket, time
            socks = [socket.create_connection(("{HOST}", {PORT}), timeout=30)
                     for _ in range({n})]
            time.sleep(1.0)                  # the server is busy by now
            for s in socks:
                s.sendall(b"x")
            print(sum(len(s.recv(10)) for s in socks))
        """)))
        while len(protos) < n:
            await asyncio.sleep(0.01)
        assert loop.stack.counters()["loop_eager_flushes"] == 0
        import time
        time.sleep(2.0)   # busy: the n requests pile up behind this callback
        rc, out, err = await client_done
        assert rc == 0, err
        assert out.strip() == str(n).encode()
        assert loop.stack.counters()["loop_eager_flushes"] == 0
        server.close()
        await server.wait_closed()

    run(serve_loop, main())
