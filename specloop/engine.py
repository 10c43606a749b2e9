"""The one boundary between Python and the native engine.

``check()`` is the only place that reads a C return code: ``-errno`` becomes
``OSError(errno, ...)`` (so ``ConnectionResetError`` and friends come for
free) and ``-EINVAL`` from an argument check becomes ``ValueError`` naming
the argument.  ``Engine`` owns one ``struct sl_engine *``.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import sys
from typing import Any

from ._native import ffi, lib
from .config import Config

__all__ = ["BypassUnavailableError", "Engine", "check", "ffi", "lib", "OPT", "SOCKET_OPTIONS"]

# connection options (enum sl_conn_option) by name
OPT = {name[len("SL_OPT_"):]: getattr(lib, name) for name in dir(lib)
       if name.startswith("SL_OPT_")}

# The socket options a bypass connection takes, as the kernel names them:
# name -> (level, optname, engine option).  One table for the transport's
# setsockopt/getsockopt and for what connections inherit from a listener.
SOCKET_OPTIONS: dict[str, tuple[int, int, int]] = {
    name: (level, getattr(socket, name), OPT[engine])
    for name, level, engine in (
        ("TCP_NODELAY", socket.IPPROTO_TCP, "NODELAY"),
        ("SO_KEEPALIVE", socket.SOL_SOCKET, "KEEPALIVE"),
        ("TCP_KEEPIDLE", socket.IPPROTO_TCP, "KEEPIDLE"),
        ("TCP_KEEPINTVL", socket.IPPROTO_TCP, "KEEPINTVL"),
        ("TCP_KEEPCNT", socket.IPPROTO_TCP, "KEEPCNT"),
        ("TCP_USER_TIMEOUT", socket.IPPROTO_TCP, "USER_TIMEOUT"),
        ("SO_RCVBUF", socket.SOL_SOCKET, "RCVBUF"),
        ("SO_SNDBUF", socket.SOL_SOCKET, "SNDBUF"),
    ) if hasattr(socket, name)}

_XDP_MODES = {"auto": lib.SL_XDP_AUTO, "native": lib.SL_XDP_NATIVE,
              "generic": lib.SL_XDP_GENERIC}
_XDP_MODE_NAMES = {lib.SL_XDP_NATIVE: "native", lib.SL_XDP_GENERIC: "generic"}
_TX_GSO = {"auto": lib.SL_TX_GSO_AUTO, "on": lib.SL_TX_GSO_ON, "off": lib.SL_TX_GSO_OFF}
_CC = {"cubic": lib.SL_CC_CUBIC, "reno": lib.SL_CC_RENO}


class BypassUnavailableError(OSError):
    """The bypass was asked for and cannot run here.

    The message says exactly what is missing (a privilege, a kernel feature,
    the interface) and how to get it.  specloop never falls back to the
    kernel silently when the bypass was asked for.
    """


def check(rc: int, what: str, *, argument: str | None = None) -> int:
    """Returns ``rc`` if it is >= 0, else raises the matching exception."""
    if rc >= 0:
        return rc
    code = -rc
    if code == errno.EINVAL and argument is not None:
        raise ValueError(f"{what}: invalid {argument}")
    raise OSError(code, f"{what}: {os.strerror(code)}")


_HINTS = {
    errno.EPERM: "permission denied: the bypass needs CAP_NET_ADMIN, CAP_NET_RAW "
                 "and CAP_BPF (or CAP_SYS_ADMIN); run as root",
    errno.EACCES: "permission denied: the bypass needs CAP_NET_ADMIN, CAP_NET_RAW "
                  "and CAP_BPF (or CAP_SYS_ADMIN); run as root",
    errno.EAFNOSUPPORT: "this kernel has no XDP sockets (CONFIG_XDP_SOCKETS)",
    errno.ENODEV: "no such interface in this network namespace",
    errno.EBUSY: "the interface or queue is already in use by another XDP "
                 "program or socket (another specloop loop?)",
    errno.EEXIST: "another XDP program is attached to the interface",
    errno.EOPNOTSUPP: "the driver does not support this XDP mode; try "
                      "xdp_mode='generic' or 'auto'",
    errno.ENOMEM: "out of memory (UMEM too large for the locked-memory limit?)",
    errno.EINVAL: "the kernel refused the setting",
}


def _engine_error(rc: int, detail: str, cfg: Config) -> BypassUnavailableError:
    code = -rc
    hint = _HINTS.get(code, os.strerror(code))
    return BypassUnavailableError(
        code, f"specloop bypass on {cfg.interface!r}: {detail}: {hint}")


def _native_config(cfg: Config, mac: str, ipv4: str, mtu: int,
                   queues: tuple[int, ...] = (0,)) -> tuple[Any, Any]:
    c = ffi.new("struct sl_config *")
    ifname = ffi.new("char[]", (cfg.interface or "test").encode())
    c.ifname = ifname
    for i, q in enumerate(queues):
        c.queues[i] = q
    c.nqueues = len(queues)
    c.xdp_mode = _XDP_MODES[cfg.xdp_mode]
    c.frame_size = cfg.frame_size
    c.frame_count = cfg.frame_count
    c.ring_size = cfg.ring_size
    c.mac = list(bytes.fromhex(mac.replace(":", "")))
    c.ipv4 = int.from_bytes(ipaddress.IPv4Address(ipv4).packed, sys.byteorder)
    c.mtu = mtu
    c.max_conns = cfg.max_conns
    c.sndbuf = cfg.sndbuf
    c.rcvbuf = cfg.rcvbuf
    c.rx_budget = cfg.rx_budget
    c.tx_multibuffer = cfg.tx_multibuffer
    c.tx_gso = _TX_GSO[cfg.tx_gso]
    c.cc = _CC[cfg.cc]
    c.time_wait_ms = int(cfg.time_wait * 1000)
    c.rto_min_ms = int(cfg.rto_min * 1000)
    c.rto_max_ms = int(cfg.rto_max * 1000)
    c.retries = cfg.retries
    c.syn_retries = cfg.syn_retries
    c.delack_ms = int(cfg.delack * 1000)
    c.fin_timeout_ms = int(cfg.fin_timeout * 1000)
    return c, ifname


class Engine:
    """One native engine: an AF_XDP socket and the XDP program on one
    interface queue, and the TCP connections over them."""

    def __init__(self, cfg: Config, *, mac: str, ipv4: str, mtu: int,
                 queues: tuple[int, ...] = (0,), _test: bool = False) -> None:
        self._ptr: Any = None
        self._txbuf: Any = None
        c, _ifname = _native_config(cfg, mac, ipv4, mtu, queues)
        out = ffi.new("struct sl_engine **")
        err = ffi.new("char[256]")
        opener = lib.sl_engine_open_test if _test else lib.sl_engine_open
        rc = opener(c, out, err, len(err))
        if rc < 0:
            raise _engine_error(rc, ffi.string(err).decode(errors="replace"), cfg)
        self._ptr = out[0]
        fds = ffi.new("int[16]")
        self.fds: list[int] = list(fds[0:lib.sl_engine_fds(self._ptr, fds, 16)])
        self.queues = tuple(queues)
        self.xdp_mode: str = _XDP_MODE_NAMES.get(lib.sl_engine_xdp_mode(self._ptr), "none")
        self.ipv4 = ipv4
        self.mac = mac
        self.mtu = mtu

    @classmethod
    def for_test(cls, cfg: Config | None = None, *, mac: str = "02:00:00:00:00:02",
                 ipv4: str = "10.99.0.2", mtu: int = 1500) -> "Engine":
        """A test engine: the whole stack without an interface, socket or
        XDP; frames go in with :meth:`inject` and come out of
        :meth:`tx_take`.  For unit tests and fuzzers."""
        return cls(cfg or Config.resolve({}, environ={}), mac=mac, ipv4=ipv4, mtu=mtu,
                   _test=True)

    def inject(self, frame: bytes) -> int:
        """Test engines: one received frame; returns the number of events."""
        return check(lib.sl_engine_inject(self.ptr, ffi.from_buffer(frame), len(frame)),
                     "sl_engine_inject")

    def tx_take(self) -> bytes | None:
        """Test engines: the oldest frame the stack sent, or None."""
        got = self.tx_next()
        return got[0] if got else None

    def tx_next(self) -> tuple[bytes, int] | None:
        """Test engines: the oldest frame the stack sent and its flags
        (``lib.SL_TX_GSO``: a super-frame, its virtio_net_hdr first), or
        None."""
        if self._txbuf is None:
            self._txbuf = ffi.new("uint8_t[]", 1 << 17)
        flags = ffi.new("uint32_t *")
        n = check(lib.sl_engine_tx_next(self.ptr, self._txbuf, len(self._txbuf), flags),
                  "sl_engine_tx_next")
        return (ffi.buffer(self._txbuf, min(n, len(self._txbuf)))[:], flags[0]) if n else None

    def set_clock(self, now_us: int) -> None:
        """Test engines: pins the engine's clock (microseconds; 0 = real)."""
        check(lib.sl_engine_set_clock(self.ptr, now_us), "sl_engine_set_clock")

    @property
    def events(self) -> Any:
        """The ``struct sl_event`` array of the last poll (test harnesses
        read it; the loop's dispatch is specloop._core's)."""
        return lib.sl_engine_events(self.ptr)

    @property
    def address(self) -> int:
        """The ``struct sl_engine *`` as an integer, for specloop._core."""
        return int(ffi.cast("uintptr_t", self.ptr))

    @property
    def api_address(self) -> int:
        """The address of the engine's function table (``struct sl_api``)."""
        return int(ffi.cast("uintptr_t", lib.sl_api_get()))

    @property
    def ptr(self) -> Any:
        """The ``struct sl_engine *``; raises once the engine is closed."""
        if self._ptr is None:
            raise RuntimeError("specloop engine is closed")
        return self._ptr

    def poll(self, budget: int = 0) -> int:
        """Processes up to ``budget`` RX frames; returns how many events."""
        return check(lib.sl_engine_poll(self.ptr, budget), "sl_engine_poll")

    def flush(self) -> int:
        """Sends what is queued, recycles frames, one TX kick."""
        return check(lib.sl_engine_flush(self.ptr), "sl_engine_flush")

    def counters(self) -> dict[str, int]:
        """The engine's counters by name (drops by reason, frames by owner)."""
        out = ffi.new("struct sl_counters *")
        check(lib.sl_engine_counters(self.ptr, out), "sl_engine_counters")
        c = {name: getattr(out, name) for name, _ in ffi.typeof(out[0]).fields}
        c["rx_queue_packets"] = list(c["rx_queue_packets"])[:max(1, len(self.queues))]
        return c

    def steer_port(self, port: int) -> None:
        """Sends TCP ``port`` on this interface to the engine."""
        check(lib.sl_engine_steer_port(self.ptr, port), f"steering port {port}",
              argument="port")

    def unsteer_port(self, port: int) -> None:
        """Gives TCP ``port`` back to the kernel."""
        check(lib.sl_engine_unsteer_port(self.ptr, port), f"unsteering port {port}",
              argument="port")

    # ---- connections and listeners: every call into the C library is here --

    def conn_info(self, conn: int) -> dict[str, int]:
        """``struct sl_conn_info`` of a connection, by field name."""
        out = ffi.new("struct sl_conn_info *")
        check(lib.sl_conn_info(self.ptr, conn, out), "sl_conn_info")
        return {name: getattr(out, name) for name, _ in ffi.typeof(out[0]).fields}

    def conn_list(self) -> list[int]:
        """The ids of every connection in the TCP table."""
        n = lib.sl_conn_list(self.ptr, ffi.NULL, 0)
        ids = ffi.new("uint32_t[]", max(n, 1) + 64)
        n = min(lib.sl_conn_list(self.ptr, ids, len(ids)), len(ids))
        return list(ids[0:n])

    def conn_write(self, conn: int, data: Any) -> int:
        """Copies what the send buffer takes of ``data``; returns how much."""
        return check(lib.sl_conn_write(self.ptr, conn, ffi.from_buffer(data), len(data)),
                     "write")

    def conn_sendfile(self, conn: int, fd: int, offset: int, count: int) -> int:
        """Reads up to ``count`` bytes of ``fd`` at ``offset`` into the send
        queue: bytes queued, 0 at end of file; BlockingIOError when full."""
        return check(lib.sl_conn_sendfile(self.ptr, conn, fd, offset, count), "sendfile")

    def conn_sendfile_end(self, conn: int) -> None:
        """One loop.sendfile() is over: the engine stops holding its file
        between calls (queued segments keep it); a gone connection is fine."""
        lib.sl_conn_sendfile_end(self.ptr, conn)

    def conn_shutdown_write(self, conn: int) -> None:
        """A FIN after the queued data."""
        check(lib.sl_conn_shutdown_write(self.ptr, conn), "shutdown")

    def conn_close(self, conn: int) -> None:
        """Python is done with the connection: FIN after the data (or RST if
        data arrives that nobody reads, as Linux does)."""
        check(lib.sl_conn_close(self.ptr, conn), "close")

    def conn_abort(self, conn: int) -> None:
        """RST now."""
        check(lib.sl_conn_abort(self.ptr, conn), "abort")

    def conn_pause_reading(self, conn: int) -> None:
        check(lib.sl_conn_pause_reading(self.ptr, conn), "pause_reading")

    def conn_resume_reading(self, conn: int) -> None:
        check(lib.sl_conn_resume_reading(self.ptr, conn), "resume_reading")

    def conn_setopt(self, conn: int, opt: int, value: int) -> None:
        """A connection option (``OPT``); ValueError for a bad value."""
        ptr = self._ptr
        if ptr is None:
            ptr = self.ptr  # raises: the engine is closed
        rc = lib.sl_conn_setopt(ptr, conn, opt, value)
        if rc < 0:
            check(rc, "setsockopt", argument="value")

    def conn_getopt(self, conn: int, opt: int) -> int:
        return check(lib.sl_conn_getopt(self.ptr, conn, opt), "getsockopt")

    def listen(self, port: int, backlog: int) -> int:
        """A listener on ``port`` (host order); its id."""
        return check(lib.sl_listen(self.ptr, port, backlog, 1), f"listening on port {port}")

    def listen_set_fast(self, listener: int, on: bool = True, *, hand_back: bool = True) -> None:
        """The static fast path in front of the listener's connections;
        with ``hand_back`` a connection Python answered comes back to it."""
        flags = (lib.SL_FAST_ON | (0 if hand_back else lib.SL_FAST_STAY)) if on else 0
        check(lib.sl_listen_set_fast(self.ptr, listener, flags), "sl_listen_set_fast")

    def listen_close(self, listener: int) -> None:
        check(lib.sl_listen_close(self.ptr, listener), "sl_listen_close")

    def static_config(self, server: str, budget: int, keepalive_ms: int,
                      reason_416: str) -> None:
        """The fast path's Server field, memory budget, keep-alive timeout
        and the wording of 416."""
        check(lib.sl_static_config(self.ptr, server.encode(), budget, keepalive_ms,
                                   reason_416.encode()), "sl_static_config")

    def static_put(self, port: int, path: str, body: Any, content_type: str, etag: str,
                   last_modified: str, mtime_ns: int, extra: str,
                   siblings: tuple[str, ...] = ()) -> int:
        """Registers one file for ``port``; ``siblings``: the encodings
        ("br", "gzip") of its precompressed siblings on disk.  The C return
        code (>= 0, or -errno: the caller decides what a refusal means)."""
        flags = lib.SL_STATIC_HAS_VARIANTS if siblings else 0
        flags |= lib.SL_STATIC_HAS_BR if "br" in siblings else 0
        flags |= lib.SL_STATIC_HAS_GZIP if "gzip" in siblings else 0
        return int(lib.sl_static_put(self.ptr, port, path.encode(), body, len(body),
                                     content_type.encode(), etag.encode(),
                                     last_modified.encode(), mtime_ns,
                                     extra.encode() if extra else ffi.NULL, flags))

    def static_put_variant(self, port: int, path: str, encoding: str, body: Any,
                           content_type: str, etag: str, last_modified: str, mtime_ns: int,
                           extra: str) -> int:
        """A precompressed variant ("br" or "gzip") of the file at ``path``;
        the C return code, as static_put's."""
        return int(lib.sl_static_put_variant(self.ptr, port, path.encode(), encoding.encode(),
                                             body, len(body), content_type.encode(),
                                             etag.encode(), last_modified.encode(), mtime_ns,
                                             extra.encode() if extra else ffi.NULL))

    def static_remove(self, port: int, path: str) -> None:
        lib.sl_static_remove(self.ptr, port, path.encode())

    def impair(self, cfg: dict[str, int] | None) -> None:
        """Fault injection (``struct sl_impair`` fields), or off with None."""
        if cfg is None:
            check(lib.sl_engine_impair(self.ptr, ffi.NULL), "impair")
            return
        c = ffi.new("struct sl_impair *")
        for name, value in cfg.items():
            setattr(c, name, value)
        check(lib.sl_engine_impair(self.ptr, c), "impair", argument="probability")

    def close(self) -> None:
        """Detaches the XDP program and frees the socket and UMEM."""
        if self._ptr is not None:
            ptr, self._ptr = self._ptr, None
            lib.sl_engine_close(ptr)

    def __del__(self) -> None:
        self.close()
