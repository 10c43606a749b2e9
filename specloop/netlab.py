"""The lab: two network namespaces joined by a veth pair (pyroute2).

::

    slsrv                              slcli
    sl-srv0 10.55.0.2/24  <── veth ──>  sl-cli0 10.55.0.1/24

The server runs in ``slsrv`` (on specloop's bypass, the XDP program sits on
``sl-srv0``); kernel clients run in ``slcli``.  Nothing in the root namespace
routes to 10.55.0.0/24, so traffic only ever starts inside the lab.

``up()`` and ``down()`` are idempotent; ``loss()`` drops a share of the
lab's packets (nftables in the client namespace) while a block runs, and
``wire_loss()`` drops them after the sender's TCP in both directions (see
there for the difference).  The client side's offloads are set
as the bypass needs them: TX checksum offload off (frames would otherwise
reach the XDP socket with an incomplete checksum) and TSO/GSO off (generic
XDP drops super-packets); the server side keeps the kernel's defaults.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import subprocess
import threading
from typing import Any, Callable, Iterator, Sequence, TypeVar

from pyroute2 import IPRoute, NetNS, netns

from .iface import interface_info, off_loop

__all__ = [
    "SERVER_NS", "CLIENT_NS", "SERVER_IF", "CLIENT_IF", "SERVER_IP", "CLIENT_IP",
    "PREFIX", "Lab", "up", "down", "status", "inside", "in_ns", "is_up",
    "interface_info", "loss", "wire_loss", "wire_loss_counters",
]

_T = TypeVar("_T")

# SPECLOOP_LAB=<tag> builds a second, separate lab (slsrv<tag>, sl-srv0<tag>,
# ...) so that two developers or CI jobs on one machine do not collide.
_TAG = os.environ.get("SPECLOOP_LAB", "")
if len(_TAG) > 3 or not _TAG.isalnum() and _TAG:
    raise ValueError(f"SPECLOOP_LAB={_TAG!r}: at most 3 letters or digits")

SERVER_NS = "slsrv" + _TAG
CLIENT_NS = "slcli" + _TAG
SERVER_IF = "sl-srv0" + _TAG
CLIENT_IF = "sl-cli0" + _TAG
SERVER_IP = "10.55.0.2"
CLIENT_IP = "10.55.0.1"
PREFIX = 24


@dataclasses.dataclass(frozen=True)
class Lab:
    """What the lab is made of, as built."""

    server_ns: str = SERVER_NS
    client_ns: str = CLIENT_NS
    server_if: str = SERVER_IF
    client_if: str = CLIENT_IF
    server_ip: str = SERVER_IP
    client_ip: str = CLIENT_IP
    queues: int = 1
    mtu: int = 1500


def _run(argv: Sequence[str]) -> None:
    subprocess.run(list(argv), check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)


def in_ns(ns: str, *argv: str) -> list[str]:
    """argv that runs a command inside namespace ``ns``."""
    return ["ip", "netns", "exec", ns, *argv]


def _link_index(ipr: IPRoute | NetNS, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def _num_queues(ipr: IPRoute | NetNS, index: int) -> int:
    link = ipr.get_links(index)[0]
    return int(link.get("IFLA_NUM_RX_QUEUES") or 1)


def _configure_side(ns: str, ifname: str, address: str, mtu: int) -> None:
    with NetNS(ns) as ipr:
        lo = _link_index(ipr, "lo")
        if lo is not None:
            ipr.link("set", index=lo, state="up")
        idx = _link_index(ipr, ifname)
        assert idx is not None, ifname
        have = {a.get("IFA_ADDRESS") for a in ipr.get_addr(index=idx, family=2)}
        if address not in have:
            ipr.addr("add", index=idx, address=address, prefixlen=PREFIX)
        ipr.link("set", index=idx, mtu=mtu, state="up")


def _set_offloads() -> None:
    # client: checksums complete on the wire, no super-packets (FACTS.md):
    # its frames are what the XDP socket receives.  The server side keeps
    # its defaults: kernel servers compared with specloop keep TSO/GSO.
    _run(in_ns(CLIENT_NS, "ethtool", "-K", CLIENT_IF, "tx", "off", "tso", "off",
               "gso", "off"))
    _run(in_ns(SERVER_NS, "ethtool", "-K", SERVER_IF, "tx", "on", "tso", "on", "gso", "on"))


def _set_xps(queues: int) -> None:
    """Sends the client's queue q traffic from CPU q (mod CPUs) so that a
    multi-queue lab spreads flows over the server's RX queues."""
    cpus = os.cpu_count() or 1
    for q in range(queues):
        mask = format(1 << (q % cpus), "x")
        path = f"/sys/class/net/{CLIENT_IF}/queues/tx-{q}/xps_cpus"
        _run(in_ns(CLIENT_NS, "sh", "-c", f"echo {mask} > {path}"))


