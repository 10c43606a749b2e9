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

import asyncio
import contextlib
import errno
import fcntl
import ipaddress
import logging
import os
import selectors
import socket
import sys
from asyncio import base_events
from typing import TYPE_CHECKING, Any, Iterator

from pyroute2 import netns as _netns

from . import _core, doctor, netlab
from .config import Config
from .engine import BypassUnavailableError, Engine, check, ffi, lib
from .static import StaticRegistry, StaticRoute, route_providers
from .transports import BypassListenSocket, BypassTransport

if TYPE_CHECKING:
    from .loop import Loop

__all__ = ["Stack"]

# enum tcp_state of native/tcp.h, in order (RFC 9293 §3.3.2)
TCP_STATE_NAMES = ("CLOSED", "LISTEN", "SYN-SENT", "SYN-RECEIVED", "ESTABLISHED", "FIN-WAIT-1",
                   "FIN-WAIT-2", "CLOSE-WAIT", "CLOSING", "LAST-ACK", "TIME-WAIT")

logger = logging.getLogger("specloop")

_WILDCARDS = (None, "", "0.0.0.0")


def _ip_str(ip_be: int) -> str:
    return socket.inet_ntoa(ip_be.to_bytes(4, sys.byteorder))


class Stack:
    """The bypass of one loop: an engine on ``config.interface``."""

    def __init__(self, loop: "Loop", config: Config) -> None:
        ifname = config.interface
        assert ifname is not None
        for finding in doctor.preflight(ifname):
            if finding.status != "ok":
                code = {"privileges": errno.EPERM, "XDP sockets": errno.EAFNOSUPPORT,
                        "interface": errno.ENODEV}.get(finding.name, errno.EINVAL)
                raise BypassUnavailableError(
                    code, f"specloop bypass on {ifname!r}: {finding.detail}"
                    + (f" (fix: {finding.fix})" if finding.fix else ""))
        info = netlab.interface_info(ifname)
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
        self._ptr = self.engine.ptr
        try:
            self.pump = _core.Pump(engine=self.engine.address, api=self.engine.api_address,
                                   stack=self, selector_fd=selector.fileno(),
                                   xsk_fds=self.engine.fds, max_conns=config.max_conns,
                                   busy_poll_us=config.busy_poll_us)
        except BaseException:
            self.engine.close()
            os.close(self._netns_fd)
            raise
        self.static = StaticRegistry(self)
        self._static_routes: dict[int | None, list[StaticRoute]] = {}

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
        out = ffi.new("struct sl_conn_info *")
        check(lib.sl_conn_info(self._ptr, conn, out), "sl_conn_info")
        return {name: getattr(out, name) for name, _ in ffi.typeof(out[0]).fields}

    def tcp_connections(self) -> list[dict[str, Any]]:
        """Every connection in the TCP table, as ``ss -tn`` lists them: the
        ``conn_info`` fields plus ``id``, ``state_name`` and ``peer``."""
        n = lib.sl_conn_list(self._ptr, ffi.NULL, 0)
        ids = ffi.new("uint32_t[]", max(n, 1) + 64)
        n = min(lib.sl_conn_list(self._ptr, ids, len(ids)), len(ids))
        out = []
        for conn in ids[0:n]:
            info = ffi.new("struct sl_conn_info *")
            if lib.sl_conn_info(self._ptr, conn, info) < 0:
                continue
            row: dict[str, Any] = {name: getattr(info, name)
                                   for name, _ in ffi.typeof(info[0]).fields}
            row["id"] = conn
            row["state_name"] = TCP_STATE_NAMES[info.state] if info.state < len(
                TCP_STATE_NAMES) else str(info.state)
            row["peer"] = f"{_ip_str(info.peer_ip)}:{info.peer_port}"
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
        cfg = ffi.new("struct sl_impair *")
        for name, value in (("rx_loss", rx_loss), ("rx_dup", rx_dup),
                            ("rx_reorder", rx_reorder), ("tx_loss", tx_loss),
                            ("tx_dup", tx_dup), ("tx_reorder", tx_reorder)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"impair: {name}={value!r} must be a fraction from 0 to 1")
            setattr(cfg, name, round(value * 1_000_000))
        for name, value in (("delay", delay), ("reorder_delay", reorder_delay)):
            if not 0.0 <= value <= 10.0:
                raise ValueError(f"impair: {name}={value!r} must be 0 to 10 seconds")
        cfg.delay_us = round(delay * 1e6)
        cfg.reorder_delay_us = round(reorder_delay * 1e6)
        cfg.seed = seed
        check(lib.sl_engine_impair(self._ptr, cfg), "impair", argument="probability")

    def unimpair(self) -> None:
        """Turns fault injection off (held frames are dropped)."""
        check(lib.sl_engine_impair(self._ptr, ffi.NULL), "impair")

    # ---- the loop's side -------------------------------------------------------

    def poll_soon(self) -> None:
        """Polls the engine at the next wait, without blocking (held data
        to hand over after resume_reading)."""
        if not self._closed:
            self.pump.poll_soon()

    def _accept(self, conn: int, listener: int) -> None:
        lsock = self._listeners.get(listener)
        if lsock is None:
            lib.sl_conn_abort(self._ptr, conn)
            return
        info = ffi.new("struct sl_conn_info *")
        if lib.sl_conn_info(self._ptr, conn, info) < 0:
            return
        lsock.accept(conn, (lsock.address, info.local_port),
                     (_ip_str(info.peer_ip), info.peer_port))

    # ---- transports and listeners ----------------------------------------------

    def adopt(self, conn: int, transport: BypassTransport) -> None:
        """The engine's events for ``conn`` go to ``transport`` from now on."""
        self._conns[conn] = transport
        self.pump.adopt(conn, transport)

    def forget(self, conn: int) -> None:
        self._conns.pop(conn, None)
        if not self._closed:
            self.pump.forget(conn)

    def listen(self, lsock: BypassListenSocket) -> int:
        rc = lib.sl_listen(self._ptr, lsock.port, lsock._backlog, 1)
        if rc == -errno.EADDRINUSE:
            raise OSError(errno.EADDRINUSE,
                          f"error while attempting to bind on address "
                          f"{(lsock.address, lsock.port)!r}: address already in use")
        listener = check(rc, f"listening on {lsock.address}:{lsock.port}")
        self._listeners[listener] = lsock
        routes = self._routes_for(lsock.port, lsock._factory)
        if routes:
            self.static.serve(lsock.port, routes)
            check(lib.sl_listen_set_fast(self._ptr, listener, 1), "sl_listen_set_fast")
        return listener

    def unlisten(self, listener: int) -> None:
        lsock = self._listeners.pop(listener, None)
        if not self._closed:
            lib.sl_listen_close(self._ptr, listener)
            if lsock is not None and not any(
                    ls.port == lsock.port for ls in self._listeners.values()):
                self.static.forget_port(lsock.port)

    def _routes_for(self, port: int, factory: Any) -> list[StaticRoute]:
        routes = [*self._static_routes.get(None, []), *self._static_routes.get(port, [])]
        for provider in route_providers:
            routes.extend(provider(factory))
        return routes

    def add_static_route(self, prefix: str, directory: Any, *, port: int | None = None,
                         **options: Any) -> StaticRoute:
        """Serves ``directory`` under ``prefix`` from the fast path on the
        bypass listeners of ``port`` (all of them if None)."""
        if port is not None and (not isinstance(port, int) or not 0 < port < 65536):
            raise ValueError(f"add_static_route: port={port!r} must be 1-65535 or None")
        route = StaticRoute.make(prefix, directory, **options)
        self._static_routes.setdefault(port, []).append(route)
        for listener, lsock in self._listeners.items():
            if port is None or lsock.port == port:
                self.static.serve(lsock.port, [route])
                check(lib.sl_listen_set_fast(self._ptr, listener, 1), "sl_listen_set_fast")
        return route

    @contextlib.contextmanager
    def _in_netns(self) -> Iterator[None]:
        """Runs the body in the stack's network namespace (kernel sockets
        made here must live where the interface is)."""
        here = os.stat("/proc/thread-self/ns/net").st_ino
        if here == os.fstat(self._netns_fd).st_ino:
            yield
            return
        back = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _netns.setns(self._netns_fd)
            try:
                yield
            finally:
                _netns.setns(back)
        finally:
            os.close(back)

    def _bind(self, address: str, port: int, *, listen_later: bool,
              reuse_address: bool | None, reuse_port: bool | None = None) -> socket.socket:
        with self._in_netns():
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            # as asyncio: SO_REUSEADDR unless asked not to (kernel TIME-WAIT
            # sockets of an earlier server must not block the placeholder)
            if reuse_address is not False:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.setblocking(False)
            sock.bind((address, port))
        except OSError as err:
            sock.close()
            raise OSError(err.errno, f"error while attempting to bind on address "
                          f"{(address, port)!r}: {err.strerror.lower()}") from None
        return sock

    def _bind6_wildcard(self, port: int, reuse_address: bool | None,
                        reuse_port: bool | None) -> socket.socket | None:
        if not socket.has_ipv6:
            return None
        with self._in_netns():
            try:
                sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            except OSError:
                return None
        try:
            if reuse_address is not False:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setblocking(False)
            sock.bind(("::", port))
        except OSError as err:
            sock.close()
            if err.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                return None
            raise OSError(err.errno, f"error while attempting to bind on address "
                          f"{('::', port)!r}: {err.strerror.lower()}") from None
        return sock

    def _netns_ino(self) -> int:
        return os.fstat(self._netns_fd).st_ino

    def refuse_kernel_listener(self, fd: Any) -> None:
        """Raises RuntimeError if ``fd`` is a listening kernel socket on the
        bypass address (see Loop.add_reader)."""
        try:
            fileno = fd if isinstance(fd, int) else int(fd.fileno())
            sock = socket.socket(fileno=fileno)
        except (OSError, ValueError, TypeError, AttributeError):
            return
        try:
            if (sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
                    and self._covers(sock)):
                raise RuntimeError(
                    f"specloop: a listening kernel socket on the bypass address "
                    f"{sock.getsockname()!r} is watched with add_reader: its connections "
                    "would never come over the bypass. Serve it with loop.create_server("
                    "sock=...) (or specloop.tornado.listen for Tornado) instead.")
        except OSError:
            return
        finally:
            sock.detach()

    def _covers(self, sock: socket.socket) -> bool:
        """True if ``sock``, a kernel socket a server bound itself, is for the
        bypass: TCP, in the stack's network namespace, bound to a bypass
        address, to 0.0.0.0, or to a dual-stack ``::`` (all of which take in
        the bypass address) or to an IPv4-mapped bypass address, or not
        bound at all (listen() would bind it to the wildcard)."""
        try:
            # the kernel's word, not the Python object's: socket.fromfd()
            # labels a socket with whatever family its caller said
            family = sock.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN)
            stype = sock.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
            name = sock.getsockname()
        except (OSError, AttributeError, TypeError):
            return False
        if stype != socket.SOCK_STREAM or not isinstance(name, tuple):
            return False
        ino = _socket_netns_ino(sock)
        if ino is not None and ino != self._netns_ino():
            return False  # the same address in another namespace is not ours
        if family == socket.AF_INET:
            return name[0] in (*self.addresses, "0.0.0.0")
        if family == socket.AF_INET6:
            if name[0].startswith("::ffff:"):  # an IPv4-mapped bypass address
                return name[0][7:] in self.addresses
            if name[0] == "::":
                try:
                    return not sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
                except OSError:
                    return False
        return False

    def _take_over(self, sock: socket.socket) -> "_ListenSocket":
        """create_server(sock=...) for a socket that ``_covers`` the bypass:
        its port is served by the engine, the socket stays as the
        placeholder holding the port.  Bound to the wildcard (0.0.0.0 or a
        dual-stack ``::``), the kernel keeps listening on it for every other
        interface (and IPv6); bound to the bypass address it never listens."""
        family = sock.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN)
        addr, bound_port = sock.getsockname()[:2]
        if bound_port == 0:
            # never bound: what listen() would do, binding it here to learn the port
            try:
                sock.bind(("0.0.0.0", 0) if family == socket.AF_INET else ("::", 0))
            except OSError as err:
                raise OSError(err.errno, f"error while binding {sock!r} to a free port: "
                              f"{err.strerror.lower()}") from None
            addr, bound_port = sock.getsockname()[:2]
        sock.setblocking(False)
        if addr.startswith("::ffff:"):
            addr = addr[7:]
        wildcard = addr in ("0.0.0.0", "::")
        if not wildcard:
            # as specloop's own placeholders: bound, never listening (the port
            # is steered, a kernel listener would get nothing), and holding
            # the port against any other socket (SO_REUSEADDR off)
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                sock.shutdown(socket.SHUT_RD)  # stops listening, stays bound
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
        return _ListenSocket(self, self.address if wildcard else addr, bound_port, sock,
                             kernel_listens=wildcard)

    def _port_free(self, address: str, port: int) -> None:
        """One listener per bypass port: a second server on a port this loop
        serves fails, saying why (with reuse_port the kernel would have let
        the placeholder bind and shared the port)."""
        if port and any(lsock.port == port for lsock in self._listeners.values()):
            raise OSError(errno.EADDRINUSE,
                          f"error while attempting to bind on address {(address, port)!r}: "
                          f"address already in use: port {port} on {self.interface} is "
                          f"served by this loop's bypass already (one listener per bypass "
                          f"port; reuse_port cannot share it)")

    async def wants(self, host: Any, sock: socket.socket | None) -> bool:
        """True if create_server(host=..., sock=...) is for the bypass."""
        if sock is not None:
            return self._covers(sock)
        hosts = [host] if host is None or isinstance(host, str) else list(host)
        for h in hosts:
            if h in _WILDCARDS or h in self.addresses:
                return True
            if isinstance(h, str) and not _is_ip_literal(h):
                infos = await self.loop.getaddrinfo(h, None, family=socket.AF_INET,
                                                    type=socket.SOCK_STREAM)
                if any(info[4][0] in self.addresses for info in infos):
                    return True
        return False

    async def create_server(self, protocol_factory: Any, host: Any = None,
                            port: int | None = None, *, sock: socket.socket | None = None,
                            backlog: int = 100, ssl: Any = None,
                            reuse_address: bool | None = None,
                            reuse_port: bool | None = None,
                            ssl_handshake_timeout: float | None = None,
                            ssl_shutdown_timeout: float | None = None,
                            start_serving: bool = True) -> base_events.Server:
        """asyncio's create_server for addresses on the bypass interface."""
        if ssl_handshake_timeout is not None and ssl is None:
            raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
        if ssl_shutdown_timeout is not None and ssl is None:
            raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")
        sockets: list[Any] = []
        try:
            if sock is not None:
                if host is not None or port is not None:
                    raise ValueError("host/port and sock can not be specified at the same time")
                self._port_free(*sock.getsockname()[:2])
                sockets.append(self._take_over(sock))
            else:
                port = 0 if port is None else int(port)
                hosts = [host] if host is None or isinstance(host, str) else list(dict.fromkeys(host))
                for h in hosts:
                    if h in _WILDCARDS:
                        self._port_free(self.address, port)
                        # every interface: the bypass on ours, the kernel on the rest
                        ksock = self._bind("0.0.0.0", port, listen_later=True,
                                           reuse_address=reuse_address,
                                           reuse_port=reuse_port)
                        port = ksock.getsockname()[1]
                        sockets.append(_ListenSocket(self, self.address, port, ksock,
                                                     kernel_listens=True))
                        if h != "0.0.0.0":
                            # asyncio's host=None is dual-stack: IPv6 stays the kernel's
                            six = self._bind6_wildcard(port, reuse_address, reuse_port)
                            if six is not None:
                                sockets.append(six)
                        continue
                    addrs = [h] if h in self.addresses or _is_ip_literal(h) else [
                        info[4][0] for info in await self.loop.getaddrinfo(
                            h, port, family=socket.AF_INET, type=socket.SOCK_STREAM)]
                    for a in dict.fromkeys(addrs):
                        if a in self.addresses:
                            self._port_free(a, port)
                            ph = self._bind(a, port, listen_later=False,
                                            reuse_address=reuse_address,
                                            reuse_port=reuse_port)
                            port = ph.getsockname()[1]
                            sockets.append(_ListenSocket(self, a, port, ph))
                        else:
                            ks = self._bind(a, port, listen_later=True,
                                            reuse_address=reuse_address,
                                            reuse_port=reuse_port)
                            port = ks.getsockname()[1]
                            sockets.append(ks)
        except BaseException:
            for s in sockets:
                s.close()
            raise
        server = base_events.Server(self.loop, sockets, protocol_factory, ssl, backlog,
                                    ssl_handshake_timeout, ssl_shutdown_timeout)
        if start_serving:
            try:
                server._start_serving()
            except BaseException:
                server.close()
                raise
            await asyncio.sleep(0)
        return server

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


