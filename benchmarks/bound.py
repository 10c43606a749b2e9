"""How much faster can each framework get from a better loop and stack?

For every app of benchmarks/servers/ this runs its hello server on uvloop
(pinned as in the suite), loads it with wrk at one connection count, and
profiles the server with ``perf record -e cpu-clock``.  Samples whose code is
the kernel's (the network stack, epoll, the TX path) or uvloop's loop are
what a free loop and network stack would remove; everything else (the
interpreter running the framework, its C extensions, libc) is the
framework's own share F.  Then 1/F is the bound: no loop or stack, however
fast, makes that server faster than 1/F times its uvloop speed.

    python -m benchmarks.bound [--connections 32] [--seconds 4]
                               [--results benchmarks/latest/results.json]

With ``--results``, each row also shows its measured bypass ×uvloop from
that run beside the bound.  Writes a markdown table (stdout) and JSON
(``--json``).  Needs root, the lab and perf (linux-perf).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Sequence

from specloop import netlab

from . import content, matrix, runner

STATIC_DIR = pathlib.Path("/var/tmp/specloop-bench/static")   # as the suite's

# what a free loop and network stack would take away (perf's dso names)
LOOP_AND_STACK = re.compile(r"^\[kernel|^loop\.cpython|^\[vdso\]")


def _profile(pid: int, seconds: float, out: pathlib.Path) -> dict[str, float]:
    """Share of samples per dso of one process over ``seconds``."""
    data = out / "perf.data"
    subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-F", "4000", "-p", str(pid),
                    "-o", str(data), "--", "sleep", str(seconds)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rep = subprocess.run(["perf", "report", "-i", str(data), "--no-children", "--sort", "dso",
                          "--stdio", "-q"], check=True, capture_output=True, text=True).stdout
    shares: dict[str, float] = {}
    for line in rep.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)", line)
        if m:
            shares[m.group(2)] = shares.get(m.group(2), 0.0) + float(m.group(1)) / 100
    return shares


def measure(server: matrix.Server, connections: int, seconds: float,
            static_dir: pathlib.Path, tmp: pathlib.Path) -> dict[str, Any]:
    proc = runner.ServerProcess(server, 8300, static_dir, tmp)
    proc.start()
    try:
        runner.wrk(proc.port, "/", connections, 1)   # warm-up
        load = subprocess.Popen(runner.client_argv(
            "wrk", "-t1", f"-c{connections}",
            f"-d{int(seconds) + 2}s", runner.url(proc.port, "/")),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
        shares = _profile(proc.pids[0], seconds, proc.tmp)
        load.wait()
    finally:
        proc.stop()
    loop_stack = sum(v for k, v in shares.items() if LOOP_AND_STACK.search(k))
    total = sum(shares.values()) or 1.0
    framework = max(1e-9, (total - loop_stack) / total)
    top = sorted(shares.items(), key=lambda kv: -kv[1])[:6]
    return {"app": server.app, "server": server.id, "connections": connections,
            "framework_share": round(framework, 4), "loop_and_stack_share":
            round(1 - framework, 4), "bound": round(1 / framework, 3),
            "top_dsos": [[k, round(v, 4)] for k, v in top]}


def _measured(results: dict[str, Any] | None, app: str, connections: int) -> float | None:
    if not results:
        return None
    rows = {(r["server"], r["workload"], r["connections"]): r
            for r in results.get("results", []) if r.get("status") == "ok"}
    b = rows.get((f"{app}-specloop-bypass", "hello", connections))
    u = rows.get((f"{app}-uvloop", "hello", connections))
    if not b or not u or not u.get("requests_per_s"):
        return None
    return round(b["requests_per_s"] / u["requests_per_s"], 2)


def table(rows: list[dict[str, Any]]) -> str:
    out = ["| app (hello, c=%d) | framework's share on uvloop | bound ×uvloop | "
           "measured bypass ×uvloop |" % (rows[0]["connections"] if rows else 0),
           "|---|---:|---:|---:|"]
    for r in rows:
        m = r.get("measured")
        out.append(f"| {r['app']} | {100 * r['framework_share']:.0f}% | "
                   f"{r['bound']:.2f}× | {'—' if m is None else f'{m:.2f}×'} |")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bound", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--seconds", type=float, default=4)
    p.add_argument("--results", type=pathlib.Path, default=None,
                   help="a suite results.json: its bypass ×uvloop beside each bound")
    p.add_argument("--json", type=pathlib.Path, default=None)
    p.add_argument("--apps", default=None, help="comma-separated apps (default: all)")
    args = p.parse_args(argv)
    if not shutil.which("perf"):
        print("perf is not installed (apt-get install linux-perf)", file=sys.stderr)
        return 2
    built = not netlab.is_up()
    netlab.up()
    results = json.loads(args.results.read_text()) if args.results else None
    rows = []
    try:
        static = STATIC_DIR
        content.ensure(static, None)
        # the apps with a hello server (not the WebSocket echo)
        servers = [s for s in matrix.discover() if s.loop == "uvloop" and s.app
                   and s.kind == "app" and s.cannot("hello") is None]
        if args.apps:
            want = set(args.apps.split(","))
            servers = [s for s in servers if s.app in want]
        with tempfile.TemporaryDirectory() as tmp:
            for s in servers:
                r = measure(s, args.connections, args.seconds, static, pathlib.Path(tmp))
                r["measured"] = _measured(results, s.app or "", args.connections)
                print(f"{s.app}: framework {100 * r['framework_share']:.0f}%, bound "
                      f"{r['bound']:.2f}x", file=sys.stderr)
                rows.append(r)
    finally:
        if built:
            netlab.down()
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
