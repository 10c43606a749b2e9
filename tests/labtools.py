"""Running kernel clients inside the lab's client namespace, and the
aiohttp server that several lab tests serve them from."""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable

from specloop import netlab
from specloop.netlab import loss as nft_loss  # noqa: F401  (the lab's own)


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


def stop_server(proc: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM (a server's graceful shutdown), SIGKILL if it outlives ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def nft_drop_all():
    """Context manager: the client namespace silently drops everything to and
    from the server (a peer that vanished without a RST)."""
    import contextlib

    @contextlib.contextmanager
    def cm():
        table = "slblack"
        rules = [
            f"add table inet {table}",
            f"add chain inet {table} out {{ type filter hook output priority 0 ; }}",
            f"add rule inet {table} out ip daddr {netlab.SERVER_IP} drop",
            f"add chain inet {table} in {{ type filter hook input priority 0 ; }}",
            f"add rule inet {table} in ip saddr {netlab.SERVER_IP} drop",
        ]
        for r in rules:
            subprocess.run(client_argv("nft", *r.split()), check=True, capture_output=True)
        try:
            yield
        finally:
            subprocess.run(client_argv("nft", "delete", "table", "inet", table),
                           capture_output=True)
    return cm()


def listeners_in_server_ns(port: int) -> list[str]:
    """Kernel TCP listeners on ``port`` in the server namespace (ss -tln)."""
    out = subprocess.run(netlab.in_ns(netlab.SERVER_NS, "ss", "-Htln", f"sport = :{port}"),
                         capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line.strip()]


def kernel_conns_in_server_ns(port: int) -> list[str]:
    """Kernel TCP connections (not listeners) on ``port`` in the server ns."""
    out = subprocess.run(netlab.in_ns(netlab.SERVER_NS, "ss", "-Htn", f"sport = :{port}"),
                         capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line.strip()]


@contextlib.asynccontextmanager
async def serving_files_and_bytes(files: pathlib.Path, port: int, body: Callable[[int], bytes],
                                  **static: object) -> AsyncIterator[None]:
    """aiohttp on the lab's server address: the static fast path on /static
    (files under ``files``, ``static`` for ``specloop.aiohttp.add_static``)
    and Python-written bodies on /bytes?n=N (``body(N)``)."""
    from aiohttp import web

    import specloop.aiohttp

    async def nbytes(request: web.Request) -> web.Response:
        return web.Response(body=body(int(request.query["n"])))

    app = web.Application()
    app.router.add_get("/bytes", nbytes)
    specloop.aiohttp.add_static(app, "/static", files, **static)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, netlab.SERVER_IP, port).start()
    try:
        yield
    finally:
        await runner.cleanup()
