"""``make demo``: the lab, a bypass loop on sl-srv0, a kernel client in slcli."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from . import netlab
from .loop import Loop

PORT = 8080


def main(requests: int = 200) -> int:
    lab = netlab.up()
    print(f"lab: {lab.server_ns}/{lab.server_if} {lab.server_ip} <-> "
          f"{lab.client_ns}/{lab.client_if} {lab.client_ip}")
    with netlab.inside(lab.server_ns):
        loop = Loop(interface=lab.server_if)
    try:
        stack = loop.stack
        assert stack is not None
        print(f"engine: XDP {stack.xdp_mode} mode on {lab.server_if}, "
              f"{loop.config.frame_count} UMEM frames")
        stack.steer_port(PORT)

        async def knock() -> str:
            code = ("import socket; s = socket.socket(); s.settimeout(1)\n"
                    "try:\n s.connect(('%s', %d)); print('connected')\n"
                    "except OSError as e: print(type(e).__name__)" % (lab.server_ip, PORT))
            proc = await asyncio.create_subprocess_exec(
                *netlab.in_ns(lab.client_ns, sys.executable, "-c", code),
                stdout=subprocess.PIPE)
            out, _ = await proc.communicate()
            return out.decode().strip()

        result = loop.run_until_complete(knock())
        c = stack.counters()
        print(f"client in {lab.client_ns} -> {lab.server_ip}:{PORT}: {result}; "
              f"engine saw {c['rx_tcp_syn']} SYN(s), {c['rx_packets']} packet(s)")
    finally:
        loop.close()
    return 0
