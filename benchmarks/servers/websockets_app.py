"""websockets: a WebSocket echo server (every text or binary message sent
back as it came) on ``websockets.asyncio.server.serve``, websockets' own
asyncio server with its defaults (permessage-deflate offered, but the
suite's client, benchmarks/ws_load.c, asks for no extension; keepalive
pings every 20 s).

It serves the ``ws-echo`` workload only: it has no HTTP hello (a plain
``GET /`` gets websockets' own 426 Upgrade Required).
"""

from __future__ import annotations

import sys

from websockets.asyncio.server import ServerConnection, serve

import _common

STATIC = False                     # serves no static files (--static is ignored)
LOOPS = ("asyncio", "uvloop", "specloop")   # runs on every loop
WORKLOADS = ("ws-echo",)           # the only workloads it serves


async def echo(ws: ServerConnection) -> None:
    """Sends every message back: ``str`` as a text frame, ``bytes`` as binary."""
    async for message in ws:
        await ws.send(message)


def main() -> int:
    args = _common.parse_args(__doc__.splitlines()[0])

    return _common.serve_server(args.loop, lambda: serve(echo, args.host, args.port,
                                                         backlog=_common.BACKLOG))


if __name__ == "__main__":
    sys.exit(main())
