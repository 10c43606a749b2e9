"""The results of a run: JSON, a markdown report with ratios, PNG plots,
and (``--readme``) the README's benchmark section."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import pathlib
import platform
import re
import shutil
import subprocess
from typing import TYPE_CHECKING, Any, Iterable, Protocol, Sequence

from . import content, matrix, runner

if TYPE_CHECKING:
    from specloop.netlab import Lab


class Run(Protocol):
    """What build() reads of a run (suite.Run has it; report.py does not
    import suite.py, which imports this module)."""
    warmup: int
    duration: int
    connections: tuple[int, ...]
    bulk_bytes: int
    steps: list[matrix.Step]
    servers: list[matrix.Server]
    workloads: list[str]
    results: list[dict[str, Any]]
    bulk: list[dict[str, Any]]
    rate: int
    rate_results: list[dict[str, Any]]
    runs: int               # fresh server processes per cell (--runs)
    fast_path_runs: int     # at least this many for rows whose speed varies

SCHEMA = 2   # 2: nginx configurations, runs, spread, cpu_ratio, ceiling
README_BEGIN = "<!-- specloop-bench:begin -->"
README_END = "<!-- specloop-bench:end -->"
PLOTS = ("throughput.png", "latency.png", "bulk.png")

CONSTANT_RATE_METHOD = (
    "Open loop, wrk2's idea with wrk 4.1 (Debian 12 has no wrk2): {rate:,} requests/s in "
    "all over {conns} connections, one wrk thread each, so that benchmarks/wrk_rate.lua "
    "keeps each connection's send schedule whatever the server does. A request's latency "
    "counts from the moment its slot came: when the answer to the previous one was late "
    "and the slot had passed, that wait is part of it (the coordinated omission a "
    "closed-loop client hides); late %: requests sent after their slot. The first quarter "
    "of each cell (at most 1 s) lets the new connections settle and is not counted. The "
    "latencies above are wrk's closed-loop ones (each connection sends when the previous "
    "answer is in).")
CONSTANT_RATE_NONE = "not measured in this run (--rate 0, or no workload with a constant-rate cell)."


# ---- what the run was, on what -------------------------------------------------------

def _cmd_output(argv: Sequence[str]) -> str:
    try:
        p = subprocess.run(list(argv), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (p.stdout + p.stderr).strip()


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    os_name = ""
    try:
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    root = pathlib.Path(__file__).resolve().parent.parent
    commit = _cmd_output(["git", "-C", str(root), "rev-parse", "--short", "HEAD"])
    dirty = _cmd_output(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"])
    nginx = re.search(r"nginx/(\S+)", _cmd_output(["nginx", "-v"]))
    wrk = re.search(r"wrk (?:debian/)?(\S+)", _cmd_output(["wrk", "-v"]))
    curl = re.search(r"curl (\S+)", _cmd_output(["curl", "--version"]))
    return {
        "cpu": cpu, "cpus": os.cpu_count(), "memory_gib": round(mem_kib / (1 << 20), 1),
        "kernel": platform.release(), "os": os_name,
        "python": platform.python_version(),
        "versions": {
            "specloop": (commit + ("+dirty" if dirty else "")) if commit else _version("specloop"),
            "aiohttp": _version("aiohttp"), "uvloop": _version("uvloop"),
            "nginx": nginx.group(1) if nginx else None,
            "wrk": wrk.group(1) if wrk else None, "curl": curl.group(1) if curl else None,
        },
    }


def build(*, command: str, started: _dt.datetime, elapsed: float, mode: str, lab: "Lab",
          run: "Run", files: dict[str, int],
          background: dict[str, float] | None = None,
          ceiling: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything the run found, as one JSON-able dict (ratios included)."""
    best_cells = _add_ratios(run.results, "requests_per_s", ("workload", "connections"),
                             run.servers)
    best_bulk = _add_ratios(run.bulk, "mb_per_s", ("workload",), run.servers)
    return {
        "schema": SCHEMA,
        "date": started.isoformat(timespec="seconds"),
        "command": command,
        "mode": mode,
        "elapsed_s": round(elapsed, 1),
        "machine": machine_info(),
        # percent of one CPU busy with other work, sampled 1 s with nothing of ours running
        "background_load": background or {},
        "settings": {
            "warmup_s": run.warmup, "duration_s": run.duration,
            "connections": list(run.connections), "bulk_bytes": run.bulk_bytes,
            "extra_app_connections": sorted({c for st in run.steps if not st.server.core
                                             for c in st.connections}),
            "client": f"wrk 4.1 -t1 --latency --timeout {runner.WRK_TIMEOUT} (bulk: curl"
                      + ("; ws-echo: benchmarks/ws_load.c" if matrix.WEBSOCKET_IDS
                         & set(run.workloads) else "") + ")",
            "pinning": {"server_cpu": runner.SERVER_CPU, "client_cpu": runner.CLIENT_CPU,
                        "how": "taskset -c"},
            "lab": {"server_ns": lab.server_ns, "client_ns": lab.client_ns,
                    "server_if": lab.server_if, "client_if": lab.client_if,
                    "server_ip": lab.server_ip, "mtu": lab.mtu, "queues": lab.queues},
            "files": files,
            "runs": run.runs,
            "fast_path_runs": run.fast_path_runs,
            "max_steal_pct": run.max_steal, "steal_retries": run.steal_retries,
            "thp": runner.thp_mode(),
            "references": {"nginx": "the fastest of: " + ", ".join(
                               sid for sid, _, _ in matrix.NGINX_CONFIGS),
                           "uvloop": "the same app on uvloop (nginx: "
                                     f"{matrix.REF_UVLOOP})"},
            # per cell, the nginx configuration that was fastest: "nginx" there
            "nginx_best": best_cells + best_bulk,
        },
        "servers": [{"id": s.id, "label": s.label, "kind": s.kind, "app": s.app,
                     "loop": s.loop, "bypass": s.bypass, "fast_path": s.fast_path,
                     "static": s.static, "unavailable": s.unavailable,
                     "uvloop_ref": s.uvloop_ref,
                     "nginx": dict(s.nginx) if s.nginx else None}
                    for s in run.servers],
        "workloads": [{"id": w.id, "label": w.label, "path": w.path, "size": w.size,
                       "client": w.client}
                      for w in matrix.WORKLOADS if w.id in run.workloads]
                     + ([{"id": matrix.BULK, "label": "single-flow bulk goodput",
                          "path": "/static/" + _bulk_file(run), "size": run.bulk_bytes}]
                        if matrix.BULK in run.workloads else []),
        "results": run.results,
        "bulk": run.bulk,
        "constant_rate": _constant_rate(run),
        "ceiling": ceiling or {"measured": False, "reason": CEILING_NONE},
        "plots": [],
    }


