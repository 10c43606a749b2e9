"""Path MTU discovery (RFC 1191) over a real router with a narrow link.

A fourth namespace holds the client behind slcli, which forwards: its
interface takes 1500-byte packets (so the client announces MSS 1460), but
slcli's side of the link, the router's way out, takes 1280.  A full
segment from the server is too big for that hop; the router drops it and
sends ICMP "fragmentation needed" (MTU 1280) back.  The kernel's TCP lowers
its MSS and resends; so must the bypass (the XDP program steers that ICMP
to the engine): every byte arrives, and without a retransmission timeout;
the next connection to the same client starts with the smaller MTU.
Without path MTU discovery the transfer stalls for good.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
from collections.abc import Iterator

import pytest

import specloop
from specloop import netlab

from labtools import serving_files_and_bytes

pytestmark = pytest.mark.lab

PORT = 8097
URL = f"http://{netlab.SERVER_IP}:{PORT}"
NARROW_NS = "slpmtu" + os.environ.get("SPECLOOP_LAB", "")
ROUTER_IF = "sl-pmr" + os.environ.get("SPECLOOP_LAB", "")
HOST_IF = "sl-pmh" + os.environ.get("SPECLOOP_LAB", "")
ROUTER_IP, HOST_IP, NARROW_NET = "10.57.0.1", "10.57.0.2", "10.57.0.0/24"
NARROW_MTU = 1280
SIZE = 1 << 20


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def narrow_hop(lab: netlab.Lab) -> Iterator[None]:
    """slpmtu behind slcli, whose way to it is 1280 bytes wide."""
    cli, srv = lab.client_ns, lab.server_ns
    subprocess.run(["ip", "netns", "del", NARROW_NS], capture_output=True)
    forward = sh("ip", "netns", "exec", cli, "sysctl", "-n", "net.ipv4.ip_forward")
    try:
        sh("ip", "netns", "add", NARROW_NS)
        sh("ip", "-n", cli, "link", "add", ROUTER_IF, "type", "veth", "peer", "name", HOST_IF,
           "netns", NARROW_NS)
        sh("ip", "-n", cli, "link", "set", ROUTER_IF, "mtu", str(NARROW_MTU), "up")
        sh("ip", "-n", cli, "addr", "add", f"{ROUTER_IP}/24", "dev", ROUTER_IF)
        sh("ip", "-n", NARROW_NS, "link", "set", "lo", "up")
        sh("ip", "-n", NARROW_NS, "link", "set", HOST_IF, "mtu", "1500", "up")
        sh("ip", "-n", NARROW_NS, "addr", "add", f"{HOST_IP}/24", "dev", HOST_IF)
        sh("ip", "-n", NARROW_NS, "route", "add", "default", "via", ROUTER_IP)
        sh("ip", "netns", "exec", cli, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        # the kernel path's way back (the bypass answers the MAC it heard)
        sh("ip", "-n", srv, "route", "replace", NARROW_NET, "via", netlab.CLIENT_IP)
        yield
    finally:
        subprocess.run(["ip", "-n", srv, "route", "del", NARROW_NET], capture_output=True)
        subprocess.run(["ip", "netns", "exec", cli, "sysctl", "-qw",
                        f"net.ipv4.ip_forward={forward}"], capture_output=True)
        subprocess.run(["ip", "netns", "del", NARROW_NS], capture_output=True)


def pattern(n: int) -> bytes:
    block = hashlib.sha256(b"pmtu").digest() * 2047
    return (block * (n // len(block) + 1))[:n]


async def fetch_digests(*urls: str) -> list[str]:
    """sha256 of each body, fetched by curl in slpmtu, a connection each."""
    script = " ; ".join(f"curl -sS --max-time 60 '{u}' | sha256sum" for u in urls)
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", NARROW_NS, "sh", "-c", script,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 150)
    assert proc.returncode == 0 and not err, err.decode()[-2000:]
    return [line.split()[0] for line in out.decode().splitlines()]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("pmtu")
    os.chmod(d, 0o755)
    (d / "one.bin").write_bytes(os.urandom(SIZE))
    return d


@pytest.mark.parametrize("how", ["kernel", "bypass frames", "bypass super-frames"])
def test_router_icmp_lowers_the_mss_and_every_byte_arrives(narrow_hop, in_server_ns, files,
                                                            how):
    settings = {} if how == "kernel" else {
        "interface": in_server_ns.server_if,
        "tx_gso": "on" if how == "bypass super-frames" else "off"}
    loop = specloop.new_event_loop(**settings)
    asyncio.set_event_loop(loop)
    urls = [f"{URL}/static/one.bin", f"{URL}/bytes?n={SIZE + 777}"]
    want = [hashlib.sha256((files / "one.bin").read_bytes()).hexdigest(),
            hashlib.sha256(pattern(SIZE + 777)).hexdigest()]

    async def main() -> list[str]:
        async with serving_files_and_bytes(files, PORT, pattern):
            return await fetch_digests(*urls)

    try:
        assert loop.run_until_complete(main()) == want
        if how == "kernel":
            return
        c = loop.stack.counters()
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    # the first connection learns it from the router's ICMP, the second
    # starts with it (kept for the destination); no timeout either way
    assert c["pmtu_reductions"] == 1 and c["icmp_frag_needed"] >= 1, c
    assert c["pmtu_cached"] == 1, c
    assert c["rto_expired"] == 0 and c["drop_icmp_out_of_window"] == 0, c
    if how == "bypass super-frames":
        # super-frames go on after it, cut to what the narrow hop takes:
        # at most an initial window (10 segments) went at the first size,
        # 1448 bytes, before the ICMP came
        new_mss, first = NARROW_MTU - 52, 10
        assert c["tx_gso_errors"] == 0 and c["tx_gso_segments"] > 10 * first
        assert c["tx_gso_bytes"] <= new_mss * c["tx_gso_segments"] + (1448 - new_mss) * first
