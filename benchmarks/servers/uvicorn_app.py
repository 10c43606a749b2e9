"""uvicorn: GET / -> "Hello, world!" (13 bytes, text/plain) from a bare ASGI app.

Started uvicorn's documented way (``uvicorn.Server(Config(...)).run()``,
as ``uvicorn.run`` does) with the loop chosen by uvicorn's own ``loop``
setting: "asyncio", "uvloop", or ``specloop:new_event_loop`` (an import
string for a loop factory; the interface comes from SPECLOOP_INTERFACE).
HTTP parser: uvicorn's "auto" (httptools when installed, else h11).
"""

from __future__ import annotations

import signal
import sys

import uvicorn

import _common

STATIC = False                     # serves no static files (--static is ignored)
LOOPS = ("asyncio", "uvloop", "specloop")   # runs on every loop

UVICORN_LOOP = {"asyncio": "asyncio", "uvloop": "uvloop",
                "specloop": "specloop:new_event_loop"}

app = _common.asgi_hello


class _Server(uvicorn.Server):
    """uvicorn's Server, saying READY once it listens."""

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            _common.ready()


def main() -> int:
    args = _common.parse_args(__doc__.splitlines()[0])
    config = uvicorn.Config(app, host=args.host, port=args.port, loop=UVICORN_LOOP[args.loop],
                            lifespan="off", access_log=False, log_level="warning",
                            backlog=_common.BACKLOG)
    # uvicorn shuts down on SIGTERM and then raises it again with the handler
    # it found: make that one a clean exit (status 0), not death by signal
    signal.signal(signal.SIGTERM, _exit)
    _Server(config).run()   # until SIGTERM/SIGINT (uvicorn's own handlers)
    return 0


def _exit(signum, frame) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    sys.exit(main())