def _is_ip_literal(h: Any) -> bool:
    try:
        ipaddress.ip_address(h)
        return True
    except ValueError:
        return False


_SIOCGSKNS = 0x894C  # linux/sockios.h: a socket's network namespace, as an fd


def _socket_netns_ino(sock: socket.socket) -> int | None:
    """The inode of the network namespace ``sock`` lives in (None if the
    kernel will not say)."""
    try:
        fd = fcntl.ioctl(sock.fileno(), _SIOCGSKNS)
    except (OSError, ValueError):
        return None
    try:
        return os.fstat(fd).st_ino
    finally:
        os.close(fd)


def _opt(level: int, name: str) -> tuple[int, int, str] | None:
    value = getattr(socket, name, None)
    return None if value is None else (level, value, name)


# Options a kernel connection inherits from its listening socket (Linux's
# accept()) that the engine carries: (level, option, name, engine option).
_CARRIED = [(*o, eo) for o, eo in (
    (_opt(socket.SOL_SOCKET, "SO_KEEPALIVE"), lib.SL_OPT_KEEPALIVE),
    (_opt(socket.IPPROTO_TCP, "TCP_KEEPIDLE"), lib.SL_OPT_KEEPIDLE),
    (_opt(socket.IPPROTO_TCP, "TCP_KEEPINTVL"), lib.SL_OPT_KEEPINTVL),
    (_opt(socket.IPPROTO_TCP, "TCP_KEEPCNT"), lib.SL_OPT_KEEPCNT),
    (_opt(socket.IPPROTO_TCP, "TCP_USER_TIMEOUT"), lib.SL_OPT_USER_TIMEOUT),
    (_opt(socket.SOL_SOCKET, "SO_RCVBUF"), lib.SL_OPT_RCVBUF),
) if o is not None]

