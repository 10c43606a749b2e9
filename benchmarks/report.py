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
import sys
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

SCHEMA = 1
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
          background: dict[str, float] | None = None) -> dict[str, Any]:
    """Everything the run found, as one JSON-able dict (ratios included)."""
    _add_ratios(run.results, "requests_per_s", ("workload", "connections"))
    _add_ratios(run.bulk, "mb_per_s", ("workload",))
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
            "client": f"wrk 4.1 -t1 --latency --timeout {runner.WRK_TIMEOUT} (bulk: curl)",
            "pinning": {"server_cpu": runner.SERVER_CPU, "client_cpu": runner.CLIENT_CPU,
                        "how": "taskset -c"},
            "lab": {"server_ns": lab.server_ns, "client_ns": lab.client_ns,
                    "server_if": lab.server_if, "client_if": lab.client_if,
                    "server_ip": lab.server_ip, "mtu": lab.mtu, "queues": lab.queues},
            "files": files,
            "references": {"nginx": matrix.REF_NGINX, "uvloop": matrix.REF_UVLOOP},
        },
        "servers": [{"id": s.id, "label": s.label, "kind": s.kind, "app": s.app,
                     "loop": s.loop, "bypass": s.bypass, "fast_path": s.fast_path,
                     "static": s.static, "unavailable": s.unavailable}
                    for s in run.servers],
        "workloads": [{"id": w.id, "label": w.label, "path": w.path, "size": w.size}
                      for w in matrix.WORKLOADS if w.id in run.workloads]
                     + ([{"id": matrix.BULK, "label": "single-flow bulk goodput",
                          "path": "/static/" + _bulk_file(run), "size": run.bulk_bytes}]
                        if matrix.BULK in run.workloads else []),
        "results": run.results,
        "bulk": run.bulk,
        "constant_rate": _constant_rate(run),
        "plots": [],
    }


def _constant_rate(run: "Run") -> dict[str, Any]:
    # p50 latency over the reference's, per workload (below 1: lower latency)
    refs = {(r["workload"], r["server"]): r["latency_us"]["p50"] for r in run.rate_results
            if r["status"] == "ok" and r["server"] in (matrix.REF_NGINX, matrix.REF_UVLOOP)}
    for r in run.rate_results:
        r["ratio"] = {name: (round(r["latency_us"]["p50"] / refs[(r["workload"], ref)], 3)
                             if r["status"] == "ok" and refs.get((r["workload"], ref))
                             else None)
                      for name, ref in (("nginx", matrix.REF_NGINX),
                                        ("uvloop", matrix.REF_UVLOOP))}
    measured = any(r["status"] == "ok" for r in run.rate_results)
    return {"measured": measured, "rate": run.rate, "connections": matrix.RATE_CONNECTIONS,
            "reason": (CONSTANT_RATE_METHOD.format(rate=run.rate, conns=matrix.RATE_CONNECTIONS)
                       if run.rate_results else CONSTANT_RATE_NONE),
            "results": run.rate_results}


def _bulk_file(run: "Run") -> str:
    return content.bulk_name(run.bulk_bytes)


def _add_ratios(records: list[dict[str, Any]], metric: str, key: tuple[str, ...]) -> None:
    refs: dict[tuple[Any, ...], dict[str, float]] = {}
    for r in records:
        if r.get("status") == "ok" and r["server"] in (matrix.REF_NGINX, matrix.REF_UVLOOP):
            name = "nginx" if r["server"] == matrix.REF_NGINX else "uvloop"
            refs.setdefault(tuple(r[k] for k in key), {})[name] = r[metric]
    for r in records:
        if r.get("status") != "ok":
            r["ratio"] = {"nginx": None, "uvloop": None}
            continue
        ref = refs.get(tuple(r[k] for k in key), {})
        r["ratio"] = {name: (round(r[metric] / ref[name], 3) if ref.get(name) else None)
                      for name in ("nginx", "uvloop")}


# ---- markdown -----------------------------------------------------------------------------

