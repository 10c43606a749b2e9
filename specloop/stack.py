"""One native engine per loop, and the glue between it and the loop.

The xsk fd sits in the loop's selector for reading only.  When it is
readable, ``_on_readable`` drains RX in batches and dispatches the engine's
events; at the end of every loop iteration ``end_of_iteration`` sends what
the iteration wrote, all in one TX kick.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from . import doctor, netlab
from .config import Config
from .engine import BypassUnavailableError, Engine

if TYPE_CHECKING:
    from .loop import Loop

__all__ = ["Stack"]

RX_BUDGET = 256  # frames per readable callback before yielding to the loop


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
        self.loop = loop
        self.config = config
        self.interface = ifname
        self.engine = Engine(config, mac=str(info["mac"]), ipv4=str(info["ipv4"][0]),
                             mtu=int(info["mtu"]))
        self.address: str = str(info["ipv4"][0])
        self.addresses: tuple[str, ...] = tuple(str(a) for a in info["ipv4"])
        self._closed = False
        loop._add_reader(self.engine.fd, self._on_readable)

    @property
    def xdp_mode(self) -> str:
        """"native" or "generic": how the XDP program is attached."""
        return self.engine.xdp_mode

    def counters(self) -> dict[str, int]:
        """The engine's counters (see ``struct sl_counters``)."""
        return self.engine.counters()

    def steer_port(self, port: int) -> None:
        """Steers TCP ``port`` to this loop's engine."""
        self.engine.steer_port(port)

    def unsteer_port(self, port: int) -> None:
        """Gives TCP ``port`` back to the kernel."""
        self.engine.unsteer_port(port)

    def _on_readable(self) -> None:
        n = self.engine.poll(RX_BUDGET)
        if n:
            self._dispatch(n)

    def _dispatch(self, n: int) -> None:
        """Hands the engine's events to transports and servers."""

    def end_of_iteration(self) -> None:
        """Called by the loop after each iteration: one TX kick."""
        if not self._closed:
            self.engine.flush()

    def close(self) -> None:
        """Detaches from the loop and closes the engine (the XDP program goes
        with it)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.loop._remove_reader(self.engine.fd)
        finally:
            self.engine.close()

    def __repr__(self) -> str:
        return (f"<specloop.Stack {self.interface} {self.address} "
                f"xdp={self.xdp_mode}{' closed' if self._closed else ''}>")
