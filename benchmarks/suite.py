"""``specloop bench``: every server, every workload, one run, side by side.

The lab is built (and removed again if this run built it); each server runs
alone in the server namespace pinned to one CPU, wrk (-t1) and curl run in
the client namespace pinned to the other.  Workload by workload, every
server is started, checked (GET of the workload's path must return the
right bytes), warmed up and measured at each connection count, then
stopped; the server order rotates by one per workload so drift hits all
alike, and with several runs per row the rows take turns, run by run.  Results: report.md (also printed), results.json and PNG plots in
--out, progress on stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import os
import pathlib
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Sequence

from specloop import netlab

from . import ceiling, content, matrix, report, runner

HERE = pathlib.Path(__file__).resolve().parent
DEFAULT_STATIC = pathlib.Path("/var/tmp/specloop-bench/static")
PORT_BASE = 18100

# A cell measured while other guests of this shared host ran on our CPUs
# (steal, /proc/stat) measures the host, not the server: it is measured again,
# the same for every row, and the least stolen measurement is kept.
MAX_STEAL_PCT = 5.0
STEAL_RETRIES = 2

# cost model of the plan (seconds), for the estimate and the duration pick
START_S = 0.5          # a server start + its checks
WRK_OVERHEAD_S = 0.15  # wrk runs ~0.1 s past -d, plus netns exec
BULK_RATE = 300e6      # bytes/s assumed for the estimate of a bulk download
FAST_PATH_RUNS = 3     # fresh processes per cell of a row whose speed varies per process


@dataclasses.dataclass(frozen=True)
class Mode:
    name: str
    warmup: int                 # seconds (wrk takes whole seconds)
    durations: tuple[int, int]  # measured seconds: (shortest, longest) the plan may pick
    connections: tuple[int, ...]
    workloads: tuple[str, ...]
    bulk_bytes: int
    budget_s: float             # the whole run must fit in this
    extra_connections: tuple[int, ...] | None = None   # other apps' hello, if not the same
    rate_workloads: tuple[str, ...] = ("static-8k",)   # with a constant-rate cell
    ceiling_seconds: float = 2.0                        # per TX mechanism (ceiling.py)
    max_steal: float = MAX_STEAL_PCT                    # --max-steal's default


MODES = {
    "default": Mode("default", 1, (2, 5), (1, 32, 256), matrix.WORKLOAD_IDS, 1 << 30, 1200),
    "quick": Mode("quick", 1, (1, 1), (1, 256), matrix.WORKLOAD_IDS, 256 << 20, 420,
                  extra_connections=(256,), ceiling_seconds=1.0),
    "smoke": Mode("smoke", 0, (1, 1), (32,), ("hello", "static-8k", "bulk", matrix.WS_ECHO,
                                              matrix.CEILING),
                  16 << 20, 80, ceiling_seconds=0.3, max_steal=0.0),
}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="specloop bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="1 and 256 connections (other apps: 256), 1 s cells, 256 MiB bulk "
                        "(about 6 minutes)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny matrix for the test suite: hello, 8 KiB, bulk 16 MiB, "
                        "WebSocket echo, 32 connections, 1 s cells, no warm-up")
    p.add_argument("--out", type=pathlib.Path, default=None,
                   help="output folder (default benchmarks/results/<timestamp>/)")
    p.add_argument("--json", type=pathlib.Path, default=None, metavar="PATH",
                   help="also write the results as JSON here")
    p.add_argument("--servers", default=None,
                   help="comma-separated server ids or fnmatch patterns (aiohttp-*,nginx)")
    p.add_argument("--workloads", default=None,
                   help=f"comma-separated, of: {', '.join(matrix.WORKLOAD_IDS)}")
    p.add_argument("--connections", default=None, help="comma-separated, e.g. 1,32,256")
    p.add_argument("--duration", type=int, default=None,
                   help="measured seconds per cell (default: the longest that fits the budget)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up seconds per cell")
    p.add_argument("--bulk-mib", type=int, default=None, help="bulk file size in MiB")
    p.add_argument("--rate", type=int, default=matrix.RATE,
                   help=f"requests/s of the constant-rate latency cell (default {matrix.RATE}, "
                        f"over {matrix.RATE_CONNECTIONS} connections; 0: none)")
    p.add_argument("--runs", type=int, default=1, metavar="N",
                   help="fresh server processes per cell, for every server (default 1); "
                        "req/s and CPU/request are the medians, min and max beside them")
    p.add_argument("--fast-path-runs", type=int, default=FAST_PATH_RUNS, metavar="N",
                   help="at least this many fresh processes per cell for the static fast "
                        "path rows, whose speed varies from process to process "
                        f"(default {FAST_PATH_RUNS})")
    p.add_argument("--max-steal", type=float, default=None, metavar="PCT",
                   help="measure a cell again when other guests of the host took more than "
                        f"PCT%% of either CPU while it ran (steal; default {MAX_STEAL_PCT:g}, "
                        "--smoke 0; 0: never)")
    p.add_argument("--steal-retries", type=int, default=STEAL_RETRIES, metavar="N",
                   help="at most N more measurements of such a cell; the least stolen one "
                        f"is kept (default {STEAL_RETRIES})")
    p.add_argument("--ceiling-seconds", type=float, default=None, metavar="S",
                   help="seconds per TX mechanism of the ceiling workload (default 2; "
                        "--quick 1)")
    p.add_argument("--static-dir", type=pathlib.Path, default=DEFAULT_STATIC,
                   help=f"where the served files are made once (default {DEFAULT_STATIC})")
    p.add_argument("--readme", action="store_true",
                   help="also copy the report to benchmarks/latest/ and into README.md")
    p.add_argument("--list", action="store_true", help="list servers and workloads, then exit")
    return p.parse_args(list(argv))


def progress(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def fmt_clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}:{seconds % 60:02d}"


class Run:
    """One benchmark run: the plan, its execution and its results."""

    def __init__(self, args: argparse.Namespace, mode: Mode) -> None:
        self.args = args
        self.mode = mode
        self.warmup = args.warmup if args.warmup is not None else mode.warmup
        self.connections = (tuple(int(c) for c in args.connections.split(","))
                            if args.connections else mode.connections)
        if any(c < 1 for c in self.connections):
            raise ValueError("--connections: every count must be at least 1")
        self.bulk_bytes = (args.bulk_mib << 20) if args.bulk_mib else mode.bulk_bytes
        self.servers = matrix.select_servers(matrix.discover(), args.servers)
        self.workloads = matrix.select_workloads(args.workloads, mode.workloads)
        if args.runs < 1 or args.fast_path_runs < 1:
            raise ValueError("--runs and --fast-path-runs must be at least 1")
        self.runs, self.fast_path_runs = args.runs, args.fast_path_runs
        self.steps = matrix.plan(self.servers, self.workloads, self.connections,
                                 explicit_servers=bool(args.servers),
                                 extra_connections=None if args.connections
                                 else mode.extra_connections,
                                 runs=args.runs, varies_runs=args.fast_path_runs)
        self.max_steal = args.max_steal if args.max_steal is not None else mode.max_steal
        self.steal_retries = args.steal_retries
        if self.max_steal < 0 or self.steal_retries < 0:
            raise ValueError("--max-steal and --steal-retries must be >= 0")
        self.rate = args.rate
        if self.rate < 0:
            raise ValueError("--rate must be >= 0")
        self.rate_workloads = mode.rate_workloads if self.rate else ()
        self.ceiling_seconds = (args.ceiling_seconds if args.ceiling_seconds is not None
                                else mode.ceiling_seconds)
        if self.ceiling_seconds <= 0:
            raise ValueError("--ceiling-seconds must be above 0")
        self.duration = args.duration if args.duration is not None else self._fit_duration()
        if self.duration < 1 or self.warmup < 0:
            raise ValueError("--duration must be >= 1 and --warmup >= 0")
        self.results: list[dict[str, Any]] = []
        self.bulk: list[dict[str, Any]] = []
        self.rate_results: list[dict[str, Any]] = []
        self.port = PORT_BASE
        self.cpu_probe: runner.CpuProbe | None = None
        self.static_dir = self.tmp = pathlib.Path()   # set by execute()

    # ---- the plan's cost -----------------------------------------------------------

    def step_cost(self, step: matrix.Step, duration: int | None = None) -> float:
        if step.skip:
            return 0.0
        d = self.duration if duration is None else duration
        warm = self.warmup + WRK_OVERHEAD_S if self.warmup else 0
        if step.workload == matrix.BULK:
            return step.runs * (START_S + warm + self.bulk_bytes / BULK_RATE + 0.5)
        cells = len(step.connections)
        rate = step.workload in self.rate_workloads
        return (step.runs * (START_S + cells * (warm + d + WRK_OVERHEAD_S))
                + rate * (warm + d + WRK_OVERHEAD_S))

    def estimate(self, duration: int | None = None) -> float:
        return sum(self.step_cost(s, duration) for s in self.steps) + self.ceiling_cost()

    def ceiling_cost(self) -> float:
        if matrix.CEILING not in self.workloads:
            return 0.0
        return len(ceiling.MODES) * (self.ceiling_seconds + 0.3) + 1.0   # + gcc

    def _fit_duration(self) -> int:
        lo, hi = self.mode.durations
        for d in range(hi, lo - 1, -1):
            if self.estimate(d) <= self.mode.budget_s:
                return d
        return lo

    def cells(self) -> int:
        return sum(s.runs * (len(s.connections) or 1) + (s.workload in self.rate_workloads)
                   for s in self.steps if not s.skip)

    # ---- execution -------------------------------------------------------------------------

    def cell_cost(self) -> float:
        return ((self.warmup + WRK_OVERHEAD_S if self.warmup else 0)
                + self.duration + WRK_OVERHEAD_S)

    def execute(self, static_dir: pathlib.Path, tmp: pathlib.Path) -> None:
        self.static_dir, self.tmp = static_dir, tmp
        total_est = self.estimate()
        done_est = 0.0
        t0 = time.monotonic()
        n_cells = self.cells()
        k = 0
        # the VM's own speed before each cell of a row with several runs
        self.cpu_probe = (runner.CpuProbe(tmp) if any(s.runs > 1 for s in self.steps)
                          else None)
        # the steps of one workload run round by round: run 1 of every
        # server, then run 2 of every server (the order rotated by one per
        # round), so a slow spell of this shared VM falls on every row of a
        # cell rather than on all the runs of one
        groups: list[list[matrix.Step]] = []
        for step in self.steps:
            if groups and groups[-1][0].workload == step.workload:
                groups[-1].append(step)
            else:
                groups.append([step])
        for group in groups:
            state = {id(step): _StepRuns() for step in group}
            for step in group:
                if step.skip:
                    progress(f"[   -/{n_cells:3d}] {step.workload:<9} {step.server.label}: "
                             f"does not run: {step.skip}")
            live = [step for step in group if not step.skip]
            for i in range(max((step.runs for step in live), default=0)):
                k_rot = i % len(live)
                for step in live[k_rot:] + live[:k_rot]:
                    if i < step.runs:
                        k, done_est = self._run_once(step, i, state[id(step)], k, n_cells,
                                                     t0, done_est, total_est)
            for step in group:    # the records in the plan's order
                runs = state[id(step)].runs
                if step.skip:
                    self._record_skip(step, "skipped", step.skip)
                elif step.workload == matrix.BULK:
                    self.bulk.append(aggregate(runs[None], "mb_per_s"))
                else:
                    for c in step.connections:
                        self.results.append(aggregate(runs[c], "requests_per_s"))

    def _run_once(self, step: matrix.Step, i: int, st: _StepRuns, k: int, n_cells: int,
                  t0: float, done_est: float, total_est: float) -> tuple[int, float]:
        """Run ``i`` of ``step``: a fresh server process, checked, then every
        cell of the step.  Returns the progress counters (cells done, the
        estimated seconds done)."""
        wl = None if step.workload == matrix.BULK else matrix.workload(step.workload)
        s = step.server
        runs = st.runs
        run_tag = f" (run {i + 1}/{step.runs})" if step.runs > 1 else ""
        n_run = len(step.connections) or 1
        rate_here = not st.rate_done and wl is not None and wl.id in self.rate_workloads
        done_est += START_S
        self.port += 1
        sp = runner.ServerProcess(s, self.port, self.static_dir, self.tmp)
        last: dict[str, Any] | None = None
        try:
            try:
                sp.start()
                # every process, before it is measured: the status and the
                # bytes of the workload's URL (bulk: the download checks both)
                check = None if wl is None else sp.check(
                    wl, b"Hello, world!" if wl.file is None
                    else (self.static_dir / wl.file).read_bytes())
            except (runner.ServerError, OSError, RuntimeError) as exc:
                reason = f"did not start: {exc}"
                for c in (step.connections or (None,)):
                    rec = self._base(step, c)
                    rec.update(status="failed", reason=reason)
                    runs.setdefault(c, []).append(rec)
                if rate_here and i == step.runs - 1:
                    self._record_rate_skip(step, "failed", reason)
                k += n_run + rate_here
                done_est += self.step_cost(step) / step.runs - START_S
                progress(f"[{k:4d}/{n_cells:3d}] {step.workload:<9} {s.label}{run_tag}: "
                         f"{reason}")
                return k, done_est
            if wl is None:
                last = self._measure_bulk(sp)
                runs.setdefault(None, []).append(last)
                k += 1
                done_est += self.step_cost(step) / step.runs - START_S
                progress(self._line(k, n_cells, t0, done_est, total_est, step, None,
                                    last, run_tag))
            else:
                for c in step.connections:
                    last = self._measure_cell(sp, wl, c, step.runs > 1)
                    last["check"] = check
                    runs.setdefault(c, []).append(last)
                    k += 1
                    done_est += self.cell_cost()
                    progress(self._line(k, n_cells, t0, done_est, total_est, step, c,
                                        last, run_tag))
                if rate_here:   # once per step: in its first process that starts
                    rec = self._measure_rate(sp, wl)
                    self.rate_results.append(rec)
                    st.rate_done = True
                    k += 1
                    done_est += self.cell_cost()
                    progress(self._line(k, n_cells, t0, done_est, total_est, step, None,
                                        rec, run_tag))
        finally:
            note = sp.stop()
        if note and last is not None:   # on the run's last record
            last["stop_note"] = note
            progress(f"           {s.label}: {note}")
        return k, done_est

    def _line(self, k: int, n: int, t0: float, done_est: float, total_est: float,
              step: matrix.Step, c: int | None, rec: dict[str, Any], tag: str = "") -> str:
        """One progress line; ``c`` None for bulk; a constant-rate record
        (it has ``rate``) shows its rate instead of connections; ``tag``
        names the run of a row with several."""
        elapsed = time.monotonic() - t0
        scale = elapsed / done_est if done_est > 0 else 1.0
        left = max(0.0, (total_est - done_est) * scale)
        rate = "rate" in rec
        col = f"@{rec['rate']}" if rate else f"c={c}" if c else "bulk"
        head = (f"[{k:4d}/{n:3d} {fmt_clock(elapsed)} elapsed, ~{fmt_clock(left)} left] "
                f"{step.workload:<9} {col:<6} {step.server.label + tag:<32}")
        if rec["status"] != "ok":
            return head + f" {rec['status']}: {rec['reason']}"
        if c is None and not rate:
            return head + f" {rec['mb_per_s']:9.1f} MB/s"
        lat = rec["latency_us"]
        unit = "msg" if step.workload in matrix.WEBSOCKET_IDS else "req"
        tail = (f" {rec['requests_per_s']:>10,.0f} {unit}/s  p50 {report.sig(lat['p50'] / 1000)} "
                f"ms  p99 {report.sig(lat['p99'] / 1000)} ms")
        if rate:
            tail += " (constant rate)"
        if "cpu_us_per_request" in rec:
            tail += f"  server {report.sig(rec['cpu_us_per_request']['server'])} µs/{unit}"
        if rec["error_count"]:
            tail += f"  ({rec['reason']})"
        return head + tail

    def _base(self, step: matrix.Step, c: int | None) -> dict[str, Any]:
        rec: dict[str, Any] = {"server": step.server.id, "workload": step.workload}
        if c is not None:
            rec["connections"] = c
        return rec

    def _record_skip(self, step: matrix.Step, status: str, reason: str) -> None:
        if step.workload == matrix.BULK:
            rec = self._base(step, None)
            rec.update(status=status, reason=reason)
            self.bulk.append(rec)
            return
        for c in step.connections:
            rec = self._base(step, c)
            rec.update(status=status, reason=reason)
            self.results.append(rec)
        if step.workload in self.rate_workloads:
            self._record_rate_skip(step, status, reason)

    def _record_rate_skip(self, step: matrix.Step, status: str, reason: str) -> None:
        rec = self._base(step, None)
        rec.update(rate=self.rate, connections=matrix.RATE_CONNECTIONS, status=status,
                   reason=reason)
        self.rate_results.append(rec)

    def _measure_cell(self, sp: runner.ServerProcess, wl: matrix.Workload,
                      c: int, probe_cpu: bool = False) -> dict[str, Any]:
        return least_stolen(lambda: self._measure_cell_once(sp, wl, c, probe_cpu),
                            self.max_steal, self.steal_retries, "requests_per_s")

    def _measure_cell_once(self, sp: runner.ServerProcess, wl: matrix.Workload,
                           c: int, probe_cpu: bool = False) -> dict[str, Any]:
        """One cell: warm-up, then ``self.duration`` measured seconds of wrk,
        or of ws_load for a WebSocket workload (a "request" is then one
        echoed message), with the server's CPU and the kernel's readings
        taken around the measured seconds alone."""
        rec: dict[str, Any] = {"server": sp.server.id, "workload": wl.id, "connections": c}
        at: dict[str, Any] = {}

        def begin() -> None:
            # right before the measured seconds (ws_load: its connections open
            # and idle after its warm-up, waiting for us)
            at["speed"] = self.cpu_probe.measure() if probe_cpu and self.cpu_probe else None
            sp.refresh_pids()
            at["probe"] = runner.KernelProbe(sp.pids)
            at["m0"], at["s0"], at["t0"] = (runner.machine_busy_ticks(), sp.cpu_ticks(),
                                            time.monotonic())

        try:
            if wl.websocket:
                r = runner.ws_load(sp.port, wl.path, c, self.duration, self.warmup, begin)
            else:
                if self.warmup:
                    runner.wrk(sp.port, wl.path, c, self.warmup)
                begin()
                r = runner.wrk(sp.port, wl.path, c, self.duration)
            m1, s1, t1 = runner.machine_busy_ticks(), sp.cpu_ticks(), time.monotonic()
            m0, s0, t0, speed = at["m0"], at["s0"], at["t0"], at["speed"]
            diag = at["probe"].delta(int(r["requests"]), t1 - t0)
            diag["client_ctx_switches_per_request"] = [
                round(x / max(1, int(r["requests"])), 2) for x in r["client_ctx_switches"]]
            rss = sp.rss_kib()
            if sp.server.bypass:
                diag["anon_maps"] = sp.big_anon_mappings()
            if speed is not None:
                diag["cpu_probe_ns"] = speed
        except (RuntimeError, OSError, ValueError) as exc:
            rec.update(status="failed", reason=f"client failed: {exc}")
            return rec
        if not sp.alive():
            rec.update(status="failed", reason=f"server died during the run: {sp.last_error()}")
            return rec
        n = int(r["requests"])
        seconds = r["duration_us"] / 1e6
        errs = r["errors"]
        error_count = sum(int(v) for v in errs.values())
        if n == 0:
            rec.update(status="failed", reason="no responses (" + _errors_text(errs) + ")",
                       errors=errs, error_count=error_count)
            return rec
        # every response of the run: its status (wrk counts non-2xx/3xx as
        # errors) and its size (head + body; the body alone is wl.size)
        per_response = int(r["bytes"]) / n
        if per_response < wl.size:
            rec.update(status="failed", errors=errs, error_count=error_count,
                       reason=f"responses average {per_response:,.0f} bytes, less than the "
                              f"{wl.size:,}-byte body ({_errors_text(errs)})")
            return rec
        rec.update(
            status="ok", reason=_errors_text(errs) if error_count else None,
            requests=n, seconds=round(seconds, 3), requests_per_s=round(n / seconds, 1),
            bytes=int(r["bytes"]), response_bytes=round(per_response, 1),
            errors=errs, error_count=error_count,
            latency_us={k: r["latency_us"][k] for k in ("p50", "p90", "p99", "p999", "p9999",
                                                         "mean", "max")},
            cpu_us_per_request={
                "server": round((s1 - s0) / runner.CLK_TCK * 1e6 / n, 2),
                "machine": round((m1 - m0) / runner.CLK_TCK * 1e6 / n, 2),
                "client": round(r["client_cpu_s"] * 1e6 / n, 2)},
            # percent of one CPU over the run: wrk (ws_load: its own reading over
            # its measured seconds), and what neither client nor the server
            # processes account for (kernel softirq work, other users)
            cpu_pct={
                "client": round(r.get("client_busy_pct",
                                      r["client_cpu_s"] / (t1 - t0) * 100), 1),
                "other": round(((m1 - m0 - (s1 - s0)) / runner.CLK_TCK - r["client_cpu_s"])
                               / (t1 - t0) * 100, 1)},
            rss_mib=round(rss / 1024, 1), diag=diag)
        return rec

    def _measure_rate(self, sp: runner.ServerProcess, wl: matrix.Workload) -> dict[str, Any]:
        rec: dict[str, Any] = {"server": sp.server.id, "workload": wl.id, "rate": self.rate,
                               "connections": matrix.RATE_CONNECTIONS}
        try:
            if self.warmup:
                runner.wrk_rate(sp.port, wl.path, self.rate, matrix.RATE_CONNECTIONS, self.warmup)
            settle = min(1.0, self.duration / 4)
            r = runner.wrk_rate(sp.port, wl.path, self.rate, matrix.RATE_CONNECTIONS, self.duration,
                                settle)
        except (RuntimeError, OSError, ValueError) as exc:
            rec.update(status="failed", reason=f"client failed: {exc}")
            return rec
        if not sp.alive():
            rec.update(status="failed", reason=f"server died during the run: {sp.last_error()}")
            return rec
        n = int(r["responses"])
        errs = r["errors"]
        error_count = sum(int(v) for v in errs.values())
        if n == 0:
            rec.update(status="failed", reason="no responses (" + _errors_text(errs) + ")",
                       errors=errs, error_count=error_count)
            return rec
        seconds = r["duration_us"] / 1e6 - settle
        late = int(r["late"])
        rec.update(status="ok", reason=_errors_text(errs) if error_count else None,
                   requests=n, seconds=round(seconds, 3), requests_per_s=round(n / seconds, 1),
                   late_pct=round(100 * late / n, 2), errors=errs, error_count=error_count,
                   latency_us={k: round(float(v), 1) for k, v in r["latency_us"].items()})
        return rec

    def _measure_bulk(self, sp: runner.ServerProcess) -> dict[str, Any]:
        return least_stolen(lambda: self._measure_bulk_once(sp), self.max_steal,
                            self.steal_retries, "mb_per_s")

    def _measure_bulk_once(self, sp: runner.ServerProcess) -> dict[str, Any]:
        name = content.bulk_name(self.bulk_bytes)
        rec: dict[str, Any] = {"server": sp.server.id, "workload": matrix.BULK,
                               "file": name, "size": self.bulk_bytes}
        timeout = max(60.0, self.bulk_bytes / 20e6)   # fails below 20 MB/s
        try:
            if self.warmup:   # the same warm-up for all: 1 MiB file, one connection
                runner.wrk(sp.port, "/static/1MiB.bin", 1, self.warmup)
            sp.refresh_pids()
            probe = runner.KernelProbe(sp.pids)
            m0, s0 = runner.machine_busy_ticks(), sp.cpu_ticks()
            r = runner.curl_bulk(sp.port, f"/static/{name}", timeout)
            m1, s1 = runner.machine_busy_ticks(), sp.cpu_ticks()
            # per 1448-byte segment of the body, not per request
            diag = probe.delta(max(1, self.bulk_bytes // 1448))
            rss = sp.rss_kib()
        except (RuntimeError, OSError, ValueError) as exc:
            rec.update(status="failed", reason=f"client failed: {exc}")
            return rec
        # the download is the check: its status and its byte count
        rec["check"] = {"path": f"/static/{name}", "status": r["status"], "bytes": r["bytes"],
                        "body_ok": r["status"] == 200 and r["bytes"] == self.bulk_bytes}
        if r["status"] != 200 or r["bytes"] != self.bulk_bytes:
            why = "timed out" if r["rc"] == 28 else f"curl exit {r['rc']}"
            rec.update(status="failed",
                       reason=f"status {r['status']}, {r['bytes']} of {self.bulk_bytes} bytes "
                              f"in {r['seconds']:.1f} s ({why})")
            return rec
        gib = r["bytes"] / (1 << 30)
        note = None
        limit = matrix.fast_path_max_file_size() if sp.server.fast_path else None
        if limit is not None and self.bulk_bytes > limit:
            note = (f"{name} is above add_static's max_file_size ({limit >> 20} MiB): "
                    "aiohttp serves it, not the fast path")
        rec.update(status="ok", reason=note, bytes=r["bytes"], seconds=round(r["seconds"], 3),
                   mb_per_s=round(r["bytes_per_s"] / 1e6, 1),
                   cpu_s_per_gib={"server": round((s1 - s0) / runner.CLK_TCK / gib, 3),
                                  "machine": round((m1 - m0) / runner.CLK_TCK / gib, 3)},
                   rss_mib=round(rss / 1024, 1), diag=diag)
        return rec


def steal_pct(rec: dict[str, Any]) -> float:
    """The most of one CPU (client's or server's) other guests of the host
    took while ``rec`` was measured, in percent (0 when not read)."""
    return max((rec.get("diag") or {}).get("steal_pct") or [0.0])


def least_stolen(measure: Callable[[], dict[str, Any]], max_steal: float, retries: int,
                 metric: str) -> dict[str, Any]:
    """``measure()``, again while the host's other guests took more than
    ``max_steal`` percent of a CPU during it, at most ``retries`` more
    times; the least stolen measurement is returned (the earliest of
    equals), with the others summarised in its ``steal_discarded``.  A
    failed measurement is returned as it is."""
    tries: list[dict[str, Any]] = []
    while True:
        rec = measure()
        if rec["status"] != "ok" or max_steal <= 0:
            return rec
        tries.append(rec)
        if steal_pct(rec) <= max_steal or len(tries) > retries:
            break
        progress(f"           steal {steal_pct(rec):.0f}% > {max_steal:g}% "
                 f"({rec.get(metric, 0):,.0f} {'MB/s' if metric == 'mb_per_s' else 'req/s'})"
                 ": measured again")
    best = min(tries, key=steal_pct)
    others = [r for r in tries if r is not best]
    if others:
        best["steal_discarded"] = [{metric: r[metric], "steal_pct": r["diag"]["steal_pct"]}
                                   for r in others]
    return best


@dataclasses.dataclass
class _StepRuns:
    """What the runs of one step have measured so far."""
    runs: dict[int | None, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)
    rate_done: bool = False


# ---- several runs of one cell -> one record -------------------------------------------

def _spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": round(statistics.median(values), 2),
            "max": max(values)}


def _run_summary(r: dict[str, Any], metric: str) -> dict[str, Any]:
    """What one run (one server process) of a cell measured, for the
    record's ``runs`` list."""
    out: dict[str, Any] = {"status": r["status"]}
    if r.get("reason"):
        out["reason"] = r["reason"]
    if r["status"] == "ok":
        out[metric] = r[metric]
        if metric == "requests_per_s":
            cpu = r["cpu_us_per_request"]
            out.update(server_cpu_us_per_request=cpu["server"],
                       client_cpu_us_per_request=cpu["client"],
                       client_busy_pct=r["cpu_pct"]["client"],
                       p50_us=r["latency_us"]["p50"], p99_us=r["latency_us"]["p99"])
        else:
            out["server_cpu_s_per_gib"] = r["cpu_s_per_gib"]["server"]
    for key in ("check", "stop_note", "diag", "steal_discarded"):
        if r.get(key) is not None:
            out[key] = r[key]
    return out


