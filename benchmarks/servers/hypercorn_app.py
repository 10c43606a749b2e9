"""hypercorn: GET / -> "Hello, world!" (13 bytes, text/plain) from a bare ASGI app.

Started hypercorn's documented programmatic way,
``hypercorn.asyncio.serve(app, config)``, on the loop of ``--loop``
(hypercorn binds its own socket and hands it to
``asyncio.start_server(sock=...)``; with specloop the bypass takes it over).
"""

from __future__ import annotations

import asyncio
import logging
import sys

from hypercorn.asyncio import serve
from hypercorn.config import Config

import _common

STATIC = False                     # serves no static files (--static is ignored)
LOOPS = ("asyncio", "uvloop", "specloop")   # runs on every loop

app = _common.asgi_hello


class _Listening(logging.Handler):
    """hypercorn logs "Running on ..." right after each start_server."""

    def __init__(self, event: asyncio.Event) -> None:
        super().__init__(logging.INFO)
        self.event = event

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Running on"):
            self.event.set()


def main() -> int:
    args = _common.parse_args(__doc__.splitlines()[0])
    host = f"[{args.host}]" if ":" in args.host else args.host

    async def start():
        listening = asyncio.Event()
        errorlog = logging.getLogger("hypercorn.bench")
        errorlog.setLevel(logging.INFO)
        errorlog.propagate = False
        errorlog.addHandler(_Listening(listening))
        config = Config()
        config.bind = [f"{host}:{args.port}"]
        config.backlog = _common.BACKLOG
        config.accesslog = None
        config.errorlog = errorlog
        stop = asyncio.Event()
        task = asyncio.ensure_future(serve(app, config, shutdown_trigger=stop.wait))
        done, _ = await asyncio.wait([task, asyncio.ensure_future(listening.wait())],
                                     return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()   # it failed: say why
            raise RuntimeError("hypercorn stopped before listening")

        async def cleanup() -> None:
            stop.set()
            await task

        return cleanup

    return _common.serve(args.loop, start)


if __name__ == "__main__":
    sys.exit(main())