# Inherited options the engine does not carry: set on a listening socket
# (changed from the kernel's default) they are ignored, and said so.
# TCP_NODELAY is not here: bypass connections have it on, as asyncio's.
_NOT_CARRIED = [o for o in (
    _opt(socket.SOL_SOCKET, "SO_SNDBUF"), _opt(socket.SOL_SOCKET, "SO_LINGER"),
    _opt(socket.SOL_SOCKET, "SO_PRIORITY"), _opt(socket.SOL_SOCKET, "SO_MARK"),
    _opt(socket.IPPROTO_IP, "IP_TOS"), _opt(socket.IPPROTO_TCP, "TCP_MAXSEG"),
    _opt(socket.IPPROTO_TCP, "TCP_DEFER_ACCEPT"), _opt(socket.IPPROTO_TCP, "TCP_FASTOPEN"),
    _opt(socket.IPPROTO_TCP, "TCP_NOTSENT_LOWAT"), _opt(socket.IPPROTO_TCP, "TCP_WINDOW_CLAMP"),
    _opt(socket.IPPROTO_TCP, "TCP_CONGESTION"),
) if o is not None]

_BYTES_OPTS = {"SO_LINGER": 8, "TCP_CONGESTION": 16}


def _getopt(sock: Any, level: int, opt: int, name: str) -> Any:
    size = _BYTES_OPTS.get(name)
    return sock.getsockopt(level, opt) if size is None else sock.getsockopt(level, opt, size)