def up(queues: int = 1, mtu: int = 1500) -> Lab:
    """Builds the lab (or completes a partial one) and returns what it is.

    A lab that exists with another queue count is rebuilt.
    """
    return off_loop(_up, queues, mtu)


def _up(queues: int, mtu: int) -> Lab:
    if not isinstance(queues, int) or not 1 <= queues <= 64:
        raise ValueError(f"netlab: queues={queues!r}: must be an integer from 1 to 64")
    if not isinstance(mtu, int) or not 576 <= mtu <= 9000:
        raise ValueError(f"netlab: mtu={mtu!r}: must be an integer from 576 to 9000")
    existing = set(netns.listnetns())
    if SERVER_NS in existing:
        with NetNS(SERVER_NS) as ipr:
            idx = _link_index(ipr, SERVER_IF)
            if idx is not None and _num_queues(ipr, idx) != queues:
                _down()
                existing = set()
    for ns in (SERVER_NS, CLIENT_NS):
        if ns not in existing:
            netns.create(ns)
    with NetNS(SERVER_NS) as srv, NetNS(CLIENT_NS) as cli:
        have_srv = _link_index(srv, SERVER_IF) is not None
        have_cli = _link_index(cli, CLIENT_IF) is not None
    if not (have_srv and have_cli):
        # a half-built pair: remove what is left and build it again
        for ns, name in ((SERVER_NS, SERVER_IF), (CLIENT_NS, CLIENT_IF)):
            with NetNS(ns) as ipr:
                idx = _link_index(ipr, name)
                if idx is not None:
                    ipr.link("del", index=idx)
        with IPRoute() as ipr:
            for name in (SERVER_IF, CLIENT_IF):
                idx = _link_index(ipr, name)
                if idx is not None:
                    ipr.link("del", index=idx)
            ipr.link("add", ifname=SERVER_IF, kind="veth",
                     num_tx_queues=queues, num_rx_queues=queues,
                     peer={"ifname": CLIENT_IF, "num_tx_queues": queues,
                           "num_rx_queues": queues})
            ipr.link("set", index=_link_index(ipr, SERVER_IF), net_ns_fd=SERVER_NS)
            ipr.link("set", index=_link_index(ipr, CLIENT_IF), net_ns_fd=CLIENT_NS)
    _configure_side(SERVER_NS, SERVER_IF, SERVER_IP, mtu)
    _configure_side(CLIENT_NS, CLIENT_IF, CLIENT_IP, mtu)
    _set_offloads()
    if queues > 1:
        _set_xps(queues)
    return Lab(queues=queues, mtu=mtu)


def down() -> None:
    """Removes the namespaces; the veth pair and any nftables rules inside
    them go with them."""
    off_loop(_down)


