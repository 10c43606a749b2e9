"""specloop's settings: keyword arguments win over ``SPECLOOP_*`` variables.

Every setting has a type, a default and a rule; a bad value raises
``ValueError`` naming the setting, where it came from and what is allowed.
With no ``interface`` the loop is asyncio's own selector loop.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping

__all__ = ["Config", "XDP_MODES", "CORES", "TX_GSO_MODES", "CC_ALGORITHMS"]

XDP_MODES = ("auto", "native", "generic")
CORES = ("c", "asyncio")
TX_GSO_MODES = ("auto", "on", "off")
CC_ALGORITHMS = ("cubic", "reno")


def _int_rule(lo: int, hi: int | None = None, *, power_of_two: bool = False,
              choices: tuple[int, ...] | None = None) -> Callable[[int], str | None]:
    def check(v: int) -> str | None:
        if choices is not None and v not in choices:
            return "one of " + ", ".join(map(str, choices))
        if v < lo or (hi is not None and v > hi):
            return f"an integer from {lo} to {hi}" if hi is not None else f"an integer >= {lo}"
        if power_of_two and v & (v - 1):
            return f"a power of two >= {lo}"
        return None
    return check


@dataclasses.dataclass(frozen=True)
class _Setting:
    name: str
    kind: type
    default: Any
    rule: Callable[[Any], str | None] | None
    doc: str


_SETTINGS: tuple[_Setting, ...] = (
    _Setting("interface", str, None, None,
             "interface whose traffic the bypass carries; None = kernel only"),
    _Setting("core", str, "c", None,
             "loop core: 'c' (specloop._core) or 'asyncio' (asyncio's Python methods)"),
    _Setting("queue", tuple, "all", None,
             "RX queue ids for AF_XDP sockets: 'all' (every queue), 3, or '0,1,2'"),
    _Setting("xdp_mode", str, "auto", None, "auto, native or generic"),
    _Setting("frame_size", int, 4096, _int_rule(0, choices=(2048, 4096)),
             "UMEM frame size in bytes"),
    _Setting("frame_count", int, 16384, _int_rule(256, 1 << 20), "UMEM frames"),
    _Setting("ring_size", int, 2048, _int_rule(64, 1 << 15, power_of_two=True),
             "descriptors per AF_XDP ring"),
    _Setting("tx_multibuffer", int, 0, _int_rule(0, 1),
             "1: static payload sent from shared UMEM frames (XDP_USE_SG), 0: copied"),
    _Setting("tx_gso", str, "auto", None,
             "GSO super-frames (up to 64 KiB) for runs of full segments: auto (where "
             "the interface takes them: packet sockets, and TSO on), on (an error "
             "without packet sockets; without TSO the kernel cuts them in software), "
             "off"),
    _Setting("cc", str, "cubic", None,
             "congestion control of the bypass TCP: cubic (RFC 9438; the default, as "
             "Linux's, so that the stack grows and backs off as the kernel's TCP it "
             "shares links and is compared with) or reno (NewReno, RFC 5681/6582)"),
    _Setting("busy_poll_us", int, 0, _int_rule(0, 1_000_000),
             "microseconds to spin on RX before every sleep in epoll (0: none; "
             "set, it replaces the adaptive spin)"),
    _Setting("adaptive_poll_us", int, 50, _int_rule(0, 1_000_000),
             "ceiling of the adaptive spin before a sleep: while at most two "
             "connections received segments in the last millisecond (their "
             "peers wait on our wakeup), the loop spins on RX for up to twice "
             "the recent gaps between batches, within this; 0: never"),
    _Setting("max_conns", int, 16384, _int_rule(16, 1 << 20), "TCP connection table size"),
    _Setting("sndbuf", int, 1 << 20, _int_rule(4096, 1 << 28),
             "send buffer bytes per connection, at least (it grows to twice the "
             "congestion window's bytes, up to 4 MiB, as Linux's does)"),
    _Setting("rcvbuf", int, 1 << 20, _int_rule(4096, 1 << 28), "receive window bytes per connection"),
    _Setting("rx_budget", int, 256 << 20, _int_rule(0, 1 << 40),
             "bytes all connections may hold unread before windows close (0: no limit)"),
    _Setting("time_wait", float, 60.0, None, "TIME-WAIT seconds (2*MSL)"),
    _Setting("rto_min", float, 0.2, None, "minimum retransmission timeout, seconds"),
    _Setting("rto_max", float, 120.0, None, "maximum retransmission timeout, seconds"),
    _Setting("retries", int, 15, _int_rule(1, 255), "RTO expiries before a connection is dropped"),
    _Setting("syn_retries", int, 5, _int_rule(0, 255), "SYN-ACK retransmissions"),
    _Setting("delack", float, 0.04, None, "delayed-ACK timeout, seconds"),
    _Setting("fin_timeout", float, 60.0, None, "FIN-WAIT-2 timeout after close, seconds"),
)

_BY_NAME = {s.name: s for s in _SETTINGS}


def _env_name(name: str) -> str:
    return "SPECLOOP_" + name.upper()


def _convert(setting: _Setting, value: Any, source: str) -> Any:
    """Converts and checks one value; raises ValueError naming the setting."""
    where = f"{setting.name}={value!r}" + (f" (from {source})" if source != "argument" else "")
    if setting.name == "interface":
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise ValueError(f"specloop: {where}: interface must be a string (an interface name)")
        if len(value) >= 16 or "/" in value or value.strip() != value:
            raise ValueError(f"specloop: {where}: not a valid interface name (at most 15 "
                             "characters, no '/' or spaces)")
        return value
    if setting.name == "queue":
        return _queues(value, where)
    if setting.name == "core":
        if value not in CORES:
            raise ValueError(f"specloop: {where}: core must be one of {', '.join(CORES)}")
        return value
    if setting.name == "xdp_mode":
        if value not in XDP_MODES:
            raise ValueError(f"specloop: {where}: xdp_mode must be one of {', '.join(XDP_MODES)}")
        return value
    if setting.name == "tx_gso":
        if value not in TX_GSO_MODES:
            raise ValueError(f"specloop: {where}: tx_gso must be one of {', '.join(TX_GSO_MODES)}")
        return value
    if setting.name == "cc":
        if value not in CC_ALGORITHMS:
            raise ValueError(f"specloop: {where}: cc must be one of {', '.join(CC_ALGORITHMS)}")
        return value
    if setting.kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError(f"specloop: {where}: {setting.name} must be an integer")
        try:
            v = int(value)
        except ValueError:
            raise ValueError(f"specloop: {where}: {setting.name} must be an integer") from None
        problem = setting.rule(v) if setting.rule else None
        if problem:
            raise ValueError(f"specloop: {where}: {setting.name} must be {problem}")
        return v
    if setting.kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"specloop: {where}: {setting.name} must be a number of seconds")
        try:
            v = float(value)
        except ValueError:
            raise ValueError(f"specloop: {where}: {setting.name} must be a number of seconds") from None
        if not (0 <= v <= 86400) or v != v:
            raise ValueError(f"specloop: {where}: {setting.name} must be between 0 and 86400 seconds")
        return v
    raise AssertionError(setting)  # pragma: no cover


MAX_QUEUES = 16


def _queues(value: Any, where: str) -> Any:
    """'all', an int, 'a,b,c' or a sequence of ints -> 'all' or a tuple."""
    allowed = (f"specloop: {where}: queue must be 'all', a queue id from 0 to 63, "
               f"or up to {MAX_QUEUES} distinct ids ('0,1,2')")
    if value == "all":
        return "all"
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
        if not all(p.isdigit() for p in parts):
            raise ValueError(allowed)
        ids = [int(p) for p in parts]
    elif isinstance(value, bool):
        raise ValueError(allowed)
    elif isinstance(value, int):
        ids = [value]
    elif isinstance(value, (list, tuple)) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        ids = list(value)
    else:
        raise ValueError(allowed)
    if not ids or len(ids) > MAX_QUEUES or len(set(ids)) != len(ids) or \
            any(not 0 <= q <= 63 for q in ids):
        raise ValueError(allowed)
    return tuple(ids)


@dataclasses.dataclass(frozen=True)
class Config:
    """Resolved settings of one loop.  Build it with :meth:`resolve`: the
    defaults, types and rules are the ``_SETTINGS`` table's."""

    interface: str | None
    core: str
    queue: Any
    xdp_mode: str
    frame_size: int
    frame_count: int
    ring_size: int
    tx_multibuffer: int
    tx_gso: str
    cc: str
    busy_poll_us: int
    adaptive_poll_us: int
    max_conns: int
    sndbuf: int
    rcvbuf: int
    rx_budget: int
    time_wait: float
    rto_min: float
    rto_max: float
    retries: int
    syn_retries: int
    delack: float
    fin_timeout: float

    @classmethod
    def resolve(cls, settings: Mapping[str, Any] | None = None,
                environ: Mapping[str, str] | None = None) -> "Config":
        """Settings from keyword arguments, then ``SPECLOOP_*``, then defaults.

        Unknown keywords raise ``TypeError`` (as a function call would); bad
        values raise ``ValueError`` naming the setting and what is allowed.
        """
        settings = dict(settings or {})
        env = os.environ if environ is None else environ
        unknown = sorted(set(settings) - set(_BY_NAME))
        if unknown:
            raise TypeError(
                f"specloop: unknown setting(s) {', '.join(unknown)}; "
                f"known: {', '.join(_BY_NAME)}")
        values: dict[str, Any] = {}
        for s in _SETTINGS:
            if s.name in settings:
                values[s.name] = _convert(s, settings[s.name], "argument")
            elif _env_name(s.name) in env:
                values[s.name] = _convert(s, env[_env_name(s.name)], _env_name(s.name))
            else:
                values[s.name] = s.default
        cfg = cls(**values)
        if cfg.frame_count < 2 * cfg.ring_size + 64:
            raise ValueError(
                f"specloop: frame_count={cfg.frame_count} is too small for "
                f"ring_size={cfg.ring_size}: needs at least 2*ring_size+64 "
                f"= {2 * cfg.ring_size + 64}")
        if cfg.rto_min <= 0 or cfg.rto_max < cfg.rto_min:
            raise ValueError(
                f"specloop: rto_min={cfg.rto_min} / rto_max={cfg.rto_max}: "
                "need 0 < rto_min <= rto_max")
        return cfg

    @property
    def bypass(self) -> bool:
        """True when an interface is configured (the bypass is wanted)."""
        return self.interface is not None

    @staticmethod
    def describe() -> list[tuple[str, str, Any, str]]:
        """(name, environment variable, default, meaning) for each setting."""
        return [(s.name, _env_name(s.name), s.default, s.doc) for s in _SETTINGS]
