"""What the bypass learns about its interface at run time (netlink, through
pyroute2, imported only when a bypass is built: ``import specloop`` does not
load it, nor the test lab of ``specloop.netlab``)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable, TypeVar

__all__ = ["interface_info", "off_loop", "setns"]

_T = TypeVar("_T")


def off_loop(fn: Callable[..., _T], *args: Any) -> _T:
    """Calls ``fn(*args)``, in a short-lived thread if an asyncio loop runs in
    this one: pyroute2's synchronous API cannot run inside a running loop.
    A new thread is born in its creator's network namespace, so the call
    sees the same interfaces either way."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn(*args)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # re-raised in the caller
            box["error"] = exc

    t = threading.Thread(target=target, name="specloop-netlink")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def interface_info(ifname: str) -> dict[str, object] | None:
    """MAC, IPv4 addresses, MTU and queue count of ``ifname`` in the calling
    thread's namespace, or None if there is no such interface here."""
    return off_loop(_interface_info, ifname)


def _interface_info(ifname: str) -> dict[str, object] | None:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            return None
        idx = found[0]
        link = ipr.get_links(idx)[0]
        addrs = [a.get("IFA_ADDRESS") for a in ipr.get_addr(index=idx, family=2)]
        return {
            "index": idx,
            "mac": link.get("IFLA_ADDRESS"),
            "mtu": link.get("IFLA_MTU"),
            "ipv4": addrs,
            "queues": int(link.get("IFLA_NUM_RX_QUEUES") or 1),
            "state": link.get("IFLA_OPERSTATE"),
        }


def setns(fd: int) -> None:
    """Moves the calling thread into the network namespace of ``fd``."""
    from pyroute2 import netns

    netns.setns(fd)