def _down() -> None:
    existing = set(netns.listnetns())
    for ns in (SERVER_NS, CLIENT_NS):
        if ns in existing:
            netns.remove(ns)
    # a pair left in the root namespace by an interrupted up()
    with IPRoute() as ipr:
        for name in (SERVER_IF, CLIENT_IF):
            idx = _link_index(ipr, name)
            if idx is not None:
                ipr.link("del", index=idx)


def status() -> dict[str, object]:
    """What exists now: namespaces, links (state, address, queues, XDP)."""
    return off_loop(_status)


def _status() -> dict[str, object]:
    existing = set(netns.listnetns())
    out: dict[str, object] = {"namespaces": {}, "up": False}
    complete = True
    for ns, name in ((SERVER_NS, SERVER_IF), (CLIENT_NS, CLIENT_IF)):
        if ns not in existing:
            out["namespaces"][ns] = None  # type: ignore[index]
            complete = False
            continue
        info: dict[str, object] = {"link": None}
        with NetNS(ns) as ipr:
            idx = _link_index(ipr, name)
            if idx is None:
                complete = False
            else:
                link = ipr.get_links(idx)[0]
                addrs = [a.get("IFA_ADDRESS") for a in ipr.get_addr(index=idx, family=2)]
                xdp = link.get("IFLA_XDP")
                info["link"] = {
                    "name": name,
                    "state": link.get("IFLA_OPERSTATE"),
                    "mac": link.get("IFLA_ADDRESS"),
                    "mtu": link.get("IFLA_MTU"),
                    "queues": link.get("IFLA_NUM_RX_QUEUES"),
                    "addresses": addrs,
                    "xdp_attached": bool(xdp and xdp.get("IFLA_XDP_ATTACHED")),
                }
        out["namespaces"][ns] = info  # type: ignore[index]
    out["up"] = complete
    return out


def is_up() -> bool:
    """True when both namespaces and both ends of the pair exist."""
    try:
        return bool(status()["up"])
    except OSError:
        return False


@contextlib.contextmanager
def loss(percent: int) -> Iterator[None]:
    """Drops ``percent``% of the lab's packets in each direction while the
    body runs: nftables in the client namespace (a real kernel drop, one
    random draw per packet, ``numgen random``), on the client's output to
    the server and its input from it.  The same for whatever serves in the
    server namespace, specloop's bypass or the kernel's TCP.

    A drop in the client's OUTPUT hook is an error returned to the
    client's TCP, which sends the segment again: client -> server data
    barely loses here (its ACKs do).  ``wire_loss()`` loses both ways."""
    if not isinstance(percent, int) or not 0 <= percent <= 100:
        raise ValueError(f"netlab.loss: percent={percent!r}: must be an integer from 0 to 100")
    table = "sltest"
    # nft's numgen compares within 0-99: every packet is plain "drop"
    draw = "" if percent == 100 else f"numgen random mod 100 < {percent} "
    rules = [
        f"add table inet {table}",
        f"add chain inet {table} out {{ type filter hook output priority 0 ; }}",
        f"add rule inet {table} out ip daddr {SERVER_IP} {draw}counter drop",
        f"add chain inet {table} in {{ type filter hook input priority 0 ; }}",
        f"add rule inet {table} in ip saddr {SERVER_IP} {draw}counter drop",
    ]
    delete = in_ns(CLIENT_NS, "nft", "delete", "table", "inet", table)
    subprocess.run(delete, capture_output=True)
    try:
        for r in rules:
            subprocess.run(in_ns(CLIENT_NS, "nft", *r.split()), check=True, capture_output=True)
        yield
    finally:
        subprocess.run(delete, capture_output=True)


WIRE_LOSS_TABLE = "slwire"


