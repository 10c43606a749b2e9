"""asyncio transports over specloop's TCP.

``BypassTransport`` follows asyncio's ``_SelectorSocketTransport`` method
for method: the same guards, exceptions, attributes and one teardown path
(``_fatal_error`` → ``_force_close`` → ``call_soon(_call_connection_lost)``).
Where a kernel socket would be read or written, the native engine is:
received bytes arrive as DATA events (one ``bytes`` copy for a Protocol;
copied straight into ``get_buffer()`` for a BufferedProtocol), and writes
are copied once into UMEM segments, leaving at the end of the loop
iteration.  What runs per event or per write is its C base,
``specloop._core.TransportCore`` (native/py/transport.c: delivery, write,
writelines and the small queries); its state attributes (``_conn``,
``_paused``, ``_held``, ``_buffer_size``, ...) are that base's fields.

``BypassListenSocket`` stands where a listening socket would in an
``asyncio.Server``, so the Server class of the running Python serves bypass
ports unchanged.
"""

from __future__ import annotations

import collections
import errno
import inspect
import logging
import os
import socket
import warnings
from asyncio import base_events, constants, futures, protocols, sslproto, transports
from typing import TYPE_CHECKING, Any

from . import _core
from .engine import OPT, SOCKET_OPTIONS, check

if TYPE_CHECKING:
    from .stack import Stack

__all__ = ["BypassTransport", "BypassSocket", "BypassListenSocket"]

logger = logging.getLogger("specloop")

# Python 3.13 passes the transport to Server._attach/_detach
_ATTACH_TAKES_TRANSPORT = len(inspect.signature(base_events.Server._attach).parameters) > 1

_OPTS = {(level, optname): eo for level, optname, eo in SOCKET_OPTIONS.values()}


class BypassSocket:
    """What ``get_extra_info('socket')`` returns for a bypass connection.

    It is not a kernel socket (``fileno()`` is -1); the options servers set
    (TCP_NODELAY, SO_KEEPALIVE, TCP_KEEPIDLE/INTVL/CNT, TCP_USER_TIMEOUT,
    SO_RCVBUF) reach the connection.  Anything else raises
    OSError(ENOPROTOOPT) naming it.
    """

    family = socket.AF_INET
    type = socket.SOCK_STREAM
    proto = socket.IPPROTO_TCP

    def __init__(self, transport: "BypassTransport") -> None:
        self._transport = transport

    def fileno(self) -> int:
        return -1

    def getsockname(self) -> tuple[str, int]:
        return self._transport._extra["sockname"]

    def getpeername(self) -> tuple[str, int]:
        return self._transport._extra["peername"]

    def _opt(self, level: int, optname: int) -> int:
        opt = _OPTS.get((level, optname))
        if opt is None:
            raise OSError(errno.ENOPROTOOPT,
                          f"specloop bypass socket: option level={level} "
                          f"optname={optname} is not supported")
        return opt

    def setsockopt(self, level: int, optname: int, value: Any, optlen: Any = None) -> None:
        opt = _OPTS.get((level, optname))
        if opt is None:
            opt = self._opt(level, optname)  # raises, naming the option
        t = self._transport
        stack = t._stack
        if stack is None or t._gone:
            raise OSError(errno.EBADF, "specloop bypass socket: connection is closed")
        if value.__class__ is not int and not isinstance(value, int):
            value = int.from_bytes(bytes(value)[:4], "little")
        rc = t._setopt(opt, value)
        if rc < 0:
            check(rc, "setsockopt", argument="value")

    def getsockopt(self, level: int, optname: int, buflen: int | None = None) -> int:
        opt = self._opt(level, optname)
        t = self._transport
        if t._stack is None or t._gone:
            raise OSError(errno.EBADF, "specloop bypass socket: connection is closed")
        return t._stack.engine.conn_getopt(t._conn, opt)

    def gettimeout(self) -> float:
        return 0.0

    def __repr__(self) -> str:
        return (f"<specloop.BypassSocket laddr={self._transport._extra.get('sockname')} "
                f"raddr={self._transport._extra.get('peername')}>")


