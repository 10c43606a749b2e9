"""``make demo``: aiohttp over the bypass in the lab, fetched from the other
namespace by curl, and the engine's own account of what it carried."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile

from aiohttp import web

from . import netlab
from .aiohttp import add_static
from .loop import Loop

PORT = 8080


def _app(static_dir: str) -> web.Application:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="Hello from aiohttp on specloop's own TCP!\n")

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.Response(text=f"received {len(body)} bytes\n")

    app = web.Application(client_max_size=64 << 20)
    app.add_routes([web.get("/", hello), web.post("/echo", echo)])
    add_static(app, "/static", static_dir)
    return app


async def _client(*argv: str) -> str:
    proc = await asyncio.create_subprocess_exec(*netlab.in_ns(netlab.CLIENT_NS, *argv),
                                                stdout=subprocess.PIPE,
                                                stderr=subprocess.STDOUT)
    out, _ = await proc.communicate()
    return out.decode(errors="replace").strip()


async def _serve(loop: Loop, static_dir: str, requests: int) -> None:
    runner = web.AppRunner(_app(static_dir))
    await runner.setup()
    await web.TCPSite(runner, netlab.SERVER_IP, PORT).start()
    url = f"http://{netlab.SERVER_IP}:{PORT}"
    try:
        print(f"\n$ curl {url}/    (from {netlab.CLIENT_NS})")
        print(await _client("curl", "-sS", f"{url}/"))
        print(f"$ curl --data-binary @5MiB {url}/echo")
        blob = os.path.join(static_dir, "blob.bin")
        print(await _client("curl", "-sS", "--data-binary", f"@{blob}", f"{url}/echo"))
        print(f"$ curl -I {url}/static/hello.txt    (answered by the engine, not Python)")
        print(await _client("curl", "-sSI", f"{url}/static/hello.txt"))
        print(f"$ wrk -t1 -c16 -d2s {url}/")
        print(await _client("wrk", "-t1", "-c16", "-d2s", f"{url}/"))
        print(f"$ wrk -t1 -c16 -d2s {url}/static/hello.txt")
        print(await _client("wrk", "-t1", "-c16", "-d2s", f"{url}/static/hello.txt"))
        ss = subprocess.run(netlab.in_ns(netlab.SERVER_NS, "ss", "-Htln", f"sport = :{PORT}"),
                            capture_output=True, text=True).stdout.strip()
        print(f"kernel listeners on port {PORT} in {netlab.SERVER_NS}: "
              f"{ss or 'none (the bypass carries it)'}")
    finally:
        await runner.cleanup()


def main(requests: int = 200) -> int:
    lab = netlab.up()
    print(f"lab: {lab.server_ns}/{lab.server_if} {lab.server_ip} <-> "
          f"{lab.client_ns}/{lab.client_if} {lab.client_ip}")
    with netlab.inside(lab.server_ns):
        loop = Loop(interface=lab.server_if)
    try:
        stack = loop.stack
        assert stack is not None
        print(f"engine: XDP {stack.xdp_mode} mode on {lab.server_if}, "
              f"{loop.config.frame_count} UMEM frames of {loop.config.frame_size} bytes")
        with tempfile.TemporaryDirectory() as static_dir:
            with open(os.path.join(static_dir, "hello.txt"), "w") as f:
                f.write("a static file, served from pre-built packets\n")
            with open(os.path.join(static_dir, "blob.bin"), "wb") as f:
                f.write(os.urandom(5 << 20))
            asyncio.set_event_loop(loop)
            loop.run_until_complete(_serve(loop, static_dir, requests))
        c = stack.counters()
        print(f"\nengine counters: {c['conns_opened']} connections, {c['rx_packets']} packets in, "
              f"{c['tx_packets']} out, {c['fast_requests']} requests answered in C, "
              f"{c['retransmits']} retransmissions, "
              f"{sum(v for k, v in c.items() if k.startswith('drop_'))} packets dropped")
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
