"""Running kernel clients inside the lab's client namespace."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

from specloop import netlab


def client_argv(*argv: str) -> list[str]:
    """argv for a command in slcli."""
    return netlab.in_ns(netlab.CLIENT_NS, *argv)


def run_client(*argv: str, timeout: float = 30, check: bool = False) -> subprocess.CompletedProcess:
    """Runs a command in slcli, blocking (for code outside a running loop)."""
    return subprocess.run(client_argv(*argv), capture_output=True, text=True,
                          timeout=timeout, check=check)


def python_in_client(code: str) -> list[str]:
    """argv running Python ``code`` in slcli with this interpreter."""
    return client_argv(sys.executable, "-c", textwrap.dedent(code))


async def arun_client(*argv: str, timeout: float = 60,
                      stdin: bytes | None = None) -> tuple[int, bytes, bytes]:
    """Runs a command in slcli from inside a running loop."""
    proc = await asyncio.create_subprocess_exec(
        *client_argv(*argv), stdin=subprocess.PIPE if stdin is not None else None,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out, err