class BypassTransport(_core.TransportCore):
    """An asyncio transport over one specloop TCP connection.

    Its base, ``specloop._core.TransportCore``, is asyncio's
    ``_FlowControlMixin`` (so a ``Transport``) with the hot path in C.
    """

    _start_tls_compatible = True
    _sendfile_compatible = constants._SendfileMode.TRY_NATIVE

    def __init__(self, loop: Any, stack: "Stack", conn: int, protocol: protocols.BaseProtocol,
                 *, sockname: tuple[str, int], peername: tuple[str, int],
                 server: Any = None, waiter: Any = None) -> None:
        super().__init__(None, loop)
        self._stack: Stack | None = stack
        self._pump = stack.pump  # the engine, for the C write path
        self._conn = conn
        self._extra["sockname"] = sockname
        self._extra["peername"] = peername
        self._extra["socket"] = BypassSocket(self)
        self._protocol_connected = False
        self.set_protocol(protocol)
        self._server = server
        self._buffer: collections.deque[memoryview] = collections.deque()
        self._buffer_size = 0
        self._conn_lost = 0     # set when call to connection_lost scheduled
        self._closing = False   # set when close() called
        self._paused = False    # set when pause_reading() called
        self._eof = False       # set when write_eof() called
        self._gone = False      # the engine freed the connection
        self._made = False      # connection_made() has run
        self._held = []         # data not handed over yet (paused, early)
        self._eof_held = False  # EOF not handed over yet
        self._empty_waiter = None
        self._write_waiter: futures.Future | None = None
        if self._server is not None:
            if _ATTACH_TAKES_TRANSPORT:
                self._server._attach(self)
            else:
                self._server._attach()
        # As asyncio's socket transports: TCP_NODELAY on by default.
        try:
            stack.engine.conn_setopt(conn, OPT["NODELAY"], 1)
        except OSError:
            pass  # reset before we got to it: its CLOSED event follows
        self._loop.call_soon(self._connection_made, waiter)

    def __repr__(self) -> str:
        info = [self.__class__.__name__]
        if self._gone and self._stack is None:
            info.append("closed")
        elif self._closing:
            info.append("closing")
        info.append(f"conn={self._conn:#x}")
        info.append(f"peer={self._extra.get('peername')}")
        info.append("read=" + ("paused" if self._paused else "polling"))
        info.append(f"write=<bufsize={self.get_write_buffer_size()}>")
        return "<{}>".format(" ".join(info))

    # ---- the protocol ---------------------------------------------------

    def set_protocol(self, protocol: protocols.BaseProtocol) -> None:
        self._buffered = isinstance(protocol, protocols.BufferedProtocol)
        self._protocol = protocol
        self._protocol_connected = True

    def get_protocol(self) -> protocols.BaseProtocol:
        return self._protocol

    def _connection_made(self, waiter: Any) -> None:
        if self._conn_lost:
            return
        try:
            self._protocol.connection_made(self)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.connection_made() call failed.")
            if waiter is not None and not waiter.done():
                waiter.set_exception(exc)
            return
        self._made = True
        if waiter is not None:
            futures._set_result_unless_cancelled(waiter, None)
        if not self._paused:
            self._release_held()

    # ---- reading: DATA and EOF events reach the C base (_core) ----------

    def _release_held(self) -> None:
        while self._held and not self._paused and not self._conn_lost:
            self._deliver(self._held.pop(0))
        if self._eof_held and not self._held and not self._paused and not self._conn_lost:
            self._eof_held = False
            self._eof_received()

    def _eof_received(self) -> None:
        if self._loop.get_debug():
            logger.debug("%r received EOF", self)
        try:
            keep_open = self._protocol.eof_received()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.eof_received() call failed.")
            return
        if not keep_open:
            self.close()

    def _closed_event(self, err: int) -> None:
        """The engine ended the connection (reset, timeout)."""
        self._gone = True
        code = -err if err else errno.ECONNRESET
        exc_type = {errno.ECONNRESET: ConnectionResetError,
                    errno.ETIMEDOUT: TimeoutError}.get(code, OSError)
        exc = exc_type(code, os.strerror(code))
        self._buffer.clear()
        self._buffer_size = 0
        if self._write_waiter is not None and not self._write_waiter.done():
            self._write_waiter.set_exception(exc)
        self._force_close(exc)

    def _returned_event(self) -> None:
        """The fast path, which answered the connection since this
        transport's last request, ended it (its keep-alive timeout, a
        "Connection: close", the peer's FIN): for this transport and its
        protocol the connection is over, as after a clean close by the peer
        (connection_lost(None))."""
        self._gone = True
        self._force_close(None)

    def pause_reading(self) -> None:
        if not self.is_reading():
            return
        self._paused = True
        if not self._gone and self._stack is not None:
            self._engine_call("conn_pause_reading")
        if self._loop.get_debug():
            logger.debug("%r pauses reading", self)

    def resume_reading(self) -> None:
        if self._closing or not self._paused:
            return
        self._paused = False
        if self._made:
            self._release_held()
        if not self._paused and not self._gone and self._stack is not None:
            self._engine_call("conn_resume_reading")
            self._stack.poll_soon()
        if self._loop.get_debug():
            logger.debug("%r resumes reading", self)

    # ---- writing: write() and writelines() are the C base's ----------------

    def _write_more(self, data: bytes | bytearray | memoryview, sent: int) -> None:
        """write()'s rest: what the engine did not take (from ``sent`` on)
        waits in the buffer (the C write calls this)."""
        immutable = isinstance(data, bytes)
        if sent:
            data = memoryview(data)[sent:]
        # a copy only if the caller may still change it; slices stay views
        view = memoryview(data if immutable else bytes(data)).cast("B")
        self._buffer.append(view)
        self._buffer_size += len(view)
        self._maybe_pause_protocol()

    def _write_lost(self) -> None:
        """write() after the connection was lost (the C write calls this)."""
        if self._conn_lost >= constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES:
            logger.warning("socket.send() raised exception.")
        self._conn_lost += 1

    def _write_ready(self) -> None:
        """Room in the engine's send buffer (a WRITABLE event)."""
        if self._conn_lost or self._gone:
            return
        if self._write_waiter is not None and not self._write_waiter.done():
            self._write_waiter.set_result(None)
        engine = self._stack.engine  # type: ignore[union-attr]
        while self._buffer:
            chunk = self._buffer[0]
            try:
                n = engine.conn_write(self._conn, chunk)
            except OSError as exc:
                self._buffer.clear()
                self._buffer_size = 0
                self._fatal_error(exc, "Fatal write error on socket transport")
                if self._empty_waiter is not None:
                    self._empty_waiter.set_exception(exc)
                return
            self._buffer_size -= n
            if n < len(chunk):
                self._buffer[0] = chunk[n:]
                break
            self._buffer.popleft()
        self._maybe_resume_protocol()  # may append to the buffer
        if not self._buffer:
            if self._empty_waiter is not None and not self._empty_waiter.done():
                self._empty_waiter.set_result(None)
            if self._closing:
                self._call_connection_lost(None)
            elif self._eof:
                self._engine_call("conn_shutdown_write")

    def _engine_call(self, what: str) -> None:
        """One of the engine's per-connection calls; a connection the engine
        already ended (its CLOSED event on the way) is not an error here."""
        stack = self._stack
        if stack is None or self._gone:
            return
        try:
            getattr(stack.engine, what)(self._conn)
        except OSError:
            pass

    def write_eof(self) -> None:
        if self._closing or self._eof:
            return
        self._eof = True
        if not self._buffer and not self._gone:
            self._engine_call("conn_shutdown_write")

    def can_write_eof(self) -> bool:
        return True

    # ---- closing ---------------------------------------------------------

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if not self._buffer:
            self._conn_lost += 1
            self._release()
            self._loop.call_soon(self._call_connection_lost, None)

    def abort(self) -> None:
        self._force_close(None, reset=True)

    def _fatal_error(self, exc: BaseException, message: str = "Fatal error on transport") -> None:
        if isinstance(exc, OSError):
            if self._loop.get_debug():
                logger.debug("%r: %s", self, message, exc_info=True)
        else:
            self._loop.call_exception_handler({
                "message": message,
                "exception": exc,
                "transport": self,
                "protocol": self._protocol,
            })
        self._force_close(exc, reset=True)

    def _force_close(self, exc: BaseException | None, reset: bool = False) -> None:
        if self._conn_lost:
            return
        if self._buffer:
            self._buffer.clear()
            self._buffer_size = 0
        self._closing = True
        self._reset = reset
        self._conn_lost += 1
        self._loop.call_soon(self._call_connection_lost, exc)

    def _release(self) -> None:
        """The engine's connection is no longer this transport's: FIN after
        what was written (RST after abort()).  close() does it at once, not
        an iteration later: no more data is received, and the fast path
        (which may be answering the connection now) hands the next request
        to a new protocol instead of to one on its way out."""
        stack = self._stack
        if stack is None or self._gone:
            return
        self._gone = True
        try:
            if getattr(self, "_reset", False):
                stack.engine.conn_abort(self._conn)
            else:
                stack.engine.conn_close(self._conn)
        except OSError:
            pass  # the engine ended it first

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        self._release()
        stack, self._stack = self._stack, None
        self._pump = None
        try:
            if stack is not None:
                stack.forget(self._conn, self)
            if self._protocol_connected and self._made:
                self._protocol.connection_lost(exc)
        finally:
            self._protocol = None  # type: ignore[assignment]
            self._loop = None
            server = self._server
            if server is not None:
                if _ATTACH_TAKES_TRANSPORT:
                    server._detach(self)
                else:
                    server._detach()
                self._server = None
            lost = ConnectionError("Connection is closed by peer")
            for waiter in (self._empty_waiter, self._write_waiter):
                if waiter is not None and not waiter.done():
                    waiter.set_exception(lost)

    def __del__(self, _warn: Any = warnings.warn) -> None:
        if self._stack is not None and not self._gone:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)

    # ---- sendfile ----------------------------------------------------------

    def _make_empty_waiter(self) -> futures.Future:
        if self._empty_waiter is not None:
            raise RuntimeError("Empty waiter is already set")
        self._empty_waiter = self._loop.create_future()
        if not self._buffer:
            self._empty_waiter.set_result(None)
        return self._empty_waiter

    def _reset_empty_waiter(self) -> None:
        self._empty_waiter = None

    async def _sendfile(self, file: Any, offset: int, count: int | None) -> int:
        """loop.sendfile() natively: the engine reads the file straight into
        UMEM segments (preadv), no executor and no Python buffer."""
        fd = file.fileno()
        total = 0
        await self._make_empty_waiter()
        try:
            while count is None or total < count:
                if self._conn_lost or self._gone:
                    raise ConnectionError("Connection is closed by peer")
                want = (count - total) if count is not None else (1 << 30)
                try:
                    n = self._stack.engine.conn_sendfile(  # type: ignore[union-attr]
                        self._conn, fd, offset + total, min(want, 1 << 30))
                except BlockingIOError:
                    self._write_waiter = self._loop.create_future()
                    await self._write_waiter
                    self._write_waiter = None
                    continue
                if n == 0:
                    break  # end of file
                total += n
            return total
        finally:
            self._reset_empty_waiter()
            stack = self._stack
            if stack is not None and not stack._closed:
                stack.engine.conn_sendfile_end(self._conn)  # type: ignore[union-attr]
            if total:
                file.seek(offset + total)