def _inherited_options(stack: Stack, sock: socket.socket,
                       where: tuple[str, int]) -> list[tuple[int, int]]:
    """The engine options (SL_OPT_*, value) that connections accepted on
    ``sock`` get from it: those it carries and the server changed from the
    kernel's default.  Changed options it does not carry are logged, once,
    as ignored; so is SO_REUSEPORT, which the bypass cannot share."""
    try:
        family = sock.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN)
        with stack._in_netns():  # defaults (sysctls) are per namespace
            fresh = socket.socket(family, socket.SOCK_STREAM)
    except OSError:
        return []
    carried: list[tuple[int, int]] = []
    ignored: list[str] = []
    with fresh:
        for level, opt, name, engine_opt in _CARRIED:
            try:
                value = sock.getsockopt(level, opt)
                if value == fresh.getsockopt(level, opt):
                    continue
            except OSError:
                continue
            if name == "SO_RCVBUF":
                value //= 2  # the kernel reports twice what was set
            carried.append((engine_opt, value))
        for level, opt, name in _NOT_CARRIED:
            try:
                if _getopt(sock, level, opt, name) != _getopt(fresh, level, opt, name):
                    ignored.append(name)
            except OSError:
                continue
        try:
            reuse_port = sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
        except (OSError, AttributeError):
            reuse_port = 0
    if ignored:
        logger.warning("specloop: %s set on the listening socket of %s:%d: not carried "
                       "by the bypass, ignored for its connections",
                       ", ".join(ignored), *where)
    if reuse_port:
        logger.warning("specloop: SO_REUSEPORT on %s:%d: on %s this port is served by "
                       "this loop alone (one bypass engine per interface queue); other "
                       "sockets sharing the port get none of its connections there",
                       *where, stack.interface)
    return carried