CEILING_NONE = "not measured in this run (the `ceiling` workload was not selected)."


def _constant_rate(run: "Run") -> dict[str, Any]:
    # p50 latency over the reference's, per workload (below 1: lower latency);
    # nginx: its configuration with the lowest p50 for the workload
    nginx_ids = {s.id for s in run.servers if s.kind == "nginx"}
    refs: dict[tuple[str, str], float] = {}
    for r in run.rate_results:
        if r["status"] != "ok":
            continue
        p50 = r["latency_us"]["p50"]
        if r["server"] in nginx_ids:
            key = (r["workload"], "nginx")
            refs[key] = min(p50, refs.get(key, p50))
        elif r["server"] == matrix.REF_UVLOOP:
            refs[(r["workload"], "uvloop")] = p50
    for r in run.rate_results:
        r["ratio"] = {name: (round(r["latency_us"]["p50"] / refs[(r["workload"], name)], 3)
                             if r["status"] == "ok" and refs.get((r["workload"], name))
                             else None)
                      for name in ("nginx", "uvloop")}
    measured = any(r["status"] == "ok" for r in run.rate_results)
    return {"measured": measured, "rate": run.rate, "connections": matrix.RATE_CONNECTIONS,
            "reason": (CONSTANT_RATE_METHOD.format(rate=run.rate, conns=matrix.RATE_CONNECTIONS)
                       if run.rate_results else CONSTANT_RATE_NONE),
            "results": run.rate_results}


def _bulk_file(run: "Run") -> str:
    return content.bulk_name(run.bulk_bytes)


def _server_cpu(r: dict[str, Any]) -> float | None:
    cpu = r.get("cpu_us_per_request") or r.get("cpu_s_per_gib") or {}
    return cpu.get("server")


def _add_ratios(records: list[dict[str, Any]], metric: str, key: tuple[str, ...],
                servers: Sequence[matrix.Server]) -> list[dict[str, Any]]:
    """Each record's ``ratio`` (its ``metric`` over the reference's) and
    ``cpu_ratio`` (its server CPU per request over the reference's), against
    "nginx" (the fastest nginx configuration in the same cell) and "uvloop"
    (the same app on uvloop in the same cell); ``refs`` names the rows.
    Returns, per cell, which nginx configuration was the fastest."""
    by_id = {s.id: s for s in servers}
    ok = [r for r in records if r.get("status") == "ok"]
    cell = {id(r): tuple(r[k] for k in key) for r in records}
    best: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in ok:
        s = by_id.get(r["server"])
        if s is not None and s.kind == "nginx":
            b = best.get(cell[id(r)])
            if b is None or r[metric] > b[metric]:
                best[cell[id(r)]] = r
    rows = {(cell[id(r)], r["server"]): r for r in ok}
    for r in records:
        s = by_id.get(r["server"])
        refs = {"nginx": best.get(cell[id(r)]),
                "uvloop": rows.get((cell[id(r)], s.uvloop_ref if s else matrix.REF_UVLOOP))}
        r["refs"] = {name: (ref["server"] if ref else None) for name, ref in refs.items()}
        if r.get("status") != "ok":
            r["ratio"] = {"nginx": None, "uvloop": None}
            r["cpu_ratio"] = {"nginx": None, "uvloop": None}
            continue
        r["ratio"] = {name: (round(r[metric] / ref[metric], 3) if ref and ref[metric] else None)
                      for name, ref in refs.items()}
        cpu = _server_cpu(r)
        r["cpu_ratio"] = {name: (round(cpu / _server_cpu(ref), 3)
                                 if ref and cpu is not None and _server_cpu(ref) else None)
                          for name, ref in refs.items()}
        if s is not None and s.kind == "nginx":
            r["nginx_best"] = best.get(cell[id(r)]) is r
    return [dict(zip(key, k), server=r["server"]) for k, r in best.items()]


# ---- markdown -----------------------------------------------------------------------------

LEFT = ("server", "note", "TX mechanism", "against")   # left-aligned columns


def md_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GitHub markdown table; "server", "server · …" and "note" columns
    left-aligned,
    numbers right-aligned."""
    def cell(x: str) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")
    out = ["| " + " | ".join(cell(h) for h in headers) + " |",
           "|" + "|".join("---" if h in LEFT or h.startswith("server ·")
                          else "---:" for h in headers) + "|"]
    for row in rows:
        assert len(row) == len(headers), (headers, row)
        out.append("| " + " | ".join(cell(x) for x in row) + " |")
    return "\n".join(out)


def sig(x: float | None) -> str:
    """Three significant digits; thousands with separators."""
    if x is None:
        return "—"
    if x == 0:
        return "0"
    if abs(x) >= 999.5:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def _ms(us: float | None) -> str:
    return "—" if us is None else sig(us / 1000)


def _ratio(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


CLIENT_BOUND_PCT = 90   # wrk busier than this: the client is the limit, CPU/request tells
SEGMENT = 1448          # payload bytes per TCP segment on the lab (MSS with timestamps)


def _labels(data: dict[str, Any]) -> dict[str, str]:
    return {s["id"]: s["label"] for s in data["servers"]}


def _order(data: dict[str, Any]) -> list[str]:
    return [s["id"] for s in data["servers"]]


def _nginx_ids(data: dict[str, Any]) -> list[str]:
    return [s["id"] for s in data["servers"] if s["kind"] == "nginx"]


def _cells(data: dict[str, Any], wid: str, c: int) -> list[dict[str, Any]]:
    by = {r["server"]: r for r in data["results"]
          if r["workload"] == wid and r.get("connections") == c}
    return [by[s] for s in _order(data) if s in by]


def _label(data: dict[str, Any], r: dict[str, Any]) -> str:
    """The row's label; the fastest nginx configuration of a cell is "nginx"."""
    label = _labels(data)[r["server"]]
    if r.get("nginx_best"):
        return f"nginx ★ ({label.split(' · ', 1)[-1]})"
    return label


def _note(r: dict[str, Any]) -> str:
    notes = [r.get("reason") or ""] if r["status"] == "ok" else [f"{r['status']}: {r['reason']}"]
    if r.get("stop_note"):
        notes.append("server " + r["stop_note"])
    return "; ".join(n for n in notes if n)


def _client_bound(r: dict[str, Any]) -> bool:
    return (r.get("cpu_pct") or {}).get("client", 0) >= CLIENT_BOUND_PCT


