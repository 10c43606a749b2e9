"""What every benchmark server script shares: its command line, the event
loop it runs on, and the READY line (see README.md in this folder).

Scripts are run as ``python benchmarks/servers/<name>_app.py``, so this
folder is on ``sys.path`` and they ``import _common``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from typing import Any, Awaitable, Callable

LOOPS = ("asyncio", "uvloop", "specloop")
HELLO = b"Hello, world!"  # 13 bytes, text/plain
_ASGI_HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"13")]


async def asgi_hello(scope: dict, receive: Callable, send: Callable) -> None:
    """The hello app in ASGI, for every ASGI server's row."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": _ASGI_HEADERS})
    await send({"type": "http.response.body", "body": HELLO})
BACKLOG = 1024


def parse_args(description: str, extra: Callable[[argparse.ArgumentParser], None] | None = None
               ) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--loop", choices=LOOPS, default="asyncio",
                   help="asyncio's default loop, uvloop, or specloop (bypass when "
                        "SPECLOOP_INTERFACE is set, else its kernel path)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--static", metavar="DIR", default=None,
                   help="serve the files of DIR under /static/")
    if extra is not None:
        extra(p)
    return p.parse_args()


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    """A new event loop of ``kind`` (one of LOOPS)."""
    if kind == "asyncio":
        return asyncio.new_event_loop()
    if kind == "uvloop":
        import uvloop
        return uvloop.new_event_loop()
    if kind == "specloop":
        import specloop
        # the interface (if any) comes from SPECLOOP_INTERFACE
        return specloop.new_event_loop()
    raise ValueError(f"unknown loop {kind!r}: one of {', '.join(LOOPS)}")


def ready() -> None:
    """Tells the suite the server listens."""
    sys.stdout.write("READY\n")
    sys.stdout.flush()


def serve(kind: str, start: Callable[[], Awaitable[Callable[[], Awaitable[None]]]],
          extra_counters: Callable[[], dict[str, int]] | None = None) -> int:
    """Runs ``start()`` (which listens and returns an async cleanup) on a
    loop of ``kind``, prints READY, then serves until SIGTERM or SIGINT.
    At the end, over the bypass, it prints the engine's counters (and
    ``extra_counters()``) as one line, "SPECLOOP_COUNTERS {json}"."""
    loop = new_loop(kind)
    asyncio.set_event_loop(loop)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def main() -> None:
        cleanup = await start()
        ready()
        await stop.wait()
        await cleanup()
        stack = getattr(loop, "stack", None)
        if stack is not None:
            counters = {**stack.counters(), **(extra_counters() if extra_counters else {})}
            print("SPECLOOP_COUNTERS " + json.dumps(counters), flush=True)

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    return 0


def serve_server(kind: str, open_server: Callable[[], Awaitable[Any]]) -> int:
    """``serve()`` for a server object with ``close()`` and ``wait_closed()``
    (asyncio's, websockets'): ``open_server()`` makes it listening."""
    async def start() -> Callable[[], Awaitable[None]]:
        server = await open_server()

        async def cleanup() -> None:
            server.close()
            await server.wait_closed()

        return cleanup

    return serve(kind, start)


def loop_description(kind: str) -> str:
    iface = os.environ.get("SPECLOOP_INTERFACE")
    if kind == "specloop":
        return f"specloop bypass on {iface}" if iface else "specloop kernel path"
    return kind
