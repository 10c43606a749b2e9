"""What the bypass needs on this machine, checked one piece at a time.

``preflight()`` is what a loop runs before it opens an engine (privileges,
XDP sockets, the interface); ``diagnose()`` is ``specloop doctor``: all of
that plus the XDP attach modes and the tools the lab and benchmarks use.
Every finding names what is missing and the fix.
"""

from __future__ import annotations

import dataclasses
import errno
import platform
import shutil
import socket
import subprocess

from . import iface

__all__ = ["Finding", "preflight", "diagnose", "capabilities", "missing_capabilities"]

AF_XDP = 44
CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
CAP_SYS_ADMIN = 21
CAP_BPF = 39
_CAP_NAMES = {CAP_NET_ADMIN: "CAP_NET_ADMIN", CAP_NET_RAW: "CAP_NET_RAW",
              CAP_SYS_ADMIN: "CAP_SYS_ADMIN", CAP_BPF: "CAP_BPF"}


@dataclasses.dataclass(frozen=True)
class Finding:
    """One check: ``status`` is "ok", "missing" (the bypass cannot run) or
    "warn" (something optional: the lab, benchmarks)."""

    name: str
    status: str
    detail: str
    fix: str = ""


def capabilities() -> int:
    """This thread's effective capability mask (CapEff)."""
    try:
        with open("/proc/thread-self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def missing_capabilities() -> list[str]:
    """Names of the capabilities the bypass needs and this thread lacks."""
    caps = capabilities()
    have = lambda c: bool(caps >> c & 1)  # noqa: E731
    missing = [_CAP_NAMES[c] for c in (CAP_NET_ADMIN, CAP_NET_RAW) if not have(c)]
    if not (have(CAP_BPF) or have(CAP_SYS_ADMIN)):
        missing.append("CAP_BPF")
    return missing


def _xdp_sockets() -> Finding:
    try:
        s = socket.socket(AF_XDP, socket.SOCK_RAW, 0)
    except OSError as exc:
        if exc.errno in (errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT):
            return Finding("XDP sockets", "missing",
                           "this kernel has no AF_XDP (CONFIG_XDP_SOCKETS is off)",
                           "use a kernel built with CONFIG_XDP_SOCKETS=y (>= 5.4)")
        if exc.errno in (errno.EPERM, errno.EACCES):
            return Finding("XDP sockets", "missing",
                           "creating an AF_XDP socket was refused (needs CAP_NET_RAW)",
                           "run as root or grant CAP_NET_RAW")
        return Finding("XDP sockets", "missing", f"socket(AF_XDP): {exc}", "")
    s.close()
    return Finding("XDP sockets", "ok", "AF_XDP sockets can be created")


def _privileges() -> Finding:
    missing = missing_capabilities()
    if missing:
        return Finding("privileges", "missing",
                       "missing " + ", ".join(missing),
                       "run as root, or: setcap cap_net_admin,cap_net_raw,cap_bpf+ep "
                       "on the Python binary")
    return Finding("privileges", "ok", "CAP_NET_ADMIN, CAP_NET_RAW and CAP_BPF held")


def _interface(ifname: str, info: dict[str, object] | None = None) -> Finding:
    if info is None:
        info = iface.interface_info(ifname)
    if info is None:
        return Finding("interface", "missing",
                       f"interface {ifname!r} not found in this network namespace",
                       "check `ip link`; for the lab run `specloop lab up` and run "
                       "the server inside it: ip netns exec slsrv ...")
    if not info["ipv4"]:
        return Finding("interface", "missing",
                       f"interface {ifname!r} has no IPv4 address",
                       f"ip addr add ADDRESS/PREFIX dev {ifname}")
    if info["state"] not in ("UP", "UNKNOWN"):
        return Finding("interface", "missing",
                       f"interface {ifname!r} is {info['state']}",
                       f"ip link set {ifname} up")
    return Finding("interface", "ok",
                   f"{ifname}: {', '.join(info['ipv4'])} mtu {info['mtu']} "
                   f"queues {info['queues']}")


def preflight(ifname: str, info: dict[str, object] | None = None) -> list[Finding]:
    """The checks a loop runs before opening an engine on ``ifname`` (whose
    ``iface.interface_info`` the caller may have looked up already)."""
    return [_privileges(), _xdp_sockets(), _interface(ifname, info)]


def _attach_modes(ifname: str) -> list[Finding]:
    from .config import Config
    from .engine import BypassUnavailableError, Engine

    info = iface.interface_info(ifname)
    if not info or not info["ipv4"]:
        return []
    out = []
    for mode in ("native", "generic"):
        try:
            cfg = Config.resolve({"interface": ifname, "xdp_mode": mode,
                                  "frame_count": 1024, "ring_size": 256})
            eng = Engine(cfg, mac=str(info["mac"]), ipv4=str(info["ipv4"][0]),
                         mtu=int(info["mtu"]))
        except BypassUnavailableError as exc:
            status = "missing" if mode == "generic" else "warn"
            out.append(Finding(f"XDP {mode} mode", status, str(exc),
                               "use xdp_mode='generic'" if mode == "native" else
                               "detach other XDP programs: ip link set dev "
                               f"{ifname} xdp off"))
            continue
        eng.close()
        out.append(Finding(f"XDP {mode} mode", "ok",
                           f"program attached and detached on {ifname}"))
    return out


SOL_PACKET = 263
PACKET_VNET_HDR = 15


def _offload_on(ifname: str, feature: str) -> bool | None:
    """Whether ``ethtool -k`` says ``feature`` is on (None: cannot tell)."""
    if not shutil.which("ethtool"):
        return None
    r = subprocess.run(["ethtool", "-k", ifname], capture_output=True, text=True)
    for line in r.stdout.splitlines():
        if line.strip().startswith(feature + ":"):
            return ": on" in line
    return None


def _tx_gso(ifname: str) -> Finding:
    """GSO super-frames (tx_gso): what the engine's tx_gso.c opens, tried
    here: a packet socket with PACKET_VNET_HDR bound to the interface."""
    name = "GSO super-frames"
    try:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    except OSError as exc:
        return Finding(name, "warn", f"{ifname}: socket(AF_PACKET, SOCK_RAW): {exc}; big "
                       "responses go as one AF_XDP frame per segment (more CPU)",
                       "run as root or grant CAP_NET_RAW; or tx_gso='off' to silence")
    try:
        s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        s.bind((ifname, 0))
    except OSError as exc:
        return Finding(name, "warn", f"{ifname}: PACKET_VNET_HDR on a packet socket: {exc}; "
                       "big responses go as one AF_XDP frame per segment (more CPU)",
                       "a kernel with packet sockets' virtio headers (2.6.39+)")
    finally:
        s.close()
    if _offload_on(ifname, "tcp-segmentation-offload") is False:
        return Finding(name, "warn", f"{ifname}: available, but TSO is off: tx_gso auto "
                       "sends one AF_XDP frame per segment (tx_gso='on' has the kernel "
                       "cut super-frames in software; counter tx_gso_software)",
                       f"ethtool -K {ifname} tso on")
    return Finding(name, "ok", f"{ifname}: runs of full segments leave as one packet of up "
                   "to 64 KiB (tx_gso auto; counters tx_gso_*)")


def _tool(name: str, purpose: str, package: str) -> Finding:
    if shutil.which(name):
        return Finding(f"tool {name}", "ok", f"found ({purpose})")
    return Finding(f"tool {name}", "warn", f"not found ({purpose})",
                   f"apt-get install {package}")


def _lab_offloads() -> Finding:
    from . import netlab  # the test lab: only for this check

    if not netlab.is_up():
        return Finding("lab", "warn", "the lab is down", "specloop lab up")
    r = subprocess.run(netlab.in_ns(netlab.CLIENT_NS, "ethtool", "-k", netlab.CLIENT_IF),
                       capture_output=True, text=True)
    on = [line.split(":")[0].strip() for line in r.stdout.splitlines()
          if line.strip().startswith(("tx-checksumming:", "tcp-segmentation-offload:",
                                      "generic-segmentation-offload:"))
          and ": on" in line]
    if on:
        return Finding("lab offloads", "missing",
                       f"{netlab.CLIENT_IF} still has {', '.join(on)} on",
                       "specloop lab up (sets tx/tso/gso off on the client side)")
    return Finding("lab", "ok", "slsrv/slcli up, client offloads off")


def _loop_core() -> Finding:
    """Which loop core specloop.Loop runs (core= / SPECLOOP_CORE)."""
    try:
        from . import _core  # noqa: F401
    except ImportError as exc:
        return Finding("loop core", "missing", f"specloop._core does not import: {exc}",
                       "pip install . (a C compiler and the Python headers)")
    from .config import Config
    try:
        core = Config.resolve({}).core
    except ValueError as exc:
        return Finding("loop core", "missing", str(exc), "SPECLOOP_CORE=c or asyncio")
    what = {"c": "C (specloop._core: call_soon, timers, _run_once and the engine's wait in C)",
            "asyncio": "asyncio's Python methods (SPECLOOP_CORE=asyncio)"}[core]
    return Finding("loop core", "ok", what)


def diagnose(ifname: str | None = None) -> list[Finding]:
    """Everything ``specloop doctor`` reports, in order."""
    out = [Finding("kernel", "ok", f"Linux {platform.release()}")]
    try:
        from . import _native  # noqa: F401
        out.append(Finding("native engine", "ok", "specloop._native imports"))
    except ImportError as exc:
        out.append(Finding("native engine", "missing", str(exc),
                           "pip install . (needs clang, libxdp-dev, libbpf-dev)"))
    out.append(_loop_core())
    out += [_privileges(), _xdp_sockets()]
    if ifname:
        out.append(_interface(ifname))
        if all(f.status == "ok" for f in out):
            out += _attach_modes(ifname)
            out.append(_tx_gso(ifname))
    out += [
        _tool("ip", "namespaces", "iproute2"),
        _tool("ethtool", "lab offloads", "ethtool"),
        _tool("nft", "loss injection in tests", "nftables"),
        _tool("wrk", "benchmarks", "wrk"),
        _tool("nginx", "benchmark peer", "nginx"),
        _tool("curl", "tests", "curl"),
    ]
    try:
        out.append(_lab_offloads())
    except OSError as exc:
        out.append(Finding("lab", "warn", f"cannot inspect the lab: {exc}", ""))
    return out