def _k(x: float) -> str:
    """Compact: 45.1k, 950, 3.2."""
    return f"{x / 1000:.3g}k" if abs(x) >= 10_000 else sig(x)


def _range(r: dict[str, Any], key: str) -> str:
    """min–max over the cell's runs (fresh server processes), "" for one run."""
    sp = (r.get("spread") or {}).get(key)
    if not sp or r.get("run_count", 1) < 2:
        return ""
    return f"{_k(sp['min'])}–{_k(sp['max'])}"


def _websocket(data: dict[str, Any], wid: str) -> bool:
    """Whether the workload is a WebSocket one (ws_load's messages, not
    wrk's requests)."""
    return any(w["id"] == wid and w.get("client") == "ws_load" for w in data["workloads"])


def _unit(data: dict[str, Any], wid: str) -> str:
    return "msg" if _websocket(data, wid) else "req"


def cell_table(data: dict[str, Any], wid: str, c: int) -> str:
    rows = []
    for r in _cells(data, wid, c):
        label = _label(data, r)
        if r["status"] != "ok":
            rows.append([label] + ["—"] * 13 + [_note(r)])
            continue
        lat, cpu = r["latency_us"], r["cpu_us_per_request"]
        client = r.get("cpu_pct", {}).get("client")
        n = r.get("run_count", 1)
        spread = _range(r, "requests_per_s")
        cpu_spread = _range(r, "server_cpu")
        rows.append([label, f"{r['requests_per_s']:,.0f}",
                     f"{spread} ({n})" if spread else "",
                     _ratio(r["ratio"]["nginx"]), _ratio(r["ratio"]["uvloop"]),
                     _ms(lat["p50"]), _ms(lat["p99"]), _ms(lat["p999"]),
                     sig(cpu["server"]) + (f" ({cpu_spread})" if cpu_spread else ""),
                     _ratio(r["cpu_ratio"]["nginx"]), _ratio(r["cpu_ratio"]["uvloop"]),
                     sig(cpu["machine"]),
                     "—" if client is None else f"{client:.0f}", sig(r["rss_mib"]), _note(r)])
    u = _unit(data, wid)
    return md_table(["server", f"{u}/s", "min–max (runs)", "×nginx", "×uvloop", "p50 ms",
                     "p99 ms", "p99.9 ms", f"server CPU µs/{u}", "CPU ×nginx", "CPU ×uvloop",
                     f"machine CPU µs/{u}", "client busy %", "RSS MiB", "note"], rows)


def bulk_table(data: dict[str, Any]) -> str:
    by = {r["server"]: r for r in data["bulk"]}
    rows = []
    for sid in _order(data):
        r = by.get(sid)
        if r is None:
            continue
        label = _label(data, r)
        if r["status"] != "ok":
            rows.append([label] + ["—"] * 9 + [_note(r)])
            continue
        cpu = r["cpu_s_per_gib"]
        spread = _range(r, "mb_per_s")
        rows.append([label, sig(r["mb_per_s"]),
                     f"{spread} ({r.get('run_count', 1)})" if spread else "",
                     _ratio(r["ratio"]["nginx"]), _ratio(r["ratio"]["uvloop"]),
                     sig(r["seconds"]), sig(cpu["server"]), _ratio(r["cpu_ratio"]["nginx"]),
                     sig(cpu["machine"]), sig(r["rss_mib"]), _note(r)])
    return md_table(["server", "MB/s", "min–max (runs)", "×nginx", "×uvloop", "seconds",
                     "server CPU s/GiB", "CPU ×nginx", "machine CPU s/GiB", "RSS MiB",
                     "note"], rows)


def rate_table(data: dict[str, Any]) -> str:
    """The constant-rate cells: achieved rate and corrected latency."""
    labels = _labels(data)
    rows = []
    for wl in data["workloads"]:
        by = {r["server"]: r for r in data["constant_rate"]["results"]
              if r["workload"] == wl["id"]}
        for sid in _order(data):
            r = by.get(sid)
            if r is None:
                continue
            name = f"{labels[sid]} · {_short(wl['id'])}"
            if r["status"] != "ok":
                rows.append([name] + ["—"] * 7 + [_note(r)])
                continue
            lat = r["latency_us"]
            rows.append([name, f"{r['requests_per_s']:,.0f}", sig(r["late_pct"]),
                         sig(lat["p50"] / 1000), sig(lat["p90"] / 1000), sig(lat["p99"] / 1000),
                         sig(lat["p999"] / 1000), _ratio(r["ratio"]["nginx"]), _note(r)])
    return md_table(["server", "req/s", "late %", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms",
                     "p50 ×nginx", "note"], rows)


def _conns_of(data: dict[str, Any], wid: str) -> list[int]:
    return sorted({r["connections"] for r in data["results"] if r["workload"] == wid})


def _best_nginx_row(data: dict[str, Any], records: list[dict[str, Any]]
                    ) -> dict[str, Any] | None:
    return next((r for r in records if r.get("nginx_best")), None)


def workload_table(data: dict[str, Any], wid: str) -> str:
    """One row per server, per connection count: req/s (×nginx) with the
    min–max of its runs, and server CPU µs/request (×nginx). The first
    nginx row is "nginx": the fastest configuration of each cell.  A
    WebSocket workload shows msg/s and µs/msg, against the same app on
    uvloop (no nginx speaks WebSocket here)."""
    labels = _labels(data)
    conns = _conns_of(data, wid)
    recs = {(r["server"], r["connections"]): r for r in data["results"] if r["workload"] == wid}
    ref = "uvloop" if _websocket(data, wid) else "nginx"
    u = _unit(data, wid)
    headers = ["server"]
    for c in conns:
        headers += [f"c={c} {u}/s", f"c={c} µs/{u}"]
    rows = []
    nginx_ids = _nginx_ids(data)
    for sid in _order(data):
        mine = [recs[(sid, c)] for c in conns if (sid, c) in recs]
        if not mine or all(r["status"] == "skipped" for r in mine):
            continue   # not run here (the cell tables say why)
        if nginx_ids and sid == nginx_ids[0]:
            row = ["nginx (fastest configuration per cell)"]
            for c in conns:
                best = _best_nginx_row(data, [recs[(n, c)] for n in nginx_ids
                                              if (n, c) in recs])
                if best is None:
                    row += ["", ""]
                    continue
                which = labels[best["server"]].split(" · ", 1)[-1]
                row += [_rq_cell(best, ratio=False) + f" [{which}]",
                        _cpu_cell(best, ratio=False)]
            rows.append(row)
        row = [labels[sid]]
        for c in conns:
            r = recs.get((sid, c))
            row += [_rq_cell(r, ref=ref), _cpu_cell(r, ref=ref)]
        rows.append(row)
    return md_table(headers, rows)


