"""Without an interface specloop is asyncio's selector loop: a real aiohttp
app, clients, subprocesses, signals, executors and sendfile all work."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile

import aiohttp
from aiohttp import web

import specloop


def _app() -> web.Application:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="Hello, world!")

    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read())

    app = web.Application(client_max_size=200 << 20)
    app.add_routes([web.get("/", hello), web.post("/echo", echo)])
    return app


def test_aiohttp_app_on_loopback():
    async def main():
        loop = asyncio.get_running_loop()
        assert isinstance(loop, specloop.Loop) and loop.stack is None
        runner = web.AppRunner(_app())
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        try:
            async with aiohttp.ClientSession() as s:
                async with s.get(f"http://127.0.0.1:{port}/") as r:
                    assert r.status == 200 and await r.text() == "Hello, world!"
                body = os.urandom(3 << 20)
                async with s.post(f"http://127.0.0.1:{port}/echo", data=body) as r:
                    assert await r.read() == body
            # a real kernel client from another process
            proc = await asyncio.create_subprocess_exec(
                "curl", "-s", f"http://127.0.0.1:{port}/", stdout=subprocess.PIPE)
            out, _ = await proc.communicate()
            assert out == b"Hello, world!"
        finally:
            await runner.cleanup()

    specloop.run(main(), interface=None)


def test_signals_executors_subprocess_sendfile():
    async def main():
        loop = asyncio.get_running_loop()
        got = loop.create_future()
        loop.add_signal_handler(signal.SIGUSR1, got.set_result, "usr1")
        os.kill(os.getpid(), signal.SIGUSR1)
        assert await asyncio.wait_for(got, 5) == "usr1"
        loop.remove_signal_handler(signal.SIGUSR1)

        assert await loop.run_in_executor(None, sum, [1, 2, 3]) == 6

        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "print(6*7)", stdout=subprocess.PIPE)
        out, _ = await proc.communicate()
        assert out.strip() == b"42"

        data = os.urandom(1 << 20)
        received = bytearray()
        done = loop.create_future()

        class Sink(asyncio.Protocol):
            def data_received(self, chunk):
                received.extend(chunk)

            def connection_lost(self, exc):
                done.set_result(None)

        server = await loop.create_server(Sink, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        with tempfile.TemporaryFile() as f:
            f.write(data)
            f.flush()
            tr, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
            sent = await loop.sendfile(tr, f, 0)
            tr.close()
        await done
        server.close()
        await server.wait_closed()
        assert sent == len(data) and bytes(received) == data

    specloop.run(main())


def test_policy_and_install():
    policy = specloop.EventLoopPolicy()
    loop = policy.new_event_loop()
    try:
        assert isinstance(loop, specloop.Loop)
    finally:
        loop.close()
    old = asyncio.get_event_loop_policy()
    try:
        specloop.install()
        assert isinstance(asyncio.get_event_loop_policy(), specloop.EventLoopPolicy)

        async def which():
            return type(asyncio.get_running_loop())

        assert asyncio.run(which()) is specloop.Loop
    finally:
        asyncio.set_event_loop_policy(old)


def test_import_specloop_loads_neither_pyroute2_nor_the_lab():
    """pyroute2 is loaded when a bypass is built, the test lab never by the
    package itself: a kernel-only user pays for neither."""
    import subprocess
    import sys

    code = ("import sys, specloop, specloop.aiohttp; loop = specloop.new_event_loop(); loop.close(); "
            "bad = sorted(m for m in sys.modules if m.startswith('pyroute2') or "
            "m == 'specloop.netlab'); print(bad); assert not bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