@contextlib.contextmanager
def wire_loss(percent: int) -> Iterator[None]:
    """Drops ``percent``% of the lab's TCP packets in each direction while
    the body runs, each packet *after* the TCP that sent it, as a wire would.

    ``loss()`` drops the client's packets in the client's own OUTPUT hook,
    where a drop is an error returned to the client's TCP (``-EPERM`` from
    ``ip_local_out``): the kernel keeps the segment and sends it again, so
    the client->server direction loses (almost) nothing.  Here:

    - server -> client: nftables in the client namespace's INPUT hook, as
      ``loss()`` (the server's packets have crossed the veth there);
    - client -> server: nftables in the *server* namespace's PREROUTING
      hook (priority raw), for a kernel TCP serving there.  A server on
      specloop's bypass never meets that hook (XDP takes its port's packets
      first): it must drop the same share itself, with the engine's RX
      impairment (``Stack.impair(rx_loss=percent / 100)``), which the
      caller sets up in the server process.

    One random draw per packet (``numgen random``).  Named counters count
    the packets seen and dropped each way: ``wire_loss_counters()``.
    """
    if not isinstance(percent, int) or not 0 <= percent <= 100:
        raise ValueError(f"netlab.wire_loss: percent={percent!r}: must be an integer from 0 to 100")
    t = WIRE_LOSS_TABLE
    # numgen's values are 0-99: nft refuses "< 100"
    draw = "" if percent == 100 else f"numgen random mod 100 < {percent} "

    def rules(hook: str, prio: str, src: str) -> str:
        return "\n".join([
            f"add table inet {t}",
            f"add counter inet {t} seen",
            f"add counter inet {t} dropped",
            f"add chain inet {t} c {{ type filter hook {hook} priority {prio} ; }}",
            f"add rule inet {t} c ip saddr {src} meta l4proto tcp counter name seen "
            f"{draw}counter name dropped drop",
        ]) + "\n"

    sides = [(CLIENT_NS, rules("input", "0", SERVER_IP)),
             (SERVER_NS, rules("prerouting", "raw", CLIENT_IP))]
    for ns, _ in sides:
        subprocess.run(in_ns(ns, "nft", "delete", "table", "inet", t), capture_output=True)
    try:
        for ns, text in sides:
            p = subprocess.run(in_ns(ns, "nft", "-f", "-"), input=text, text=True,
                               capture_output=True)
            if p.returncode:
                raise RuntimeError(f"netlab.wire_loss: nft in {ns}: {p.stderr.strip()}")
        yield
    finally:
        for ns, _ in sides:
            subprocess.run(in_ns(ns, "nft", "delete", "table", "inet", t), capture_output=True)


def nft_counters(ns: str, table: str, names: tuple[str, ...] = ("seen", "dropped")
                 ) -> dict[str, int]:
    """The packets counted by the named counters of nftables table ``inet
    table`` in namespace ``ns``: ``{name: packets}``, 0 for each where the
    table or the counter is not there."""
    got = dict.fromkeys(names, 0)
    p = subprocess.run(in_ns(ns, "nft", "-j", "list", "counters", "table", "inet", table),
                       capture_output=True, text=True)
    if p.returncode == 0:
        for item in json.loads(p.stdout).get("nftables", []):
            c = item.get("counter")
            if c and c.get("name") in got:
                got[c["name"]] = int(c["packets"])
    return got


def wire_loss_counters() -> dict[str, dict[str, int]]:
    """``wire_loss()``'s counters now: ``{"up": {"seen": n, "dropped": n},
    "down": {...}}`` (up: client -> server, counted in the server
    namespace; down: server -> client, in the client namespace); zeros
    where no ``wire_loss()`` is in effect."""
    return {way: nft_counters(ns, WIRE_LOSS_TABLE)
            for way, ns in (("up", SERVER_NS), ("down", CLIENT_NS))}


@contextlib.contextmanager
def inside(ns: str) -> Iterator[None]:
    """Runs the body with the *calling thread* in namespace ``ns``.

    Sockets (and AF_XDP sockets, bpf links) created inside keep living in
    ``ns`` after the thread switches back.
    """
    saved = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        netns.setns(ns, flags=0)
        try:
            yield
        finally:
            netns.setns(saved)
    finally:
        os.close(saved)