def _rq_cell(r: dict[str, Any] | None, ratio: bool = True, ref: str = "nginx") -> str:
    if r is None:
        return ""
    if r["status"] != "ok":
        return "n/a" if r["status"] == "skipped" else "failed"
    s = f"{r['requests_per_s']:,.0f}"
    if ratio and r["ratio"][ref] is not None:
        s += f" ({r['ratio'][ref]:.2f}×)"
    spread = _range(r, "requests_per_s")
    if spread:
        s += f" [{spread}]"
    if _client_bound(r):
        s += " ‡"
    return s


def _cpu_cell(r: dict[str, Any] | None, ratio: bool = True, ref: str = "nginx") -> str:
    if r is None or r["status"] != "ok":
        return ""
    s = sig(r["cpu_us_per_request"]["server"])
    if ratio and r["cpu_ratio"][ref] is not None:
        s += f" ({r['cpu_ratio'][ref]:.2f}×)"
    return s


def bulk_summary_table(data: dict[str, Any]) -> str:
    labels = _labels(data)
    by = {r["server"]: r for r in data["bulk"]}
    rows = []
    nginx_ids = _nginx_ids(data)
    for sid in _order(data):
        r = by.get(sid)
        if r is None:
            continue
        if nginx_ids and sid == nginx_ids[0]:
            best = _best_nginx_row(data, [by[n] for n in nginx_ids if n in by])
            if best is not None:
                which = labels[best["server"]].split(" · ", 1)[-1]
                rows.append(["nginx (fastest configuration)",
                             f"{sig(best['mb_per_s'])} [{which}]",
                             sig(best["cpu_s_per_gib"]["server"])])
        if r["status"] != "ok":
            rows.append([labels[sid], "n/a" if r["status"] == "skipped" else "failed", ""])
            continue
        s = sig(r["mb_per_s"])
        if r["ratio"]["nginx"] is not None:
            s += f" ({r['ratio']['nginx']:.2f}×)"
        spread = _range(r, "mb_per_s")
        if spread:
            s += f" [{spread}]"
        cpu = sig(r["cpu_s_per_gib"]["server"])
        if r["cpu_ratio"]["nginx"] is not None:
            cpu += f" ({r['cpu_ratio']['nginx']:.2f}×)"
        rows.append([labels[sid], s, cpu])
    return md_table(["server", "MB/s", "server CPU s/GiB"], rows)


SUMMARY_KEY = (
    "req/s: the median over the cell's runs; (n×): against nginx at its best, the fastest "
    "of its configurations in the same cell, whose row is \"nginx\" [with that "
    "configuration]; [min–max]: over fresh server processes where a row ran several "
    "(`--runs`, `--fast-path-runs`); ‡: wrk's one client core was the limit (busy ≥ "
    f"{CLIENT_BOUND_PCT}%), so the server's CPU per request is the figure to compare. "
    "µs/req: the server processes' utime+stime (/proc/PID/stat) per request, (n×) against "
    "that same nginx.")


WEBSOCKET_KEY = (
    "msg/s: WebSocket messages echoed per second, closed loop: each connection sends "
    "\"Hello, world!\" in a masked frame, waits for the whole echo, checks it byte for byte "
    "and sends the next (benchmarks/ws_load.c; a wrong echo or handshake fails the cell). "
    "**(n×) here is against {refs}, the same server on uvloop in the same cell, not nginx**: "
    "no nginx row speaks WebSocket, and issue 14 compares the bypass with uvloop. µs/msg: the "
    "server processes' utime+stime per message, (n×) against that same uvloop row; ‡: "
    "ws_load's one client core was the limit (busy ≥ {pct}%).")


def _websocket_key(data: dict[str, Any], wid: str) -> str:
    labels = _labels(data)
    by = {s["id"]: s for s in data["servers"]}
    refs = sorted({by[r["server"]]["uvloop_ref"] for r in data["results"]
                   if r["workload"] == wid and r["server"] in by})
    return WEBSOCKET_KEY.format(refs=", ".join(f"\"{labels.get(x, x)}\"" for x in refs)
                                or "the uvloop row", pct=CLIENT_BOUND_PCT)


def summary(data: dict[str, Any]) -> list[str]:
    """The per-workload tables (every connection count): report.md's summary
    and README's section."""
    out: list[str] = [SUMMARY_KEY, ""]
    for w in data["workloads"]:
        if w["id"] == matrix.BULK:
            continue
        if not any(r["workload"] == w["id"] for r in data["results"]):
            continue
        out += [f"**{w['label']}**", ""]
        if _websocket(data, w["id"]):
            out += [_websocket_key(data, w["id"]), ""]
        out += [workload_table(data, w["id"]), ""]
    if data["bulk"]:
        out += [f"**bulk: one flow, {data['settings']['bulk_bytes'] >> 20} MiB**", "",
                bulk_summary_table(data), ""]
    return out


def _short(wid: str) -> str:
    return {"hello": "hello", "static-64": "64 B", "static-8k": "8 KiB",
            "static-1m": "1 MiB", "ws-echo": "ws echo"}.get(wid, wid)


# ---- the bypass against uvloop (issue 14) --------------------------------------------

