"""The specloop event loop: asyncio's selector loop on a C core, plus the bypass.

``Loop`` is ``asyncio.SelectorEventLoop`` with its hot methods (call_soon,
call_at, call_later, time, create_future, create_task, _run_once) in C (``specloop._core.LoopCore``,
native/py/loopcore.c), working on asyncio's own Handle objects, so every
other method of asyncio's loop runs unchanged.  ``core="asyncio"`` keeps
asyncio's Python methods instead.

With an interface configured, the loop owns a :class:`~specloop.stack.Stack`
(one native engine), created with the loop and closed with it.  The loop's
blocking wait is then the engine's (``specloop._core.Pump``): it waits in C
on the engine's sockets and the selector's epoll fd, answers fast-path
traffic and runs TCP timers there, and returns to Python only when Python
has work; every iteration ends with one TX kick.
"""

from __future__ import annotations

import asyncio
import selectors
import socket
import threading
from asyncio import base_events, constants, events, format_helpers, log
from typing import Any

from . import _core
from .config import Config
from .stack import Stack
from .transports import BypassListenSocket, BypassTransport

__all__ = ["Loop", "building_bypass"]

# Set while this thread builds a bypass: libraries used for that (pyroute2
# makes an asyncio loop of its own) must get a plain asyncio loop from an
# installed specloop policy, not another bypass loop (that would recurse).
_building = threading.local()


def building_bypass() -> bool:
    """True while the calling thread is constructing a specloop bypass."""
    return getattr(_building, "depth", 0) > 0


def _report_error(handle: events.Handle, exc: BaseException) -> None:
    """What Handle._run does when its callback raises (the C core calls it)."""
    try:
        cb = format_helpers._format_callback_source(  # type: ignore[call-arg]
            handle._callback, handle._args, debug=handle._loop.get_debug())
    except TypeError:  # Python < 3.13: no debug argument
        cb = format_helpers._format_callback_source(handle._callback, handle._args)
    context = {"message": f"Exception in callback {cb}", "exception": exc, "handle": handle}
    if handle._source_traceback:
        context["source_traceback"] = handle._source_traceback
    handle._loop.call_exception_handler(context)


def _log_slow(handle: events.Handle, seconds: float) -> None:
    """asyncio's debug-mode warning for a slow callback."""
    log.logger.warning("Executing %s took %.3f seconds",
                       base_events._format_handle(handle), seconds)


_core.configure(_report_error, _log_slow)