class _ListenSocket(BypassListenSocket):
    """A listening port on the bypass whose connections inherit the options
    set on its kernel socket, as accept() gives a kernel connection those
    of its listener (see ``_inherited_options``)."""

    def __init__(self, stack: Stack, address: str, port: int,
                 placeholder: socket.socket | None, *, kernel_listens: bool = False) -> None:
        super().__init__(stack, address, port, placeholder, kernel_listens=kernel_listens)
        self._inherit: list[tuple[int, int]] = []
        if self.kernel_listens and placeholder is not None:
            # a dual-stack "::" socket shows as what it is
            self.family = placeholder.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN)

    def getsockname(self) -> Any:
        if self.kernel_listens and self._placeholder is not None:
            return self._placeholder.getsockname()
        return super().getsockname()

    def start(self, protocol_factory: Any, sslcontext: Any, server: Any, backlog: int,
              handshake_timeout: Any, shutdown_timeout: Any) -> None:
        stack = self._stack
        if self._listener is None and stack is not None and self._placeholder is not None:
            self._inherit = _inherited_options(stack, self._placeholder,
                                               (self.address, self.port))
        super().start(protocol_factory, sslcontext, server, backlog,
                      handshake_timeout, shutdown_timeout)

    def accept(self, conn: int, sockname: tuple[str, int], peername: tuple[str, int]) -> None:
        super().accept(conn, sockname, peername)
        stack = self._stack
        if self._inherit and stack is not None:
            ptr = stack.engine.ptr
            for opt, value in self._inherit:
                lib.sl_conn_setopt(ptr, conn, opt, value)
