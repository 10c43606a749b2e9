"""Tornado's HTTPServer with an unchanged tornado.web application.

    python tornado_server.py MODE HOST PORT

MODE:
- ``specloop``: ``await specloop.tornado.listen(server, port, host)``
- ``sockets``: ``tornado.netutil.bind_sockets`` then
  ``await specloop.tornado.add_sockets(server, sockets)``
- ``tornado``: Tornado's own ``server.listen(port, host)`` (kernel sockets
  watched with add_reader: the bypass cannot carry it)

The loop is specloop's (``specloop.run``, interface from
SPECLOOP_INTERFACE).  Prints READY once it listens.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys

import tornado.httpserver
import tornado.netutil
import tornado.web

import specloop
import specloop.tornado


def pattern(n: int) -> bytes:
    block = hashlib.sha256(b"specloop").digest() * 2048
    return (block * (n // len(block) + 1))[:n]


class Hello(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/plain")
        self.write("Hello, world!")


class Echo(tornado.web.RequestHandler):
    def post(self) -> None:
        body = self.request.body
        self.write(json.dumps({"sha256": hashlib.sha256(body).hexdigest(),
                               "length": len(body)}))


class Bytes(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "application/octet-stream")
        self.write(pattern(int(self.get_argument("n"))))


def refuse_reentry() -> None:
    """Tornado's stream code is not reentrant: a stream's _handle_events
    running inside its own (data handed over synchronously while Tornado
    reads) raises, and the test finds the traceback in the log."""
    handle = specloop.tornado.TransportIOStream._handle_events

    def once(self, fd, events):  # type: ignore[no-untyped-def]
        if getattr(self, "_test_depth", 0):
            raise AssertionError("TransportIOStream._handle_events re-entered")
        self._test_depth = 1
        try:
            return handle(self, fd, events)
        finally:
            self._test_depth = 0

    specloop.tornado.TransportIOStream._handle_events = once  # type: ignore[method-assign]


def make_app() -> tornado.web.Application:
    return tornado.web.Application([(r"/", Hello), (r"/echo", Echo), (r"/bytes", Bytes)])


async def main(mode: str, host: str, port: int) -> None:
    refuse_reentry()
    server = tornado.httpserver.HTTPServer(make_app())
    if mode == "specloop":
        await specloop.tornado.listen(server, port, host)
    elif mode == "sockets":
        await specloop.tornado.add_sockets(server, tornado.netutil.bind_sockets(port, host))
    elif mode == "tornado":
        server.listen(port, host)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print("READY", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    specloop.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