def md_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GitHub markdown table; "server" and "note" columns left-aligned,
    numbers right-aligned."""
    def cell(x: str) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")
    out = ["| " + " | ".join(cell(h) for h in headers) + " |",
           "|" + "|".join("---" if h in ("server", "note") else "---:" for h in headers) + "|"]
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


def _labels(data: dict[str, Any]) -> dict[str, str]:
    return {s["id"]: s["label"] for s in data["servers"]}


def _order(data: dict[str, Any]) -> list[str]:
    return [s["id"] for s in data["servers"]]


def _cells(data: dict[str, Any], wid: str, c: int) -> list[dict[str, Any]]:
    by = {r["server"]: r for r in data["results"]
          if r["workload"] == wid and r.get("connections") == c}
    return [by[s] for s in _order(data) if s in by]


def _note(r: dict[str, Any]) -> str:
    notes = [r.get("reason") or ""] if r["status"] == "ok" else [f"{r['status']}: {r['reason']}"]
    if r.get("stop_note"):
        notes.append("server " + r["stop_note"])
    return "; ".join(n for n in notes if n)


def cell_table(data: dict[str, Any], wid: str, c: int) -> str:
    labels = _labels(data)
    rows = []
    for r in _cells(data, wid, c):
        if r["status"] != "ok":
            rows.append([labels[r["server"]]] + ["—"] * 10 + [_note(r)])
            continue
        lat, cpu = r["latency_us"], r["cpu_us_per_request"]
        client = r.get("cpu_pct", {}).get("client")
        rows.append([labels[r["server"]], f"{r['requests_per_s']:,.0f}",
                     _ratio(r["ratio"]["nginx"]), _ratio(r["ratio"]["uvloop"]),
                     _ms(lat["p50"]), _ms(lat["p99"]), _ms(lat["p999"]),
                     sig(cpu["server"]), sig(cpu["machine"]),
                     "—" if client is None else f"{client:.0f}", sig(r["rss_mib"]), _note(r)])
    return md_table(["server", "req/s", "×nginx", "×uvloop", "p50 ms", "p99 ms", "p99.9 ms",
                     "server CPU µs/req", "machine CPU µs/req", "client busy %", "RSS MiB",
                     "note"], rows)


def bulk_table(data: dict[str, Any]) -> str:
    labels = _labels(data)
    by = {r["server"]: r for r in data["bulk"]}
    rows = []
    for sid in _order(data):
        r = by.get(sid)
        if r is None:
            continue
        if r["status"] != "ok":
            rows.append([labels[sid]] + ["—"] * 7 + [_note(r)])
            continue
        cpu = r["cpu_s_per_gib"]
        rows.append([labels[sid], sig(r["mb_per_s"]), _ratio(r["ratio"]["nginx"]),
                     _ratio(r["ratio"]["uvloop"]), sig(r["seconds"]), sig(cpu["server"]),
                     sig(cpu["machine"]), sig(r["rss_mib"]), _note(r)])
    return md_table(["server", "MB/s", "×nginx", "×uvloop", "seconds", "server CPU s/GiB",
                     "machine CPU s/GiB", "RSS MiB", "note"], rows)


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


def summary_table(data: dict[str, Any]) -> str:
    """One row per server: req/s (×nginx) per workload at the most connections,
    and bulk MB/s."""
    labels = _labels(data)
    conns = data["settings"]["connections"]
    c = max(conns) if conns else None
    wls = [w for w in data["workloads"] if w["id"] != matrix.BULK]
    has_bulk = any(w["id"] == matrix.BULK for w in data["workloads"])
    headers = ["server"] + [f"{_short(w['id'])}, c={c}" for w in wls] \
        + (["bulk MB/s"] if has_bulk else [])
    rows = []
    for sid in _order(data):
        row, any_cell = [labels[sid]], False
        for w in wls:
            r = next((r for r in data["results"] if r["server"] == sid
                      and r["workload"] == w["id"] and r.get("connections") == c), None)
            any_cell |= r is not None
            row.append(_summary_cell(r, "requests_per_s"))
        if has_bulk:
            r = next((r for r in data["bulk"] if r["server"] == sid), None)
            any_cell |= r is not None
            row.append(_summary_cell(r, "mb_per_s"))
        if any_cell:
            rows.append(row)
    return md_table(headers, rows)


def _short(wid: str) -> str:
    return {"hello": "hello", "static-64": "64 B", "static-8k": "8 KiB",
            "static-1m": "1 MiB"}.get(wid, wid)


def _summary_cell(r: dict[str, Any] | None, metric: str) -> str:
    if r is None:
        return ""
    if r["status"] != "ok":
        return "n/a" if r["status"] == "skipped" else "failed"
    x = r[metric]
    s = f"{x:,.0f}" if metric == "requests_per_s" else sig(x)
    if r["ratio"]["nginx"] is not None and r["server"] != matrix.REF_NGINX:
        s += f" ({r['ratio']['nginx']:.2f}×)"
    return s


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
    ] + ([f"- **other apps** (hello only): at {', '.join(map(str, extra))} connections"]
         if (extra := st.get("extra_app_connections")) and extra != st["connections"] else []) \
      + ([f"- **background load:** {bg['before_pct']:.0f}% of one CPU busy with other work "
          f"before the run, {bg.get('after_pct', float('nan')):.0f}% after (1 s samples with "
          "nothing of this run going; the machine is shared, and such load disturbs the "
          "numbers)"] if (bg := data.get("background_load")) and "before_pct" in bg else [])


def markdown(data: dict[str, Any], img_prefix: str = "", full: bool = True) -> str:
    out = ["# specloop benchmark", ""]
    out += header_lines(data)
    out += ["", "×nginx and ×uvloop: this row's req/s (or MB/s) divided by nginx's and by "
            "aiohttp-on-uvloop's in the same cell; above 1 is faster. Server CPU: the server "
            "processes' own utime+stime (/proc/PID/stat) per request. Machine CPU: all non-idle "
            "time of every CPU (/proc/stat: client, kernel, server and anything else running) "
            "per request. Client busy: wrk's own CPU time over the run, in percent of its one "
            "CPU (near 100, the client is the limit). RSS: the "
            "server's VmRSS (summed over its processes) after the run. Absolute numbers wander "
            "10–25% between runs on this shared machine; compare inside one run.", ""]
    out += ["## Summary", "", summary_table(data), ""]
    if not full:
        return "\n".join(out)
    for w in data["workloads"]:
        if w["id"] == matrix.BULK:
            continue
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
                        ax.barh(y, r["requests_per_s"], height=bar_h, color=colors[j % 10],
                                label=label)
                    else:   # not run (n/a) or not planned (nothing)
                        ax.barh(y, 0, height=bar_h, color=colors[j % 10], label=label)
                        if r is not None:
                            ax.text(0, y, "  n/a", va="center", fontsize=7, color="gray")
            ax.set_yticks(range(len(sids)))
            ax.set_yticklabels([labels[s] for s in sids], fontsize=8)
            ax.invert_yaxis()
            ax.set_title(w["label"], fontsize=10)
            ax.set_xlabel("requests/s", fontsize=8)
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
    section += ["", f"req/s at the most connections (×nginx in brackets); every cell, "
                f"latency percentiles, CPU per request and RSS: [{rel}/report.md]"
                f"({rel}/report.md). Run it with `make bench` or `specloop bench` "
                "(`--quick` for a 3-minute look).", "", summary_table(data), ""]
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