def aggregate(recs: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """One cell's record from its runs (each in a fresh server process):
    ``metric`` and the server CPU per request (per GiB for bulk) are the
    medians, with min/median/max in ``spread``; latency, client CPU, RSS and
    the rest come from the median run (the lower of the middle two for an
    even count); ``runs`` lists every run."""
    ok = [r for r in recs if r["status"] == "ok"]
    failed = [r for r in recs if r["status"] != "ok"]
    summaries = [_run_summary(r, metric) for r in recs]
    if not ok:
        out = {k: v for k, v in recs[0].items() if k not in ("diag", "check")}
        out.update(run_count=len(recs), runs=summaries)
        return out
    ok_sorted = sorted(ok, key=lambda r: r[metric])
    out = {k: v for k, v in ok_sorted[(len(ok) - 1) // 2].items()
           if k not in ("diag", "check", "stop_note", "steal_discarded")}
    cpu_key = "cpu_us_per_request" if metric == "requests_per_s" else "cpu_s_per_gib"
    values = [r[metric] for r in ok]
    cpu = [r[cpu_key]["server"] for r in ok]
    out[metric] = round(statistics.median(values), 1)
    out[cpu_key] = dict(out[cpu_key], server=round(statistics.median(cpu), 3))
    out["spread"] = {metric: _spread(values), "server_cpu": _spread(cpu)}
    out["run_count"] = len(recs)
    out["runs"] = summaries
    out["steal_remeasured"] = sum(len(r.get("steal_discarded", ())) for r in recs)
    notes = [out.get("reason")] if out.get("reason") else []
    if failed:
        notes.append(f"{len(failed)} of {len(recs)} runs failed: {failed[0]['reason']}")
    stops = [r["stop_note"] for r in recs if r.get("stop_note")]
    if stops:
        out["stop_note"] = stops[0] + (f" ({len(stops)} of {len(recs)} runs)"
                                       if len(recs) > 1 else "")
    out["reason"] = "; ".join(notes) or None
    return out


def _errors_text(errs: dict[str, int]) -> str:
    parts = [f"{v} {'non-2xx/3xx' if k == 'status' else k + ' errors'}"
             for k, v in errs.items() if v]
    return ", ".join(parts) or "no errors"


def _check_tools() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, XDP, AF_XDP): run it as root"
    for tool in ("wrk", "curl", "taskset", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (see the Makefile's APT_PACKAGES)"
    return None


def _xdp_in_use() -> str | None:
    """Why the bypass rows cannot run now, when an XDP program (another
    specloop process?) already sits on the lab's server interface."""
    info = (netlab.status()["namespaces"] or {}).get(netlab.SERVER_NS)  # type: ignore[union-attr]
    link = info and info.get("link")
    if link and link.get("xdp_attached"):
        return (f"an XDP program is already attached to {netlab.SERVER_IF} in "
                f"{netlab.SERVER_NS} (another specloop server on this lab?); stop it first")
    return None


def main(argv: Sequence[str]) -> int:
    argv = list(argv)
    if argv[:1] == ["--"]:   # `specloop bench -- --quick`: the CLI passes the "--" on
        argv = argv[1:]
    args = parse_args(argv)
    mode = MODES["smoke" if args.smoke else "quick" if args.quick else "default"]
    try:
        run = Run(args, mode)
    except ValueError as exc:
        print(f"specloop bench: {exc}", file=sys.stderr)
        return 2
    if args.list:
        for s in matrix.discover():
            print(f"{s.id:<28} {s.label:<34} {s.unavailable or ''}")
        print("workloads:", ", ".join(matrix.WORKLOAD_IDS))
        return 0
    problem = _check_tools()
    if problem is None and matrix.WEBSOCKET_IDS & set(run.workloads) and any(
            not st.skip and st.workload in matrix.WEBSOCKET_IDS for st in run.steps):
        try:
            runner.ws_load_binary()
        except RuntimeError as exc:
            problem = f"{exc} (the client of {', '.join(sorted(matrix.WEBSOCKET_IDS))})"
    if problem:
        print(f"specloop bench: {problem}", file=sys.stderr)
        return 2

    started = _dt.datetime.now(_dt.timezone.utc)
    out = args.out or HERE / "results" / started.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    progress(f"specloop bench ({mode.name}): {len(run.servers)} servers, "
             f"workloads {', '.join(run.workloads)}, connections "
             f"{', '.join(map(str, run.connections))}")
    progress(f"plan: {run.cells()} cells in {sum(1 for s in run.steps if not s.skip)} "
             f"server starts, warm-up {run.warmup} s + {run.duration} s measured per cell, "
             f"bulk {run.bulk_bytes >> 20} MiB; estimated {fmt_clock(run.estimate())} "
             f"(budget {fmt_clock(mode.budget_s)})")
    progress(f"pinning: server on CPU {runner.SERVER_CPU}, client (wrk -t1, curl) on CPU "
             f"{runner.CLIENT_CPU}; output {out}")

    built = not netlab.is_up()
    lab = netlab.up()
    busy = _xdp_in_use()
    if busy:
        if built:
            netlab.down()
        print(f"specloop bench: {busy}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    try:
        files = content.ensure(args.static_dir,
                               run.bulk_bytes if matrix.BULK in run.workloads else None)
        background = {"before_pct": runner.background_busy()}
        ceiling_data: dict[str, Any] | None = None
        progress(f"background load: {background['before_pct']:.0f}% of one CPU busy with "
                 "other work before the run")
        with tempfile.TemporaryDirectory(prefix="specloop-bench-") as tmp:
            run.execute(args.static_dir, pathlib.Path(tmp))
            if matrix.CEILING in run.workloads:
                progress(f"transport ceiling: {len(ceiling.MODES)} TX mechanisms, "
                         f"{run.ceiling_seconds:g} s each")
                ceiling_data = ceiling.measure(pathlib.Path(tmp), run.ceiling_seconds,
                                               progress)
                if not ceiling_data["measured"]:
                    progress(f"           ceiling: {ceiling_data['reason']}")
        background["after_pct"] = runner.background_busy()
    finally:
        if built:
            netlab.down()
    elapsed = time.monotonic() - t0

    data = report.build(
        command="specloop bench" + "".join(" " + shlex.quote(a) for a in argv),
        started=started, elapsed=elapsed, mode=mode.name, lab=lab, run=run, files=files,
        background=background, ceiling=ceiling_data)
    md = report.write(data, out, json_path=args.json)
    print(md)
    progress(f"done in {fmt_clock(elapsed)}: {out / 'report.md'}, {out / 'results.json'}"
             + (f", {args.json}" if args.json else ""))
    if args.readme:
        report.publish(data, out, HERE / "latest", HERE.parent / "README.md")
        progress("README.md and benchmarks/latest/ updated")
    return 0
