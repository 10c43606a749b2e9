"""Impairing the lab's link alike for every server: added delay, and
segments on the wire (loss itself is ``specloop.netlab.wire_loss``).

Delay.  This kernel has no netem and no fq qdisc (FACTS.md), so neither a
netem delay nor an earliest-departure-time stamp (a tc BPF program setting
skb->tstamp) can hold a packet.  What holds it here is netfilter's queue:
an iptables NFQUEUE rule in the client namespace's raw PREROUTING hands
every packet *from* the server to ``nfq_delay`` (benchmarks/nfq_delay.c,
built by make), which accepts each one ``ms`` milliseconds after it came.

Why that direction and that place: the delay is added once per round
trip, on the server-to-client half, in the client's receive path.  The
packets there have already left the server's socket accounting (the
kernel orphans an skb in ip_rcv before the PREROUTING hook), so the kernel
server's TCP small queues never see a packet held for 20 ms as its own
still in the qdisc, and the bypass (whose frames pass no qdisc at all) is
delayed by the same rule at the same place.  Delaying the client's own
output would throttle the client's sender (TSQ), not add a round-trip
time.  ICMP takes the same rule: ``ping -U`` (user-to-user time; ping's
default uses the kernel's receive stamp, taken before the hold) measures
the delay.

Segments on the wire.  The lab's server side keeps TSO/GSO on (kernel
servers compared elsewhere keep their super-packets), so the kernel's TCP
and specloop's GSO super-frames cross the veth as packets of up to 64 KiB,
and a loss rule drops whole super-packets.  ``segments_on_wire()`` turns
TSO and GSO off on the server's interface for the body: every packet is
one MSS segment, for both stacks, and a loss rule drops segments.
"""

from __future__ import annotations

import contextlib
import pathlib
import re
import shutil
import subprocess
from typing import Iterator

from specloop import netlab

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
DELAY_TOOL = ROOT / "build" / "tools" / "nfq_delay"
QUEUE = 55          # the NFQUEUE number (per namespace: other labs have their own)


class ImpairError(RuntimeError):
    """The impairment cannot be set up here (says what is missing)."""


def delay_tool() -> pathlib.Path:
    """The nfq_delay binary, built by make if it is not there yet."""
    if not DELAY_TOOL.exists():
        p = subprocess.run(["make", "-s", "-C", str(ROOT), str(DELAY_TOOL.relative_to(ROOT))],
                           capture_output=True, text=True)
        if p.returncode or not DELAY_TOOL.exists():
            raise ImpairError(f"building {DELAY_TOOL.name} failed (make setup?): "
                              f"{(p.stderr or p.stdout).strip()[-300:]}")
    return DELAY_TOOL


def _iptables() -> str:
    exe = shutil.which("iptables-legacy") or shutil.which("iptables")
    if exe is None:
        raise ImpairError("iptables is missing (apt-get install iptables; make system)")
    return exe


def _rule(action: str) -> list[str]:
    return netlab.in_ns(netlab.CLIENT_NS, _iptables(), "-w", "-t", "raw", action, "PREROUTING",
                        "-s", netlab.SERVER_IP, "-j", "NFQUEUE", "--queue-num", str(QUEUE))


def queue_stats() -> dict[str, int]:
    """The delay queue's kernel counters in the client namespace:
    ``held`` now, ``dropped`` (queue full), ``user_dropped`` (our socket's
    buffer full); all 0 when no queue is bound."""
    out = subprocess.run(netlab.in_ns(netlab.CLIENT_NS, "cat",
                                      "/proc/net/netfilter/nfnetlink_queue"),
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 7 and f[0] == str(QUEUE):
            return {"held": int(f[2]), "dropped": int(f[5]), "user_dropped": int(f[6])}
    return {"held": 0, "dropped": 0, "user_dropped": 0}


@contextlib.contextmanager
def delay(ms: float) -> Iterator[dict]:
    """Adds ``ms`` milliseconds to every round trip between the lab's
    client and server while the body runs (0: nothing is set up).  Yields
    a dict that gets, on exit, the delayer's own counts (``packets``,
    ``max_held``, ``overruns``)."""
    stats: dict = {}
    if ms <= 0:
        yield stats
        return
    tool = delay_tool()
    subprocess.run(_rule("-D"), capture_output=True)     # a rule left by a killed run
    proc = subprocess.Popen(netlab.in_ns(netlab.CLIENT_NS, str(tool), str(QUEUE),
                                         str(round(ms * 1000))),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline().strip() if proc.stdout else ""
        if first != "ready":
            proc.kill()
            raise ImpairError(f"nfq_delay did not start: {first} {proc.stderr.read() if proc.stderr else ''}")
        p = subprocess.run(_rule("-A"), capture_output=True, text=True)
        if p.returncode:
            raise ImpairError(f"iptables NFQUEUE rule: {p.stderr.strip()}")
        try:
            yield stats
        finally:
            # the rule first: nothing more is queued, then the delayer lets
            # what it holds go and exits
            subprocess.run(_rule("-D"), capture_output=True)
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        m = re.search(r"packets (\d+) max_held (\d+) overruns (\d+)", out or "")
        if m:
            stats.update(packets=int(m[1]), max_held=int(m[2]), overruns=int(m[3]))


@contextlib.contextmanager
def segments_on_wire() -> Iterator[None]:
    """TSO and GSO off on the server's interface while the body runs (see
    the module's docstring), back on after, as ``netlab.up`` leaves them."""
    def ethtool(state: str) -> None:
        subprocess.run(netlab.in_ns(netlab.SERVER_NS, "ethtool", "-K", netlab.SERVER_IF,
                                    "tso", state, "gso", state),
                       check=True, capture_output=True)
    ethtool("off")
    try:
        yield
    finally:
        ethtool("on")


def ping_rtt_ms(count: int = 5) -> dict[str, float]:
    """Round-trip time from the client to the server's kernel address,
    user to user (``ping -U``): ``min`` and ``avg`` in ms ({} if no reply)."""
    p = subprocess.run(netlab.in_ns(netlab.CLIENT_NS, "ping", "-U", "-q", "-c", str(count),
                                    "-i", "0.2", "-W", "2", netlab.SERVER_IP),
                       capture_output=True, text=True)
    m = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/", p.stdout)
    return {"min": float(m[1]), "avg": float(m[2])} if m else {}