def _wrap_ssl(loop: Any, protocol: protocols.BaseProtocol, sslcontext: Any, waiter: Any,
              handshake_timeout: Any, shutdown_timeout: Any) -> sslproto.SSLProtocol:
    return sslproto.SSLProtocol(loop, protocol, sslcontext, waiter, True, None,
                                ssl_handshake_timeout=handshake_timeout,
                                ssl_shutdown_timeout=shutdown_timeout)


class BypassListenSocket:
    """A listening port on the bypass, in the place of a listening socket in
    an ``asyncio.Server``.

    ``placeholder`` is a kernel socket bound to the same port: it keeps the
    kernel from giving the port to anyone else while specloop serves it.
    For a wildcard server (host None or "0.0.0.0") it is bound to 0.0.0.0
    and listens too (``kernel_listens``): the kernel serves the port on
    every other interface, the bypass on ours, behind one socket as asyncio
    shows it.  Its connections inherit the options set on that socket, as
    accept() gives a kernel connection those of its listener
    (specloop.server.inherited_options).
    """

    family = socket.AF_INET
    type = socket.SOCK_STREAM
    proto = socket.IPPROTO_TCP

    def __init__(self, stack: "Stack", address: str, port: int,
                 placeholder: socket.socket | None, *, kernel_listens: bool = False) -> None:
        self._stack: Stack | None = stack
        self.address = address
        self.port = port
        self._placeholder = placeholder
        self.kernel_listens = kernel_listens and placeholder is not None
        self._listener: int | None = None
        self._backlog = 100
        self._factory: Any = None
        self._ssl: Any = None
        self._server: Any = None
        self._ssl_timeouts: tuple[Any, Any] = (None, None)
        self._inherit: list[tuple[int, int]] = []   # (engine option, value)
        if self.kernel_listens and placeholder is not None:
            # a dual-stack "::" socket shows as what it is
            self.family = placeholder.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN)

    def getsockname(self) -> Any:
        if self.kernel_listens and self._placeholder is not None:
            return self._placeholder.getsockname()
        if self.kernel_listens:
            return ("0.0.0.0", self.port)
        return (self.address, self.port)

    @property
    def placeholder(self) -> socket.socket | None:
        """The kernel socket holding the port (listening if kernel_listens)."""
        return self._placeholder

    def getpeername(self) -> tuple[str, int]:
        raise OSError(errno.ENOTCONN, "a listening port has no peer")

    def fileno(self) -> int:
        return self._placeholder.fileno() if self._placeholder is not None else -1

    def _socket(self) -> socket.socket:
        if self._placeholder is None:
            raise OSError(errno.EBADF, "specloop listening port: its socket is closed")
        return self._placeholder

    def dup(self) -> socket.socket:
        """A duplicate of the kernel socket that holds the port."""
        return self._socket().dup()

    def get_inheritable(self) -> bool:
        return self._socket().get_inheritable()

    def set_inheritable(self, inheritable: bool) -> None:
        self._socket().set_inheritable(inheritable)

    def listen(self, backlog: int = 100) -> None:
        self._backlog = max(1, int(backlog))
        if self.kernel_listens:
            self._placeholder.listen(backlog)  # type: ignore[union-attr]

    def setsockopt(self, *args: Any) -> None:
        if self._placeholder is not None:
            self._placeholder.setsockopt(*args)

    def getsockopt(self, *args: Any) -> Any:
        if self._placeholder is None:
            raise OSError(errno.ENOPROTOOPT, "specloop listening port has no socket options")
        return self._placeholder.getsockopt(*args)

    def gettimeout(self) -> float:
        return 0.0

    def start(self, protocol_factory: Any, sslcontext: Any, server: Any, backlog: int,
              handshake_timeout: Any, shutdown_timeout: Any) -> None:
        """Starts accepting (asyncio's loop._start_serving)."""
        if self._listener is not None or self._stack is None:
            return
        if self._placeholder is not None:
            self._inherit = self._stack.servers.inherited_options(
                self._placeholder, (self.address, self.port))
        self._factory = protocol_factory
        self._ssl = sslcontext
        self._server = server
        self._backlog = max(1, int(backlog))
        self._ssl_timeouts = (handshake_timeout, shutdown_timeout)
        self._listener = self._stack.listen(self)

    def accept(self, conn: int, sockname: tuple[str, int], peername: tuple[str, int]) -> None:
        """A connection completed its handshake: make its protocol and
        transport (asyncio's _accept_connection2, without a task)."""
        stack = self._stack
        assert stack is not None
        loop = stack.loop
        protocol = None
        try:
            protocol = self._factory()
            waiter = loop.create_future()
            if self._ssl:
                ssl_protocol = _wrap_ssl(loop, protocol, self._ssl, waiter, *self._ssl_timeouts)
                transport: Any = BypassTransport(loop, stack, conn, ssl_protocol,
                                                 sockname=sockname, peername=peername,
                                                 server=self._server, waiter=None)
            else:
                transport = BypassTransport(loop, stack, conn, protocol, sockname=sockname,
                                            peername=peername, server=self._server,
                                            waiter=waiter)
            stack.adopt(conn, transport)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            try:
                stack.engine.conn_abort(conn)
            except OSError:
                pass
            if loop.get_debug():
                loop.call_exception_handler({
                    "message": "Error on transport creation for incoming connection",
                    "exception": exc, "protocol": protocol})
            return

        for opt, value in self._inherit:
            try:
                stack.engine.conn_setopt(conn, opt, value)
            except (OSError, ValueError):
                pass  # reset meanwhile, or a value the kernel allows and we do not

        def done(fut: futures.Future) -> None:
            if fut.cancelled():
                return
            exc = fut.exception()
            if exc is not None:
                transport.close()
                if loop.get_debug():
                    loop.call_exception_handler({
                        "message": "Error on transport creation for incoming connection",
                        "exception": exc, "protocol": protocol, "transport": transport})

        waiter.add_done_callback(done)

    def detach_placeholder(self) -> None:
        """The loop closed the kernel socket (wildcard servers)."""
        self._placeholder = None

    def close(self) -> None:
        """Stops listening (asyncio's loop._stop_serving); connections stay."""
        stack, self._stack = self._stack, None
        if stack is not None and self._listener is not None:
            stack.unlisten(self._listener)
        self._listener = None
        if self._placeholder is not None:
            self._placeholder.close()
            self._placeholder = None

    def __repr__(self) -> str:
        return f"<specloop.BypassListenSocket {self.address}:{self.port}>"
