"""The kernel's side of bypass servers: sockets that hold, share or hand over ports.

A bypass port is served by the engine, but a kernel socket stays bound to
it (the placeholder) so that nobody else takes the port; for a wildcard
server it also listens, and the kernel serves the port on every other
interface (and IPv6).  Sockets a server made and bound itself
(``create_server(sock=...)``, Tornado, uvicorn ``--fd``) are taken over, and
their connections inherit the options set on them, as ``accept()`` would
give a kernel connection those of its listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import ipaddress
import logging
import os
import socket
from asyncio import base_events
from typing import TYPE_CHECKING, Any, Iterator

from . import iface
from .engine import SOCKET_OPTIONS
from .transports import BypassListenSocket

if TYPE_CHECKING:
    from .stack import Stack

__all__ = ["BypassServers"]

logger = logging.getLogger("specloop")

_WILDCARDS = (None, "", "0.0.0.0")


class BypassServers:
    """create_server for one stack's bypass addresses."""

    def __init__(self, stack: "Stack") -> None:
        self.stack = stack

    def inherited_options(self, sock: socket.socket,
                          where: tuple[str, int]) -> list[tuple[int, int]]:
        """The engine options connections accepted on ``sock`` get from it."""
        return _inherited_options(self, sock, where)

    @contextlib.contextmanager
    def in_netns(self) -> Iterator[None]:
        """Runs the body in the stack's network namespace (kernel sockets
        made here must live where the interface is)."""
        here = os.stat("/proc/thread-self/ns/net").st_ino
        if here == os.fstat(self.stack._netns_fd).st_ino:
            yield
            return
        back = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            iface.setns(self.stack._netns_fd)
            try:
                yield
            finally:
                iface.setns(back)
        finally:
            os.close(back)

    def _bind(self, address: str, port: int, *, listen_later: bool,
              reuse_address: bool | None, reuse_port: bool | None = None) -> socket.socket:
        with self.in_netns():
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
        with self.in_netns():
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
        return os.fstat(self.stack._netns_fd).st_ino

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
            return name[0] in (*self.stack.addresses, "0.0.0.0")
        if family == socket.AF_INET6:
            if name[0].startswith("::ffff:"):  # an IPv4-mapped bypass address
                return name[0][7:] in self.stack.addresses
            if name[0] == "::":
                try:
                    return not sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
                except OSError:
                    return False
        return False

    def _take_over(self, sock: socket.socket) -> BypassListenSocket:
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
        return BypassListenSocket(self.stack, self.stack.address if wildcard else addr, bound_port, sock,
                             kernel_listens=wildcard)

    def _port_free(self, address: str, port: int) -> None:
        """One listener per bypass port: a second server on a port this loop
        serves fails, saying why (with reuse_port the kernel would have let
        the placeholder bind and shared the port)."""
        if port and any(lsock.port == port for lsock in self.stack._listeners.values()):
            raise OSError(errno.EADDRINUSE,
                          f"error while attempting to bind on address {(address, port)!r}: "
                          f"address already in use: port {port} on {self.stack.interface} is "
                          f"served by this loop's bypass already (one listener per bypass "
                          f"port; reuse_port cannot share it)")

    async def wants(self, host: Any, sock: socket.socket | None) -> bool:
        """True if create_server(host=..., sock=...) is for the bypass."""
        if sock is not None:
            return self._covers(sock)
        hosts = [host] if host is None or isinstance(host, str) else list(host)
        for h in hosts:
            if h in _WILDCARDS or h in self.stack.addresses:
                return True
            if isinstance(h, str) and not _is_ip_literal(h):
                infos = await self.stack.loop.getaddrinfo(h, None, family=socket.AF_INET,
                                                    type=socket.SOCK_STREAM)
                if any(info[4][0] in self.stack.addresses for info in infos):
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
                        self._port_free(self.stack.address, port)
                        # every interface: the bypass on ours, the kernel on the rest
                        ksock = self._bind("0.0.0.0", port, listen_later=True,
                                           reuse_address=reuse_address,
                                           reuse_port=reuse_port)
                        port = ksock.getsockname()[1]
                        sockets.append(BypassListenSocket(self.stack, self.stack.address, port, ksock,
                                                     kernel_listens=True))
                        if h != "0.0.0.0":
                            # asyncio's host=None is dual-stack: IPv6 stays the kernel's
                            six = self._bind6_wildcard(port, reuse_address, reuse_port)
                            if six is not None:
                                sockets.append(six)
                        continue
                    addrs = [h] if h in self.stack.addresses or _is_ip_literal(h) else [
                        info[4][0] for info in await self.stack.loop.getaddrinfo(
                            h, port, family=socket.AF_INET, type=socket.SOCK_STREAM)]
                    for a in dict.fromkeys(addrs):
                        if a in self.stack.addresses:
                            self._port_free(a, port)
                            ph = self._bind(a, port, listen_later=False,
                                            reuse_address=reuse_address,
                                            reuse_port=reuse_port)
                            port = ph.getsockname()[1]
                            sockets.append(BypassListenSocket(self.stack, a, port, ph))
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
        server = base_events.Server(self.stack.loop, sockets, protocol_factory, ssl, backlog,
                                    ssl_handshake_timeout, ssl_shutdown_timeout)
        if start_serving:
            try:
                server._start_serving()
            except BaseException:
                server.close()
                raise
            await asyncio.sleep(0)
        return server



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
# TCP_NODELAY is on for every bypass connection (as asyncio's), SO_SNDBUF
# is not carried (below).
_CARRIED = [(level, optname, name, eo) for name, (level, optname, eo) in SOCKET_OPTIONS.items()
            if name not in ("TCP_NODELAY", "SO_SNDBUF")]

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


def _inherited_options(servers: "BypassServers", sock: socket.socket,
                       where: tuple[str, int]) -> list[tuple[int, int]]:
    """The engine options (SL_OPT_*, value) that connections accepted on
    ``sock`` get from it: those it carries and the server changed from the
    kernel's default.  Changed options it does not carry are logged, once,
    as ignored; so is SO_REUSEPORT, which the bypass cannot share."""
    try:
        family = sock.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN)
        with servers.in_netns():  # defaults (sysctls) are per namespace
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
                       *where, servers.stack.interface)
    return carried
