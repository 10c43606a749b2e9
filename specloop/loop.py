"""The specloop event loop: asyncio's selector loop plus the bypass.

Without an interface configured this *is* ``asyncio.SelectorEventLoop``:
nothing is overridden that changes behaviour.  With one, the loop owns a
:class:`~specloop.stack.Stack` (one native engine), created with the loop
and closed with it, and every iteration ends with one TX kick.
"""

from __future__ import annotations

import asyncio
import selectors
import socket
import threading
from asyncio import constants
from typing import Any

from .busypoll import BusyPollSelector
from .config import Config
from .engine import lib
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


class Loop(asyncio.SelectorEventLoop):
    """An asyncio event loop whose sockets on ``interface`` bypass the kernel.

    Settings are keyword arguments (see :class:`specloop.config.Config`);
    those not given come from ``SPECLOOP_*`` environment variables.
    """

    # Seen by BaseEventLoop.__del__ when __init__ raised before asyncio's
    # own __init__ ran (a bad setting): such a loop was never open.
    _closed = True
    _stack: Stack | None = None

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
            if cfg.busy_poll_us:
                ptr = self._stack.engine.ptr
                self._selector = BusyPollSelector(
                    self._selector, lambda: lib.sl_engine_rx_ready(ptr), cfg.busy_poll_us)

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
        ``keepalive_timeout``.  Needs the bypass (an interface)."""
        if self._stack is None:
            raise RuntimeError("add_static_route: this loop has no bypass (no interface "
                               "configured); the fast path lives in the engine")
        return self._stack.add_static_route(prefix, directory, port=port, **options)

    def _run_once(self) -> None:
        super()._run_once()
        stack = self._stack
        if stack is not None:
            stack.end_of_iteration()

    def close(self) -> None:
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        stack, self._stack = self._stack, None
        try:
            if stack is not None and not self.is_closed():
                stack.close()
        finally:
            super().close()

    def __repr__(self) -> str:
        bypass = f" bypass={self._stack!r}" if self._stack is not None else ""
        return (f"<specloop.Loop running={self.is_running()} "
                f"closed={self.is_closed()}{bypass}>")