class Loop(_core.LoopCore, asyncio.SelectorEventLoop):
    """An asyncio event loop whose sockets on ``interface`` bypass the kernel.

    Settings are keyword arguments (see :class:`specloop.config.Config`);
    those not given come from ``SPECLOOP_*`` environment variables.
    """

    # A loop whose __init__ raised before asyncio's own __init__ ran (a bad
    # setting) was never open: LoopCore starts with _closed true.
    _stack: Stack | None = None

    def __new__(cls, selector: selectors.BaseSelector | None = None, *,
                config: Config | None = None, **settings: Any) -> "Loop":
        core = config.core if config is not None else settings.get("core")
        if cls is Loop and core is not None and core != "c":
            if config is None:
                core = Config.resolve({"core": core}).core  # a bad value says so
            if core == "asyncio":
                cls = AsyncioCoreLoop
        return super().__new__(cls)

    def __init__(self, selector: selectors.BaseSelector | None = None, *,
                 config: Config | None = None, **settings: Any) -> None:
        if config is not None and settings:
            raise TypeError("specloop.Loop: pass either config= or settings, not both")
        cfg = config if config is not None else Config.resolve(settings)
        super().__init__(selector)
        self._specloop_config = cfg
        self._stack: Stack | None = None
        if cfg.bypass:
            _building.depth = getattr(_building, "depth", 0) + 1
            try:
                self._stack = Stack(self, cfg)
            except BaseException:
                super().close()
                raise
            finally:
                _building.depth -= 1
            self._attach_pump(self._stack.pump)

    def _attach_pump(self, pump: Any) -> None:
        self._core_attach(pump)

    @property
    def config(self) -> Config:
        """The loop's resolved settings."""
        return self._specloop_config

    @property
    def stack(self) -> Stack | None:
        """The bypass (engine, counters), or None on a kernel-only loop."""
        return self._stack

    async def create_server(self, protocol_factory: Any, host: Any = None,
                            port: Any = None, *, family: int = socket.AF_UNSPEC,
                            flags: int = socket.AI_PASSIVE, sock: Any = None,
                            backlog: int = 100, ssl: Any = None,
                            reuse_address: bool | None = None,
                            reuse_port: bool | None = None,
                            ssl_handshake_timeout: float | None = None,
                            ssl_shutdown_timeout: float | None = None,
                            start_serving: bool = True) -> asyncio.AbstractServer:
        """asyncio's ``create_server``; addresses on the bypass interface
        (or the wildcard, with a bypass configured) are served by specloop's
        TCP, everything else by the kernel as usual."""
        stack = self._stack
        if (stack is not None and family in (socket.AF_UNSPEC, socket.AF_INET)
                and await stack.wants(host, sock)):
            return await stack.create_server(
                protocol_factory, host, port, sock=sock, backlog=backlog, ssl=ssl,
                reuse_address=reuse_address, reuse_port=reuse_port,
                ssl_handshake_timeout=ssl_handshake_timeout,
                ssl_shutdown_timeout=ssl_shutdown_timeout, start_serving=start_serving)
        kwargs: dict[str, Any] = dict(
            family=family, flags=flags, sock=sock, backlog=backlog, ssl=ssl,
            reuse_address=reuse_address, reuse_port=reuse_port,
            ssl_handshake_timeout=ssl_handshake_timeout, start_serving=start_serving)
        if ssl_shutdown_timeout is not None:
            kwargs["ssl_shutdown_timeout"] = ssl_shutdown_timeout
        return await super().create_server(protocol_factory, host, port, **kwargs)

    def _start_serving(self, protocol_factory: Any, sock: Any, sslcontext: Any = None,
                       server: Any = None, backlog: int = 100,
                       ssl_handshake_timeout: Any = constants.SSL_HANDSHAKE_TIMEOUT,
                       ssl_shutdown_timeout: Any = constants.SSL_SHUTDOWN_TIMEOUT) -> None:
        if isinstance(sock, BypassListenSocket):
            sock.start(protocol_factory, sslcontext, server, backlog,
                       ssl_handshake_timeout, ssl_shutdown_timeout)
            if not sock.kernel_listens:
                return
            sock = sock.placeholder  # and the kernel serves the other interfaces
        super()._start_serving(protocol_factory, sock, sslcontext, server, backlog,
                               ssl_handshake_timeout, ssl_shutdown_timeout)

    def _stop_serving(self, sock: Any) -> None:
        if isinstance(sock, BypassListenSocket):
            if sock.kernel_listens and sock.placeholder is not None:
                super()._stop_serving(sock.placeholder)
                sock.detach_placeholder()
            sock.close()
            return
        super()._stop_serving(sock)

    async def _sendfile_native(self, transp: Any, file: Any, offset: int,
                               count: int | None) -> int:
        if isinstance(transp, BypassTransport):
            return await transp._sendfile(file, offset, count)
        return await super()._sendfile_native(transp, file, offset, count)

    def add_reader(self, fd: Any, callback: Any, *args: Any) -> None:
        """asyncio's add_reader.  On a bypass loop it refuses a *listening*
        kernel socket bound to the bypass address: whoever accept()s it
        itself (Tornado's own listen(), sock_accept loops) would silently
        get no traffic, or the kernel's, while the bypass was asked for."""
        stack = self._stack
        if stack is not None:
            stack.refuse_kernel_listener(fd)
        super().add_reader(fd, callback, *args)

    def add_static_route(self, prefix: str, directory: Any, *, port: int | None = None,
                         **options: Any) -> Any:
        """Answers GET/HEAD for the files under ``directory`` (URL ``prefix``)
        in the engine, from pre-segmented packets, without waking Python, on
        the bypass listeners of ``port`` (all if None).  Everything else
        still reaches the protocol.  Options: ``max_file_size``,
        ``memory_budget``, ``cache_control``, ``follow_symlinks``,
        ``keepalive_timeout``, ``hand_back`` (False: a connection whose
        request reached the protocol stays with it).  Needs the bypass (an
        interface)."""
        if self._stack is None:
            raise RuntimeError("add_static_route: this loop has no bypass (no interface "
                               "configured); the fast path lives in the engine")
        return self._stack.add_static_route(prefix, directory, port=port, **options)

    def close(self) -> None:
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        stack, self._stack = self._stack, None
        try:
            if stack is not None and not self.is_closed():
                self._attach_pump(None)
                stack.close()
        finally:
            super().close()

    @property
    def core(self) -> str:
        """Which loop core runs: "c" (specloop._core) or "asyncio"."""
        return self._core_kind

    def __repr__(self) -> str:
        bypass = f" bypass={self._stack!r}" if self._stack is not None else ""
        return (f"<specloop.Loop core={self.core} running={self.is_running()} "
                f"closed={self.is_closed()}{bypass}>")


