"""uvicorn serving asgi_app:app (FastAPI), started one of the documented ways.

    python uvicorn_server.py MODE HOST PORT

MODE:
- ``loop``: ``uvicorn.run(..., loop="specloop:new_event_loop")`` (uvicorn's
  own loop setting; the same as ``uvicorn --loop specloop:new_event_loop``)
- ``install``: ``specloop.install()`` then ``uvicorn.run(..., loop="none")``
- ``sockets``: uvicorn binds its own socket (``Config.bind_socket``) and
  serves it (``Server.run(sockets=[...])``, as under gunicorn or
  ``--workers``): ``loop.create_server(sock=...)``
- ``fd``: a socket bound here is handed to ``uvicorn --fd N`` (as systemd
  socket activation does): uvicorn wraps it with ``socket.fromfd``

The interface comes from SPECLOOP_INTERFACE.
"""

from __future__ import annotations

import os
import socket
import sys

import uvicorn

import specloop


def main() -> None:
    mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    here = os.path.dirname(os.path.abspath(__file__))
    if mode == "loop":
        uvicorn.run("asgi_app:app", host=host, port=port, app_dir=here,
                    loop="specloop:new_event_loop", access_log=False)
    elif mode == "install":
        specloop.install()
        uvicorn.run("asgi_app:app", host=host, port=port, app_dir=here, loop="none",
                    access_log=False)
    elif mode == "sockets":
        config = uvicorn.Config("asgi_app:app", host=host, port=port,
                                loop="specloop:new_event_loop", access_log=False)
        server = uvicorn.Server(config)
        server.run(sockets=[config.bind_socket()])
    elif mode == "fd":
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        os.set_inheritable(sock.fileno(), True)
        os.execv(sys.executable, [sys.executable, "-m", "uvicorn", "asgi_app:app",
                                  "--app-dir", here, "--fd", str(sock.fileno()),
                                  "--loop", "specloop:new_event_loop", "--no-access-log"])
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
