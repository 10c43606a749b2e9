"""An aiohttp app on specloop's bypass for the hardening tests, run the way
users run one (web.run_app: SIGINT/SIGTERM shut it down gracefully).

argv: host port static_dir [backlog]; HARDENING_KEEPALIVE: the idle
keep-alive timeout in seconds (aiohttp's and the fast path's);
HARDENING_HAND_BACK=0: connections stay aiohttp's after a dynamic request.  /_state
answers the engine's counters, the connections not in TIME-WAIT and the
process's RSS, so that a test can see the server come back to idle.
"""

import asyncio
import hashlib
import json
import os
import sys

from aiohttp import web

import specloop
import specloop.aiohttp


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="Hello, world!")


async def echo(request: web.Request) -> web.Response:
    h = hashlib.sha256()
    async for chunk in request.content.iter_any():
        h.update(chunk)
    return web.Response(text=h.hexdigest())


async def nbytes(request: web.Request) -> web.Response:
    n = int(request.query["n"])
    return web.Response(body=(hashlib.sha256(b"x").digest() * (n // 32 + 1))[:n])


async def state(request: web.Request) -> web.Response:
    stack = asyncio.get_running_loop().stack
    live = [{k: c[k] for k in ("peer", "state_name", "flags", "idle_ms", "timer_ms", "backoff",
                               "send_queued", "packets_out", "rxq_bytes", "snd_wnd")}
            for c in stack.tcp_connections() if c["state_name"] != "TIME-WAIT"]
    return web.json_response({"counters": stack.counters(), "rss_kib": rss_kib(),
                              "transports": stack.connections(), "live": live})


def main() -> None:
    host, port, static = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    app = web.Application(client_max_size=64 << 20)
    app.add_routes([web.get("/", hello), web.post("/echo", echo), web.get("/bytes", nbytes),
                    web.get("/_state", state)])
    specloop.aiohttp.add_static(app, "/static", static,
                                hand_back=os.environ.get("HARDENING_HAND_BACK", "1") != "0")
    specloop.install()  # the interface and settings come from SPECLOOP_*
    web.run_app(app, host=host, port=port, backlog=int(sys.argv[4]) if len(sys.argv) > 4 else 128,
                keepalive_timeout=float(os.environ.get("HARDENING_KEEPALIVE", "75")),
                print=lambda *a: print("READY", flush=True), shutdown_timeout=5)


if __name__ == "__main__":
    main()
