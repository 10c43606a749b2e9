"""One native engine per loop, and the glue between it and the loop.

The engine sits in the loop through a ``specloop._core.Pump``: the loop's
blocking wait is the pump's (native/py/pump.c), which waits in C on the
engine's AF_XDP sockets and the selector's epoll fd, runs RX, the fast
path, TCP timers and TX there, and returns to Python only when transports
have events; it dispatches them to transports (data straight into the
protocol), and every loop iteration ends with one TX kick.  What is left
here in Python is what happens per connection, not per packet: accepting,
listeners, static routes, and kernel sockets that bypass servers take over.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import sys
from typing import TYPE_CHECKING, Any

from . import _core, doctor, iface
from .config import Config
from .engine import BypassUnavailableError, Engine
from .server import BypassServers
from .static import StaticRegistry, StaticRoute
from .transports import BypassListenSocket, BypassTransport

if TYPE_CHECKING:
    from .loop import Loop

__all__ = ["Stack"]

# enum tcp_state of native/tcp.h, in order (RFC 9293 §3.3.2)
TCP_STATE_NAMES = ("CLOSED", "LISTEN", "SYN-SENT", "SYN-RECEIVED", "ESTABLISHED", "FIN-WAIT-1",
                   "FIN-WAIT-2", "CLOSE-WAIT", "CLOSING", "LAST-ACK", "TIME-WAIT")

logger = logging.getLogger("specloop")

def _ip_str(ip_be: int) -> str:
    return socket.inet_ntoa(ip_be.to_bytes(4, sys.byteorder))


class Stack:
    """The bypass of one loop: an engine on ``config.interface``."""

    def __init__(self, loop: "Loop", config: Config) -> None:
        ifname = config.interface
        assert ifname is not None
        info = iface.interface_info(ifname)   # once: preflight checks this same one
        for finding in doctor.preflight(ifname, info):
            if finding.status != "ok":
                code = {"privileges": errno.EPERM, "XDP sockets": errno.EAFNOSUPPORT,
                        "interface": errno.ENODEV}.get(finding.name, errno.EINVAL)
                raise BypassUnavailableError(
                    code, f"specloop bypass on {ifname!r}: {finding.detail}"
                    + (f" (fix: {finding.fix})" if finding.fix else ""))
        assert info is not None
        selector = loop._selector
        if not isinstance(selector, selectors.EpollSelector):
            raise BypassUnavailableError(
                errno.EINVAL, f"specloop bypass on {ifname!r}: the loop's selector must be "
                f"an epoll selector (the engine waits beside it), not {type(selector).__name__}")
        self.loop = loop
        self.config = config
        self.interface = ifname
        n = int(info["queues"])
        queues = tuple(range(min(n, 16))) if config.queue == "all" else config.queue
        missing = [q for q in queues if q >= n]
        if missing:
            raise BypassUnavailableError(
                errno.EINVAL, f"specloop bypass on {ifname!r}: queue(s) {missing} do not exist "
                f"(the interface has {n} queue(s))")
        self.engine = Engine(config, mac=str(info["mac"]), ipv4=str(info["ipv4"][0]),
                             mtu=int(info["mtu"]), queues=queues)
        self.address: str = str(info["ipv4"][0])
        self.addresses: tuple[str, ...] = tuple(str(a) for a in info["ipv4"])
        # kernel sockets of this stack (placeholders) live in its namespace
        self._netns_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self._conns: dict[int, BypassTransport] = {}
        self._listeners: dict[int, BypassListenSocket] = {}
        self._closed = False
        try:
            self.pump = _core.Pump(engine=self.engine.address, api=self.engine.api_address,
                                   stack=self, selector_fd=selector.fileno(),
                                   xsk_fds=self.engine.fds, max_conns=config.max_conns,
                                   busy_poll_us=config.busy_poll_us,
                                   adaptive_poll_us=config.adaptive_poll_us)
        except BaseException:
            self.engine.close()
            os.close(self._netns_fd)
            raise
        self.servers = BypassServers(self)
        self.static = StaticRegistry(self)

    # ---- information -------------------------------------------------------

    @property
    def xdp_mode(self) -> str:
        """"native" or "generic": how the XDP program is attached."""
        return self.engine.xdp_mode

    def counters(self) -> dict[str, int]:
        """The engine's counters (see ``struct sl_counters``) and the loop's
        waits (``loop_*``: how often the wait returned to Python, and why)."""
        c = self.engine.counters()
        c.update(self.pump.stats())
        return c

    def connections(self) -> int:
        """Transports open on this stack now."""
        return len(self._conns)

    def conn_info(self, conn: int) -> dict[str, int]:
        """TCP state of one connection (``struct sl_conn_info``)."""
        return self.engine.conn_info(conn)

    def tcp_connections(self) -> list[dict[str, Any]]:
        """Every connection in the TCP table, as ``ss -tn`` lists them: the
        ``conn_info`` fields plus ``id``, ``state_name`` and ``peer``."""
        out = []
        for conn in self.engine.conn_list():
            try:
                row: dict[str, Any] = dict(self.engine.conn_info(conn))
            except OSError:
                continue  # gone meanwhile
            state = row["state"]
            row["id"] = conn
            row["state_name"] = TCP_STATE_NAMES[state] if state < len(
                TCP_STATE_NAMES) else str(state)
            row["peer"] = f"{_ip_str(row['peer_ip'])}:{row['peer_port']}"
            out.append(row)
        return out

    def steer_port(self, port: int) -> None:
        """Steers TCP ``port`` to this loop's engine (without a listener its
        SYNs are answered with RST, as a closed port's)."""
        self.engine.steer_port(port)

    def unsteer_port(self, port: int) -> None:
        """Gives TCP ``port`` back to the kernel."""
        self.engine.unsteer_port(port)

    def impair(self, *, rx_loss: float = 0.0, rx_dup: float = 0.0, rx_reorder: float = 0.0,
               tx_loss: float = 0.0, tx_dup: float = 0.0, tx_reorder: float = 0.0,
               delay: float = 0.0, reorder_delay: float = 0.001, seed: int = 1) -> None:
        """Fault injection at the engine's RX/TX boundary (for tests; this
        kernel has no netem): probabilities as fractions, delays in seconds.
        A reordered frame is held ``reorder_delay`` longer than the rest."""
        cfg: dict[str, int] = {}
        for name, value in (("rx_loss", rx_loss), ("rx_dup", rx_dup),
                            ("rx_reorder", rx_reorder), ("tx_loss", tx_loss),
                            ("tx_dup", tx_dup), ("tx_reorder", tx_reorder)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"impair: {name}={value!r} must be a fraction from 0 to 1")
            cfg[name] = round(value * 1_000_000)
        for name, value in (("delay", delay), ("reorder_delay", reorder_delay)):
            if not 0.0 <= value <= 10.0:
                raise ValueError(f"impair: {name}={value!r} must be 0 to 10 seconds")
        cfg["delay_us"] = round(delay * 1e6)
        cfg["reorder_delay_us"] = round(reorder_delay * 1e6)
        cfg["seed"] = seed
        self.engine.impair(cfg)

    def unimpair(self) -> None:
        """Turns fault injection off (held frames are dropped)."""
        self.engine.impair(None)

    # ---- the loop's side -------------------------------------------------------

    def poll_soon(self) -> None:
        """Polls the engine at the next wait, without blocking (held data
        to hand over after resume_reading)."""
        if not self._closed:
            self.pump.poll_soon()

    def _accept(self, conn: int, listener: int) -> None:
        lsock = self._listeners.get(listener)
        if lsock is None:
            self.engine.conn_abort(conn)
            return
        try:
            info = self.engine.conn_info(conn)
        except OSError:
            return  # reset before we got to it
        lsock.accept(conn, (lsock.address, info["local_port"]),
                     (_ip_str(info["peer_ip"]), info["peer_port"]))

    # ---- transports and listeners ----------------------------------------------

    def adopt(self, conn: int, transport: BypassTransport) -> None:
        """The engine's events for ``conn`` go to ``transport`` from now on."""
        self._conns[conn] = transport
        self.pump.adopt(conn, transport)

    def forget(self, conn: int, transport: BypassTransport | None = None) -> None:
        """``conn``'s events go nowhere any more; with ``transport``, only
        while they go to it (a connection back from the fast path may have a
        new transport by now)."""
        if transport is not None and self._conns.get(conn) is not transport:
            return
        self._conns.pop(conn, None)
        if not self._closed:
            self.pump.forget(conn)

    def listen(self, lsock: BypassListenSocket) -> int:
        try:
            listener = self.engine.listen(lsock.port, lsock._backlog)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise OSError(errno.EADDRINUSE,
                              f"error while attempting to bind on address "
                              f"{(lsock.address, lsock.port)!r}: address already in use") from None
            raise
        self._listeners[listener] = lsock
        routes = self.static.routes_for(lsock.port, lsock._factory)
        if routes:
            self.static.serve(lsock.port, routes)
            self.engine.listen_set_fast(listener, hand_back=self.static.hand_back(lsock.port))
        return listener

    def unlisten(self, listener: int) -> None:
        lsock = self._listeners.pop(listener, None)
        if not self._closed:
            self.engine.listen_close(listener)
            if lsock is not None and not any(
                    ls.port == lsock.port for ls in self._listeners.values()):
                self.static.forget_port(lsock.port)

    def add_static_route(self, prefix: str, directory: Any, *, port: int | None = None,
                         **options: Any) -> StaticRoute:
        """Serves ``directory`` under ``prefix`` from the fast path on the
        bypass listeners of ``port`` (all of them if None)."""
        if port is not None and (not isinstance(port, int) or not 0 < port < 65536):
            raise ValueError(f"add_static_route: port={port!r} must be 1-65535 or None")
        route = StaticRoute.make(prefix, directory, **options)
        self.static.want(route, port)
        for listener, lsock in self._listeners.items():
            if port is None or lsock.port == port:
                self.static.serve(lsock.port, [route])
                self.engine.listen_set_fast(listener,
                                            hand_back=self.static.hand_back(lsock.port))
        return route

    # ---- servers: kernel sockets that hold, share or hand over ports --------

    async def wants(self, host: Any, sock: socket.socket | None) -> bool:
        """True if create_server(host=..., sock=...) is for the bypass."""
        return await self.servers.wants(host, sock)

    async def create_server(self, protocol_factory: Any, host: Any = None,
                            port: int | None = None, **kwargs: Any) -> Any:
        """asyncio's create_server for addresses on the bypass interface."""
        return await self.servers.create_server(protocol_factory, host, port, **kwargs)

    def refuse_kernel_listener(self, fd: Any) -> None:
        """Raises RuntimeError if ``fd`` is a listening kernel socket on the
        bypass address (see Loop.add_reader)."""
        self.servers.refuse_kernel_listener(fd)

    # ---- teardown ------------------------------------------------------------

    def close(self) -> None:
        """Detaches from the loop and closes the engine: open connections
        are reset, the XDP program is detached."""
        if self._closed:
            return
        self._closed = True
        self.loop._attach_pump(None)  # the loop waits on its selector alone again
        self.pump.close()
        self.static.close()
        for lsock in list(self._listeners.values()):
            lsock._stack = None
        self._listeners.clear()
        conns, self._conns = self._conns, {}
        for tr in conns.values():
            tr._gone = True
        try:
            self.engine.close()
        finally:
            os.close(self._netns_fd)

    def __repr__(self) -> str:
        return (f"<specloop.Stack {self.interface} {self.address} "
                f"xdp={self.xdp_mode}{' closed' if self._closed else ''}>")


