"""Tornado servers over asyncio transports, so that the bypass can carry them.

Tornado's own ``TCPServer.listen()`` / ``add_sockets()`` never call
``loop.create_server``: they watch a kernel listening socket with
``add_reader``, ``accept()`` it themselves and read and write the accepted
kernel socket (``IOStream``).  No asyncio loop can put another TCP under
that.  ``listen()`` here serves the same, unchanged ``HTTPServer`` (or any
``TCPServer``) through ``loop.create_server``: each connection is an asyncio
transport, wrapped in a ``BaseIOStream`` that Tornado's HTTP/1.1 and
WebSocket code use as they use an ``IOStream``::

    server = tornado.httpserver.HTTPServer(app)
    await specloop.tornado.listen(server, 8888, "10.55.0.2")

It works on every asyncio loop (and on specloop's kernel path); on specloop
with the address on the bypass interface, specloop's TCP carries it.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import socket
from typing import Any, Iterable

from tornado import gen
from tornado.ioloop import IOLoop
from tornado.iostream import BaseIOStream
from tornado.log import app_log
from tornado.netutil import ssl_options_to_context
from tornado.tcpserver import TCPServer

from .engine import OPT
from .transports import BypassTransport

__all__ = ["listen", "add_sockets", "TransportIOStream"]

_READ = IOLoop.READ
_WRITE = IOLoop.WRITE
_ERROR = IOLoop.ERROR
_NODELAY = OPT["NODELAY"]


class _Handlers:
    """The IOLoop as a TransportIOStream sees it: there is no fd to watch,
    so handler registration goes to the stream; the rest is the IOLoop's."""

    # asked for on every event (BaseIOStream._handle_events)
    READ = _READ
    WRITE = _WRITE
    ERROR = _ERROR

    def __init__(self, io_loop: IOLoop, stream: "TransportIOStream") -> None:
        self._io_loop = io_loop
        self._stream = stream

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._io_loop, name)
        if callable(value):
            # the IOLoop's methods, looked up once per stream: Tornado's
            # stream asks for them (add_callback, add_future...) per request
            setattr(self, name, value)
        return value

    def add_handler(self, fd: Any, handler: Any, events: int) -> None:
        self._stream._wanted()

    def update_handler(self, fd: Any, events: int) -> None:
        self._stream._wanted()

    def remove_handler(self, fd: Any) -> None:
        pass


class TransportIOStream(BaseIOStream):
    """A Tornado stream over an asyncio transport.

    Received data waits in a queue until Tornado reads it (``read_from_fd``);
    past ``high_water`` queued bytes the transport stops reading.  Writes go
    straight to the transport; while it asks the protocol to pause writing,
    ``write_to_fd`` takes nothing and Tornado's write futures wait.
    """

    high_water = 256 * 1024

    def __init__(self, transport: asyncio.Transport, *args: Any, **kwargs: Any) -> None:
        self._transport = transport
        self._bypass = isinstance(transport, BypassTransport)   # its options are ours
        self.socket = transport.get_extra_info("socket")
        self._rx: collections.deque[memoryview] = collections.deque()
        self._rx_size = 0
        self._rx_eof = False
        self._lost = False
        self._lost_error: BaseException | None = None
        self._reading_paused = False
        self._write_paused = False
        self._fire_scheduled = False
        super().__init__(*args, **kwargs)
        # the loop this stream's events run on, looked up once: on 3.11
        # every get_running_loop() is a getpid() system call
        self._call_soon = self.io_loop.asyncio_loop.call_soon  # type: ignore[attr-defined]
        self.io_loop = _Handlers(self.io_loop, self)  # type: ignore[assignment]

    # ---- BaseIOStream's fd interface -----------------------------------

    def fileno(self) -> Any:
        return self.socket

    def close_fd(self) -> None:
        if self.error is not None and not self._lost:
            self._transport.abort()
        else:
            self._transport.close()

    def read_from_fd(self, buf: bytearray | memoryview) -> int | None:
        if not self._rx:
            if self._lost_error is not None:
                exc, self._lost_error = self._lost_error, None
                raise exc
            return 0 if self._rx_eof else None
        out = memoryview(buf)
        want = len(out)
        chunk = self._rx[0]
        if len(self._rx) == 1 and len(chunk) <= want:
            # the common case: one received chunk, and it fits
            n = len(chunk)
            out[:n] = chunk
            self._rx.clear()
            self._rx_size -= n
            if self._reading_paused and self._rx_size < self.high_water // 2 and not self._lost:
                self._reading_paused = False
                self._transport.resume_reading()
            return n
        n = 0
        while self._rx and n < want:
            chunk = self._rx[0]
            take = min(len(chunk), want - n)
            out[n:n + take] = chunk[:take]
            if take == len(chunk):
                self._rx.popleft()
            else:
                self._rx[0] = chunk[take:]
            n += take
        self._rx_size -= n
        if self._reading_paused and self._rx_size < self.high_water // 2 and not self._lost:
            self._reading_paused = False
            self._transport.resume_reading()
        return n

    def write_to_fd(self, data: memoryview) -> int:
        if self._lost or self._transport.is_closing():
            raise BrokenPipeError(errno.EPIPE, "the connection is closed")
        if self._write_paused:
            return 0  # Tornado waits for WRITE (resume_writing)
        # Tornado releases ``data`` when this returns: a transport that keeps
        # a view must get its own bytes (specloop's copies what it keeps)
        self._transport.write(data if self._bypass else bytes(data))
        return len(data)

    def get_fd_error(self) -> Exception | None:
        err = self._lost_error
        return err if isinstance(err, Exception) else None

    def set_nodelay(self, value: bool) -> None:
        # Tornado turns Nagle off and on again around every response
        if self._bypass:
            self._transport._setopt(_NODELAY, 1 if value else 0)   # closed: ignored
            return
        sock = self.socket
        if sock is not None and hasattr(sock, "setsockopt"):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1 if value else 0)
            except OSError:
                pass

    # ---- readiness, as the loop would report it for a socket -----------

    def _wanted(self) -> None:
        """Tornado changed what it waits for (self._state)."""
        if self._ready():
            self._schedule()

    def _ready(self) -> int:
        state = self._state
        if state is None or self.closed():
            return 0
        events = 0
        if state & _READ and (self._rx or self._rx_eof or self._lost_error is not None):
            events |= _READ
        if state & _WRITE and (not self._write_paused or self._lost):
            events |= _WRITE
        if not events and self._lost and state & _ERROR:
            events |= _ERROR
        return events

    def _schedule(self) -> None:
        if not self._fire_scheduled:
            self._fire_scheduled = True
            self._call_soon(self._fire)

    def _fire(self) -> None:
        self._fire_scheduled = False
        events = self._ready()
        if events:
            self._handle_events(self.socket, events)

    # ---- the protocol's side ---------------------------------------------

    def _data(self, data: bytes) -> None:
        self._rx.append(memoryview(data))
        self._rx_size += len(data)
        if self._rx_size >= self.high_water and not self._reading_paused:
            self._reading_paused = True
            self._transport.pause_reading()
        if self._state is not None and self._state & _READ:
            self._schedule()

    def _eof(self) -> bool:
        self._rx_eof = True
        self._wanted()
        return True  # Tornado closes when it has read the EOF

    def _connection_lost(self, exc: BaseException | None) -> None:
        self._lost = True
        self._rx_eof = True
        self._lost_error = exc
        self._write_paused = False
        self._wanted()