def uvloop_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Per bypass row and workload: its req/s and server CPU per request over
    the same app's on uvloop at each connection count, and why a cell is
    below 1.0 where the measurement says (the client the limit, or the
    server's CPU per request)."""
    labels = _labels(data)
    out = []
    for s in data["servers"]:
        if not s["bypass"]:
            continue
        for w in data["workloads"]:
            recs = sorted((r for r in data["results"] if r["server"] == s["id"]
                           and r["workload"] == w["id"]), key=lambda r: r["connections"])
            if not recs or all(r["status"] == "skipped" for r in recs):
                continue
            cells, why = {}, []
            for r in recs:
                c = r["connections"]
                ref = r.get("refs", {}).get("uvloop")
                x, cpu = r["ratio"]["uvloop"], r["cpu_ratio"]["uvloop"]
                cells[c] = {"ratio": x, "cpu_ratio": cpu}
                if r["status"] != "ok":
                    why.append(f"c={c}: {r['status']}")
                elif x is None:
                    why.append(f"c={c}: no uvloop row ({s['uvloop_ref']}) measured")
                elif x < 1.0:
                    refr = next((q for q in data["results"] if q["server"] == ref
                                 and q["workload"] == w["id"] and q["connections"] == c), {})
                    busy = r.get("cpu_pct", {}).get("client")
                    server_busy = (r["cpu_us_per_request"]["server"] * r["requests_per_s"]
                                   / 1e4)
                    if _client_bound(r):
                        client = "ws_load" if _websocket(data, w["id"]) else "wrk"
                        why.append(f"c={c}: {client}-bound (client {busy:.0f}% busy); server "
                                   f"CPU/req {_ratio(cpu)}× uvloop's")
                    else:
                        lat, rl = r["latency_us"]["p50"], (refr.get("latency_us") or {})
                        why.append(f"c={c}: server CPU/req {_ratio(cpu)}× uvloop's "
                                   f"({sig(r['cpu_us_per_request']['server'])} against "
                                   f"{sig((refr.get('cpu_us_per_request') or {}).get('server'))}"
                                   f" µs), server {server_busy:.0f}% and client "
                                   f"{busy or 0:.0f}% busy, p50 {_ms(lat)} against "
                                   f"{_ms(rl.get('p50'))} ms")
            out.append({"server": s["id"], "label": labels[s["id"]], "workload": w["id"],
                        "against": s["uvloop_ref"], "cells": cells, "note": "; ".join(why)})
    return out


def uvloop_table(data: dict[str, Any]) -> str:
    rows = uvloop_rows(data)
    conns = sorted({c for r in rows for c in r["cells"]})
    labels = _labels(data)
    table = []
    for r in rows:
        line = [f"{r['label']} · {_short(r['workload'])}", labels.get(r["against"], r["against"])]
        for c in conns:
            cell = r["cells"].get(c)
            if cell is None:
                line.append("")
            elif cell["ratio"] is None:
                line.append("—")
            else:
                line.append(f"{cell['ratio']:.2f}× · CPU {_ratio(cell['cpu_ratio'])}×")
        line.append(r["note"])
        table.append(line)
    return md_table(["server", "against"] + [f"c={c}" for c in conns] + ["note"], table)


# ---- the runs of rows with several (the "two speeds") -------------------------------

def _pair(xs: Sequence[float] | None) -> str:
    return "/".join(sig(x) for x in xs) if xs else "—"


def _umem(diag: dict[str, Any]) -> str:
    maps = diag.get("anon_maps")
    if maps is None:
        return "—"
    if not maps:
        return "none found"
    return ", ".join(f"{m['kib'] >> 10} MiB: {m.get('anon_huge_kib', 0) >> 10} MiB THP"
                     for m in maps)


def runs_table(data: dict[str, Any]) -> str:
    """Every run (fresh server process) of the cells that had several: the
    candidates for a per-process speed, per CPU (CPU0/CPU1)."""
    labels = _labels(data)
    rows = []
    for r in data["results"]:
        if r.get("run_count", 1) < 2 and not r.get("steal_remeasured"):
            continue
        for i, run in enumerate(r.get("runs", ()), 1):
            name = (f"{labels[r['server']]} · {_short(r['workload'])} · "
                    f"c={r['connections']} · {i}")
            if run["status"] != "ok":
                rows.append([name] + ["—"] * 15 + [run.get("reason", run["status"])])
                continue
            d = run.get("diag") or {}
            rows.append([name, f"{run['requests_per_s']:,.0f}",
                         sig(run["server_cpu_us_per_request"]),
                         sig(run["client_cpu_us_per_request"]), f"{run['client_busy_pct']:.0f}",
                         _ms(run["p50_us"]), _pair(d.get("net_rx_per_request")),
                         _pair(d.get("res_per_request")), _pair(d.get("cal_per_request")),
                         _pair(d.get("server_ctx_switches_per_request")),
                         _pair(d.get("client_ctx_switches_per_request")),
                         _pair(d.get("softirq_pct")), _pair(d.get("ksoftirqd_pct")),
                         _pair(d.get("steal_pct")), _probe(d), _umem(d),
                         _discarded(run, "requests_per_s")])
    return md_table(["server · file · conns · run", "req/s", "server µs/req", "client µs/req",
                     "client busy %", "p50 ms", "NET_RX softirqs/req", "RES IPIs/req",
                     "CAL IPIs/req", "server cs/req", "client cs/req", "softirq %",
                     "ksoftirqd %", "steal %", "probe ns alu/chase", "big anonymous mappings "
                     "(UMEM)", "note"], rows)


def _discarded(run: dict[str, Any], metric: str) -> str:
    """The measurements of a run set aside for the host's steal."""
    unit = "MB/s" if metric == "mb_per_s" else "req/s"
    return "; ".join(f"measured again after {x[metric]:,.0f} {unit} at "
                     f"{_pair(x['steal_pct'])} % steal" for x in run.get("steal_discarded", ()))


def _probe(d: dict[str, Any]) -> str:
    p = d.get("cpu_probe_ns")
    if not p:
        return "—"
    return " · ".join(f"{a:.2f}/{c:.0f}" for a, c in p)


# ---- the transport's ceiling ---------------------------------------------------------

def ceiling_table(data: dict[str, Any]) -> str:
    rows = []
    for r in data["ceiling"].get("results", ()):
        if r["status"] != "ok":
            rows.append([r["label"]] + ["—"] * 7 + [f"failed: {r.get('reason')}"])
            continue
        rows.append([r["label"], sig(r["frames_per_s"]) if r["frames_per_s"] else "—",
                     sig(r["segments_per_s"]), f"{r['payload_gbit_s']:.2f}",
                     f"{r['server_cpu_pct']:.0f}",
                     sig(r["cpu_us_per_frame"]) if r["cpu_us_per_frame"] else "—",
                     sig(r["cpu_us_per_segment"]),
                     sig(r["delivered_pct"]) if r.get("delivered_pct") is not None else "—",
                     f"steal {r['steal_pct']:.0f}%" if r.get("steal_pct") else ""])
    return md_table(["TX mechanism", "frames (skbs)/s", "segments/s", "payload Gbit/s", "CPU %",
                     "CPU µs/frame", "CPU µs/segment", "delivered %", "note"], rows)


def _ceiling_of(data: dict[str, Any], mid: str) -> dict[str, Any] | None:
    return next((r for r in data["ceiling"].get("results", ())
                 if r["id"] == mid and r["status"] == "ok"), None)


def closeness_rows(data: dict[str, Any]) -> list[list[str]]:
    """Where the big-file cells of the rows that send bulk data stand
    against the ceilings: 1 MiB at each connection count and bulk."""
    xdp, gso, tcp = (_ceiling_of(data, m)
                     for m in ("afxdp", "packet-gso", "kernel-tcp-sendfile"))
    servers = [s["id"] for s in data["servers"] if s["bypass"] or s["kind"] == "nginx"]
    segs_1m = -(-(1 << 20) // SEGMENT)

    def pct(x: float, ref: dict[str, Any] | None) -> str:
        return f"{100 * x / ref['segments_per_s']:.0f}%" if ref else "—"

    rows = []
    for r in data["results"] + data["bulk"]:
        if r["status"] != "ok" or r["server"] not in servers:
            continue
        if r["workload"] == "static-1m":
            segs = r["requests_per_s"] * segs_1m
            cpu = r["cpu_us_per_request"]["server"] / segs_1m
            what = f"1 MiB, c={r['connections']}"
        elif r["workload"] == matrix.BULK:
            segs = r["mb_per_s"] * 1e6 / SEGMENT
            cpu = r["cpu_s_per_gib"]["server"] * 1e6 / ((1 << 30) / SEGMENT)
            what = "bulk"
        else:
            continue
        name = _label(data, r)
        rows.append([f"{name} · {what}", sig(segs), f"{segs * SEGMENT * 8 / 1e9:.2f}",
                     pct(segs, xdp), pct(segs, gso), pct(segs, tcp), sig(cpu)])
    return rows


def ceiling_section(data: dict[str, Any]) -> list[str]:
    c = data.get("ceiling") or {}
    if not c.get("measured"):
        return [c.get("reason") or CEILING_NONE, ""]
    out = [c["method"], "", ceiling_table(data), ""]
    rows = closeness_rows(data)
    if rows:
        out += ["How close the rows that send big files run to those ceilings: their payload "
                "as 1,448-byte segments per second (1 MiB: req/s × 725), against the AF_XDP "
                "copy-mode, the GSO super-frame and the kernel TCP sendfile rows above, and their "
                "server CPU per segment (compare with the ceiling's CPU µs/segment).", "",
                closeness_table(rows), ""]
    return out


def closeness_table(rows: list[list[str]]) -> str:
    return md_table(["server · cell", "segments/s", "payload Gbit/s", "of AF_XDP TX",
                     "of GSO TX", "of kernel TCP sendfile", "server CPU µs/segment"], rows)


WEBSOCKET_CELL = (
    "msg/s and µs/msg in place of req/s and µs/req: a \"request\" is one echoed message. Each "
    "cell runs benchmarks/ws_load.c in the client namespace: it opens the connections (each "
    "handshake's 101 and Sec-WebSocket-Accept checked), echoes for the warm-up, lets the "
    "messages in flight come back, and only then, every connection open and idle, are the "
    "server's CPU and the kernel's counters read and the measured seconds start; latency is "
    "each message's round trip; client busy is ws_load's own CPU over those seconds. Every "
    "echo is checked byte for byte; one wrong byte, a protocol error or a lost connection "
    "fails the cell. Every server process was first checked with one text and one binary "
    "echo. ×nginx is \"—\": no nginx row speaks WebSocket; ×uvloop is the ratio that counts.")

RUNS_KEY = (
    "Each run is a fresh server process (the fast path's speed has been seen to differ from "
    "process to process and stay for the process's life). Per CPU (CPU0/CPU1; the client "
    "runs on CPU {client}, the server on CPU {server}), over the measured seconds: NET_RX "
    "softirqs per request (/proc/softirqs: where veth's receive work ran), rescheduling and "
    "function-call IPIs per request (/proc/interrupts: wakeups across CPUs), time in softirq "
    "and in ksoftirqd (softirq work the kernel deferred to its thread), and steal (other "
    "guests on the host); per request, the server's and wrk's context switches "
    "(voluntary/involuntary). Probe: benchmarks/cpuprobe.c on each CPU just before the "
    "cell, ns per step of a multiply-add chain and of a pointer chase through 4 MiB (other "
    "guests on the host slow both without showing as steal; a slow run with a slow probe is "
    "the machine, not the server). Big anonymous mappings: the server's anonymous rw mappings of 32 "
    "MiB or more (/proc/PID/smaps; the UMEM area, 64 MiB by default, is one, often merged "
    "with a neighbour) and how much of each sits in transparent huge pages (THP setting of "
    "the machine: {thp}). Note: the measurements of the run set aside because other guests "
    "took too much of a CPU meanwhile (steal, see the header); a cell of a single-run row "
    "is listed here only when that happened.")


def header_lines(data: dict[str, Any]) -> list[str]:
    m, st = data["machine"], data["settings"]
    v = m["versions"]
    lab = st["lab"]
    return [
        f"- **date:** {data['date']} (run took {data['elapsed_s']:.0f} s)",
        f"- **command:** `{data['command']}`",
        f"- **machine:** {m['cpu']}, {m['cpus']} CPUs, {m['memory_gib']} GiB, "
        f"Linux {m['kernel']}, {m['os']}, Python {m['python']}",
        f"- **software:** specloop {v['specloop']}, aiohttp {v['aiohttp']}, uvloop {v['uvloop']}, "
        f"nginx {v['nginx']}, wrk {v['wrk']}, curl {v['curl']}",
        f"- **lab:** veth {lab['server_if']} ({lab['server_ns']}, {lab['server_ip']}) <-> "
        f"{lab['client_if']} ({lab['client_ns']}), MTU {lab['mtu']}; server pinned to CPU "
        f"{st['pinning']['server_cpu']}, client to CPU {st['pinning']['client_cpu']} "
        f"(`taskset -c`); one server at a time, server order rotated per workload",
        f"- **each cell:** {st['warmup_s']} s warm-up, then {st['duration_s']} s measured with "
        f"{st['client']}; bulk: one {st['bulk_bytes'] >> 20} MiB download with curl "
        f"after the same warm-up",
        f"- **fresh server processes per cell:** {st.get('runs', 1)} for every row, "
        f"{max(st.get('runs', 1), st.get('fast_path_runs', 1))} for the static fast path's "
        "(median reported, min–max beside it); nginx in "
        f"{len([s for s in data['servers'] if s['kind'] == 'nginx'])} configurations, the "
        "fastest in each cell is \"nginx\"",
    ] + ([f"- **other apps** (hello only): at {', '.join(map(str, extra))} connections"]
         if (extra := st.get("extra_app_connections")) and extra != st["connections"] else []) \
      + ([f"- **background load:** {bg['before_pct']:.0f}% of one CPU busy with other work "
          f"before the run, {bg.get('after_pct', float('nan')):.0f}% after (1 s samples with "
          "nothing of this run going; the machine is shared, and such load disturbs the "
          "numbers)"] if (bg := data.get("background_load")) and "before_pct" in bg else []) \
      + _steal_line(data)


def _steal_line(data: dict[str, Any]) -> list[str]:
    st = data["settings"]
    if not st.get("max_steal_pct"):
        return []
    cells = [r for r in data["results"] + data.get("bulk", []) if r.get("status") == "ok"]
    again = sum(r.get("steal_remeasured", 0) for r in cells)
    measured = sum(r.get("run_count", 1) for r in cells)
    return [f"- **steal:** a measurement during which other guests of the host took more "
            f"than {st['max_steal_pct']:g}% of either CPU was made again, at most "
            f"{st['steal_retries']} more times, and the least stolen one kept (the same for "
            f"every row): {again} extra measurements for {measured} measured (those of the "
            "request cells are in the runs table)"]


def markdown(data: dict[str, Any], img_prefix: str = "", full: bool = True) -> str:
    out = ["# specloop benchmark", ""]
    out += header_lines(data)
    out += ["", "×nginx: this row's req/s (or MB/s) divided by nginx's at its best, the "
            "fastest nginx configuration in the same cell (★ in the cell tables); ×uvloop: "
            "divided by the same app's on uvloop (aiohttp's for nginx); above 1 is faster. "
            "Server CPU: the server processes' own utime+stime (/proc/PID/stat) per request; "
            "CPU ×nginx and ×uvloop: that over the same reference's (below 1 is cheaper). "
            "Machine CPU: all non-idle time of every CPU (/proc/stat: client, kernel, server "
            "and anything else running) per request. Client busy: wrk's own CPU time over "
            "the run, in percent of its one CPU (near 100, the client is the limit). RSS: the "
            "server's VmRSS (summed over its processes) after the run. min–max (runs): over "
            "the fresh server processes of the cell; req/s and server CPU are their medians, "
            "the rest comes from the median run. Every process was checked before it was "
            "measured (status 200 and the body byte for byte), every response while it was "
            "(wrk's non-2xx count, bytes per response at least the body's). Absolute numbers "
            "wander 10–25% between runs on this shared machine; compare inside one run.", ""]
    out += ["## Summary", ""] + summary(data)
    if not full:
        return "\n".join(out)
    if uvloop_rows(data):
        out += ["## The bypass against uvloop", "",
                "Each bypass row's req/s over the same app's on uvloop in the same cell, and "
                "its server CPU per request over uvloop's (issue 14: at least 1.0× everywhere, "
                "or the note says why, from the measurement).", "", uvloop_table(data), ""]
    for w in data["workloads"]:
        if w["id"] == matrix.BULK:
            continue
        if _websocket(data, w["id"]):
            out += [f"## {w['label']}: WebSocket at {w['path']}", "", WEBSOCKET_CELL, ""]
        else:
            out += [f"## {w['label']}: GET {w['path']}", ""]
        for c in data["settings"]["connections"]:
            if not _cells(data, w["id"], c):
                continue
            out += [f"### {c} connection{'s' if c != 1 else ''}", "",
                    cell_table(data, w["id"], c), ""]
    if data["bulk"]:
        out += [f"## Bulk goodput: one flow, {data['settings']['bulk_bytes'] >> 20} MiB", "",
                "MB/s = 10^6 bytes/s, curl's `%{speed_download}`, client in the client "
                "namespace writing to /dev/null.", "", bulk_table(data), ""]
    out += ["## Constant-rate latency", "", data["constant_rate"]["reason"], ""]
    if data["constant_rate"].get("results"):
        out += [rate_table(data), ""]
    if any(r.get("run_count", 1) > 1 or r.get("steal_remeasured") for r in data["results"]):
        st = data["settings"]
        out += ["## Runs: one fresh server process each", "",
                RUNS_KEY.format(client=st["pinning"]["client_cpu"],
                                server=st["pinning"]["server_cpu"],
                                thp=st.get("thp", "unknown")), "", runs_table(data), ""]
    out += ["## Transport ceiling", ""] + ceiling_section(data)
    if data["plots"]:
        out += ["## Plots", ""] + [f"![{p[:-4]}]({img_prefix}{p})" for p in data["plots"]] + [""]
    elif data.get("plots_error"):
        out += ["## Plots", "", f"not drawn: {data['plots_error']}", ""]
    return "\n".join(out)


# ---- plots --------------------------------------------------------------------------------

def plots(data: dict[str, Any], out: pathlib.Path) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    labels = _labels(data)
    conns = data["settings"]["connections"]
    wls = [w for w in data["workloads"] if w["id"] != matrix.BULK]
    made: list[str] = []
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    if wls and conns:
        heights = []
        for w in wls:
            sids = [s for s in _order(data) if any(
                r["server"] == s and r["workload"] == w["id"] for r in data["results"])]
            heights.append(max(1, len(sids)))
        fig, axes = plt.subplots(len(wls), 1, figsize=(10, 0.5 * sum(heights) * len(conns) / 2
                                                       + 1.4 * len(wls)),
                                 gridspec_kw={"height_ratios": heights}, squeeze=False)
        for ax, w in zip(axes[:, 0], wls):
            sids = [s for s in _order(data) if any(
                r["server"] == s and r["workload"] == w["id"] for r in data["results"])]
            bar_h = 0.8 / len(conns)
            for j, c in enumerate(conns):
                by = {r["server"]: r for r in _cells(data, w["id"], c)}
                for i, sid in enumerate(sids):
                    r = by.get(sid)
                    y = i + (j - (len(conns) - 1) / 2) * bar_h
                    label = f"{c} conn" if i == 0 else None
                    if r is not None and r["status"] == "ok":
                        sp = (r.get("spread") or {}).get("requests_per_s")
                        x = r["requests_per_s"]
                        err = ([[x - sp["min"]], [sp["max"] - x]]
                               if sp and r.get("run_count", 1) > 1 else None)
                        ax.barh(y, x, height=bar_h, color=colors[j % 10], label=label,
                                xerr=err, error_kw={"elinewidth": 0.8, "capsize": 2})
                    else:   # not run (n/a) or not planned (nothing)
                        ax.barh(y, 0, height=bar_h, color=colors[j % 10], label=label)
                        if r is not None:
                            ax.text(0, y, "  n/a", va="center", fontsize=7, color="gray")
            ax.set_yticks(range(len(sids)))
            ax.set_yticklabels([labels[s] for s in sids], fontsize=8)
            ax.invert_yaxis()
            ax.set_title(w["label"], fontsize=10)
            ax.set_xlabel("messages/s" if _websocket(data, w["id"]) else "requests/s",
                          fontsize=8)
            ax.tick_params(axis="x", labelsize=8)
            ax.grid(axis="x", alpha=0.3)
            ax.legend(fontsize=7, loc="lower right")
        fig.suptitle(f"specloop bench: throughput ({data['date'][:10]})", fontsize=11,
                     x=0.02, ha="left")
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
        fig.savefig(out / "throughput.png", dpi=110)
        plt.close(fig)
        made.append("throughput.png")

        nrow, ncol = len(wls), len(conns)
        fig, axes = plt.subplots(nrow, ncol, figsize=(max(4.6 * ncol, 8.0),
                                                      0.32 * sum(heights) + 1.2 * nrow + 0.6),
                                 gridspec_kw={"height_ratios": heights}, squeeze=False)
        handles: dict[str, Any] = {}
        pct = (("p50", "p50"), ("p99", "p99"), ("p999", "p99.9"))
        for a, w in enumerate(wls):
            for b, c in enumerate(conns):
                ax = axes[a, b]
                # the same rows in every column: servers with a record for the workload
                sids = [sd for sd in _order(data) if any(
                    r["server"] == sd and r["workload"] == w["id"] for r in data["results"])]
                by = {r["server"]: r for r in _cells(data, w["id"], c)}
                bar_h = 0.8 / len(pct)
                for i, sid in enumerate(sids):
                    r = by.get(sid)
                    if r is None:
                        continue   # not planned at this connection count
                    for j, (key, name) in enumerate(pct):
                        y = i + (j - 1) * bar_h
                        if r["status"] == "ok":
                            handles[name] = ax.barh(y, r["latency_us"][key] / 1000,
                                                    height=bar_h, color=colors[j])
                    if r["status"] != "ok":
                        ax.text(0.01, i, "n/a", va="center", fontsize=7, color="gray",
                                transform=ax.get_yaxis_transform())
                ax.set_yticks(range(len(sids)))
                ax.set_ylim(len(sids) - 0.5, -0.5)
                ax.set_yticklabels([labels[sd] if b == 0 else "" for sd in sids], fontsize=7)
                ax.set_xscale("log")
                ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                ax.xaxis.set_minor_formatter(NullFormatter())
                ax.set_title(f"{_short(w['id'])}, {c} conn", fontsize=9)
                ax.set_xlabel("latency, ms (log)", fontsize=7)
                ax.tick_params(axis="x", labelsize=7)
                ax.grid(axis="x", alpha=0.3, which="both")
        fig.suptitle(f"latency percentiles, wrk closed loop ({data['date'][:10]})", fontsize=11,
                     x=0.02, ha="left")
        if handles:
            fig.legend(list(handles.values()), list(handles), fontsize=8, ncol=len(handles),
                       loc="upper right")
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))
        fig.savefig(out / "latency.png", dpi=110)
        plt.close(fig)
        made.append("latency.png")

    if data["bulk"]:
        by = {r["server"]: r for r in data["bulk"]}
        sids = [s for s in _order(data) if s in by]
        fig, ax = plt.subplots(figsize=(8, 0.4 * len(sids) + 1.3))
        for i, sid in enumerate(sids):
            r = by[sid]
            if r["status"] == "ok":
                ax.barh(i, r["mb_per_s"], color=colors[0])
                ax.text(r["mb_per_s"], i, f" {sig(r['mb_per_s'])}", va="center", fontsize=7)
            else:
                ax.text(0, i, "  n/a", va="center", fontsize=7, color="gray")
        ax.set_yticks(range(len(sids)))
        ax.set_yticklabels([labels[s] for s in sids], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("MB/s (one flow)", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
        ax.set_title(f"bulk goodput, {data['settings']['bulk_bytes'] >> 20} MiB, one flow "
                     f"({data['date'][:10]})", fontsize=10)
        fig.tight_layout()
        fig.savefig(out / "bulk.png", dpi=110)
        plt.close(fig)
        made.append("bulk.png")
    return made


# ---- writing --------------------------------------------------------------------------------

def write(data: dict[str, Any], out: pathlib.Path, json_path: pathlib.Path | None = None) -> str:
    """Writes the PNGs, results.json (and ``json_path``) and report.md into
    ``out``; returns the markdown."""
    try:
        data["plots"] = plots(data, out)
    except Exception as exc:  # a report without plots beats no report
        data["plots"] = []
        data["plots_error"] = f"{type(exc).__name__}: {exc}"
    text = json.dumps(data, indent=2) + "\n"
    (out / "results.json").write_text(text)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(text)
    md = markdown(data)
    (out / "report.md").write_text(md)
    return md


def publish(data: dict[str, Any], out: pathlib.Path, latest: pathlib.Path,
            readme: pathlib.Path) -> None:
    """Copies the report into ``latest`` and puts its summary, with the date,
    machine, command and plot, between README's markers (or at its end)."""
    latest.mkdir(parents=True, exist_ok=True)
    for name in ("report.md", "results.json", *data["plots"]):
        shutil.copyfile(out / name, latest / name)
    rel = os.path.relpath(latest, readme.parent)
    section = [README_BEGIN, "## Benchmarks", ""]
    section += header_lines(data)
    section += ["", f"Every cell, latency percentiles, CPU per request, RSS, the bypass "
                f"against uvloop per app and each run's process: [{rel}/report.md]"
                f"({rel}/report.md). Run it with `make bench` or `specloop bench` "
                "(`--quick` for a short look).", ""] + summary(data)
    if data.get("ceiling", {}).get("measured"):
        section += ["**the transport's ceiling**: frames per second the server's CPU can "
                    "send over the lab veth with each TX mechanism (dropped by an nft rule "
                    "in the client's input hook; how, in report.md)", "",
                    ceiling_table(data), ""]
        rows = closeness_rows(data)
        if rows:
            section += ["**how close to it** the rows that send big files run (payload as "
                        "1,448-byte segments per second):", "", closeness_table(rows), ""]
    section += [f"![{p[:-4]}]({rel}/{p})" for p in data["plots"] if p != "latency.png"]
    section += [README_END]
    body = "\n".join(section)
    text = readme.read_text() if readme.exists() else ""
    if README_BEGIN in text and README_END in text:
        head, rest = text.split(README_BEGIN, 1)
        tail = rest.split(README_END, 1)[1]
        text = head + body + tail
    else:
        text = text.rstrip("\n") + "\n\n" + body + "\n"
    readme.write_text(text)