class EngineSelector(selectors.BaseSelector):
    """The asyncio core's selector on a bypass loop: ``select`` is the
    engine's wait (the same C wait as the C core's), and when the engine has
    events for Python it adds one ready key whose reader dispatches them."""

    def __init__(self, inner: selectors.BaseSelector, pump: Any, loop: "Loop") -> None:
        self._inner = inner
        self._pump = pump
        reader = events.Handle(pump.dispatch, (), loop, None)
        self._key = selectors.SelectorKey(-1, -1, selectors.EVENT_READ, (reader, None))

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._inner.select(0) if self._pump.wait(timeout) else []
        if self._pump.has_events():
            ready.append((self._key, selectors.EVENT_READ))
        return ready

    def close(self) -> None:
        self._inner.close()

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.get_key(fileobj)

    def get_map(self) -> Any:
        return self._inner.get_map()

    @property
    def inner(self) -> selectors.BaseSelector:
        """The selector the kernel's fds are registered in."""
        return self._inner


class AsyncioCoreLoop(Loop):
    """``Loop(core="asyncio")``: asyncio's own Python loop core (for
    comparison and debugging); the engine's wait through EngineSelector."""

    call_soon = base_events.BaseEventLoop.call_soon
    _call_soon = base_events.BaseEventLoop._call_soon
    call_at = base_events.BaseEventLoop.call_at
    call_later = base_events.BaseEventLoop.call_later
    time = base_events.BaseEventLoop.time
    create_future = base_events.BaseEventLoop.create_future
    create_task = base_events.BaseEventLoop.create_task
    get_debug = base_events.BaseEventLoop.get_debug
    _timer_handle_cancelled = base_events.BaseEventLoop._timer_handle_cancelled
    _asyncgen_firstiter_hook = base_events.BaseEventLoop._asyncgen_firstiter_hook

    @property
    def _core_kind(self) -> str:  # type: ignore[override]
        return "asyncio"

    def _attach_pump(self, pump: Any) -> None:
        sel = self._selector
        if pump is not None:
            self._selector = EngineSelector(sel, pump, self)
            self._pump = pump
        elif isinstance(sel, EngineSelector):
            self._selector = sel.inner
            self._pump = None

    def _run_once(self) -> None:
        base_events.BaseEventLoop._run_once(self)
        pump = getattr(self, "_pump", None)
        if pump is not None:
            pump.flush()