class _Protocol(asyncio.Protocol):
    """One connection of a Tornado TCPServer served through create_server."""

    def __init__(self, server: TCPServer) -> None:
        self._server = server
        self._stream: TransportIOStream | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        server = self._server
        stream = TransportIOStream(transport,  # type: ignore[arg-type]
                                   max_buffer_size=server.max_buffer_size,
                                   read_chunk_size=server.read_chunk_size)
        self._stream = stream
        try:  # as TCPServer._handle_connection
            future = server.handle_stream(stream, transport.get_extra_info("peername"))
            if future is not None:
                IOLoop.current().add_future(gen.convert_yielded(future), lambda f: f.result())
        except Exception:
            app_log.error("Error in connection callback", exc_info=True)

    def data_received(self, data: bytes) -> None:
        assert self._stream is not None
        self._stream._data(data)

    def eof_received(self) -> bool:
        assert self._stream is not None
        return self._stream._eof()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._stream is not None:
            self._stream._connection_lost(exc)

    def pause_writing(self) -> None:
        if self._stream is not None:
            self._stream._write_paused = True

    def resume_writing(self) -> None:
        if self._stream is not None:
            self._stream._write_paused = False
            self._stream._wanted()


def _ssl(server: TCPServer) -> Any:
    opts = server.ssl_options
    return None if opts is None else ssl_options_to_context(opts, server_side=True)


async def listen(server: TCPServer, port: int, address: str | None = None, *,
                 backlog: int = 128, reuse_port: bool = False) -> asyncio.AbstractServer:
    """Serves ``server`` (a Tornado ``HTTPServer`` or any ``TCPServer``) on
    ``address:port`` through the running loop's ``create_server``; returns
    the asyncio Server (close it to stop listening).  Needs a running loop."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _Protocol(server), address, port,
                                    backlog=backlog, reuse_port=reuse_port or None,
                                    ssl=_ssl(server))


async def add_sockets(server: TCPServer, sockets: Iterable[socket.socket], *,
                      backlog: int = 128) -> list[asyncio.AbstractServer]:
    """As Tornado's ``TCPServer.add_sockets``, for sockets the caller bound
    (``tornado.netutil.bind_sockets``): each through ``create_server(sock=)``."""
    loop = asyncio.get_running_loop()
    return [await loop.create_server(lambda: _Protocol(server), sock=s, backlog=backlog,
                                     ssl=_ssl(server))
            for s in sockets]
