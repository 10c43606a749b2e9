"""hypercorn serving asgi_app:starlette_app, the documented programmatic way
(``hypercorn.asyncio.serve``) on specloop's loop (``specloop.run``).

    python hypercorn_server.py HOST PORT

hypercorn binds its own sockets (``Config.create_sockets``) and hands them
to ``asyncio.start_server(sock=...)``.  The interface comes from
SPECLOOP_INTERFACE.
"""

from __future__ import annotations

import os
import sys

from hypercorn.asyncio import serve
from hypercorn.config import Config

import specloop

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from asgi_app import starlette_app  # noqa: E402


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    specloop.run(serve(starlette_app, config))


if __name__ == "__main__":
    main()
