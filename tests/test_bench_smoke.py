"""``specloop bench --quick --smoke`` runs end to end and writes well-formed
output: JSON with the expected keys, markdown tables whose rows all have
the header's columns, PNG plots; the WebSocket echo rows measured on every
loop, each echo checked by benchmarks/ws_load.c.  No speed assertions:
benchmarks are not tests (numbers are only checked to be numbers).

The lab's tag (SPECLOOP_LAB) reaches the suite only through the inherited
environment: set when the caller set it, the default lab otherwise.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from specloop import netlab

pytestmark = pytest.mark.lab

TOP_KEYS = {"schema", "date", "command", "mode", "elapsed_s", "machine", "background_load",
            "settings", "servers", "workloads", "results", "bulk", "constant_rate", "ceiling",
            "plots"}
CELL_OK_KEYS = {"server", "workload", "connections", "status", "requests", "seconds",
                "requests_per_s", "errors", "error_count", "latency_us",
                "cpu_us_per_request", "rss_mib", "ratio", "cpu_ratio", "refs", "spread",
                "run_count", "runs", "response_bytes"}
BULK_OK_KEYS = {"server", "workload", "status", "bytes", "seconds", "mb_per_s",
                "cpu_s_per_gib", "rss_mib", "ratio", "cpu_ratio", "refs", "spread",
                "run_count", "runs"}
NGINX = {"nginx-sendfile", "nginx-nopush", "nginx-nosendfile", "nginx-nocache"}
FAST = {"aiohttp-specloop-fastpath", "aiohttp-specloop-fastpath-mb"}
# the WebSocket echo servers: they run ws-echo (benchmarks/ws_load.c), and only that
WS = {"websockets-asyncio", "websockets-uvloop", "websockets-specloop-bypass"}


def _split_row(line: str) -> list[str]:
    assert line.startswith("| ") and line.endswith(" |"), line
    return re.split(r"(?<!\\)\|", line[1:-1])


def _tables(md: str) -> list[list[str]]:
    tables, cur = [], []
    for line in md.splitlines():
        if line.startswith("|"):
            cur.append(line)
        elif cur:
            tables.append(cur)
            cur = []
    if cur:
        tables.append(cur)
    return tables


def _number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x


def test_bench_smoke(lab: netlab.Lab, tmp_path) -> None:
    out = tmp_path / "out"
    json_path = tmp_path / "r.json"
    cmd = [sys.executable, "-m", "specloop", "bench", "--quick", "--smoke",
           "--out", str(out), "--json", str(json_path)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=dict(os.environ))
    assert p.returncode == 0, f"rc {p.returncode}\n{p.stderr[-4000:]}"

    # a row with several runs takes turns with the other rows of its
    # workload: some single-run row's cell comes between its runs 1 and 2
    # (unless it was last in every workload's first round)
    between: dict[str, bool] = {}
    seen_first: set[str] = set()
    for line in p.stderr.splitlines():
        m = re.match(r"\[\s*\d+/\s*\d+ .*?\] (\S+) ", line)
        if not m:
            continue
        wl = m.group(1)
        if "(run 1/" in line:
            seen_first.add(wl)
        elif "(run 2/" in line:
            between.setdefault(wl, False)
        elif "(run " not in line and wl in seen_first and wl not in between:
            between[wl] = True
    assert between and any(between.values()), (between, p.stderr[-3000:])

    data = json.loads(json_path.read_text())
    assert TOP_KEYS <= data.keys()
    assert data == json.loads((out / "results.json").read_text())
    assert data["mode"] == "smoke"
    assert data["settings"]["lab"]["server_ns"] == netlab.SERVER_NS
    server_ids = {s["id"] for s in data["servers"]}
    assert {"aiohttp-asyncio", "aiohttp-uvloop", "aiohttp-specloop-kernel",
            "aiohttp-specloop-bypass", "aiohttp-specloop-fastpath",
            "raw-asyncio", "raw-uvloop", "raw-specloop-bypass"} | NGINX | WS <= server_ids
    by_server = {s["id"]: s for s in data["servers"]}

    # every HTTP server has a hello row: measured, or saying why not
    hello = [r for r in data["results"] if r["workload"] == "hello"]
    assert {r["server"] for r in hello} == server_ids - WS
    # the WebSocket echo: every loop measured, every echo checked by ws_load
    # (a wrong byte fails the cell), and nothing else on those servers
    ws = [r for r in data["results"] if r["workload"] == "ws-echo"]
    assert {r["server"] for r in ws} == WS
    assert {r["workload"] for r in data["results"] if r["server"] in WS} == {"ws-echo"}
    for r in ws:
        assert r["status"] == "ok", r
        assert r["requests"] > 0 and r["error_count"] == 0, r
        assert r["response_bytes"] == 13, r
        assert r["refs"]["uvloop"] == "websockets-uvloop" and r["ratio"]["nginx"] is None
        assert _number(r["ratio"]["uvloop"]) and _number(r["cpu_ratio"]["uvloop"]), r
        assert all(run["check"]["status"] == 101 for run in r["runs"]), r
    for r in data["results"] + data["bulk"]:
        assert r["server"] in server_ids
        assert r["status"] in ("ok", "skipped", "failed"), r
        if r["status"] != "ok":
            assert isinstance(r["reason"], str) and r["reason"], r
            continue
        keys = BULK_OK_KEYS if r["workload"] == "bulk" else CELL_OK_KEYS
        assert keys <= r.keys(), (keys - r.keys(), r)
        assert set(r["ratio"]) == set(r["cpu_ratio"]) == set(r["refs"]) == {"nginx", "uvloop"}
        # ×uvloop: against the same app on uvloop (aiohttp's for nginx)
        assert r["refs"]["uvloop"] in (by_server[r["server"]]["uvloop_ref"], None), r
        # one run per fresh server process; the fast path's at least three
        assert r["run_count"] == len(r["runs"]) >= (3 if r["server"] in FAST else 1), r
        metric = "mb_per_s" if r["workload"] == "bulk" else "requests_per_s"
        sp = r["spread"][metric]
        assert sp["min"] <= r[metric] <= sp["max"] and sp["min"] <= sp["median"] <= sp["max"]
        assert r["spread"]["server_cpu"]["min"] <= r["spread"]["server_cpu"]["max"]
        # every process was checked before it was measured: status and bytes
        for run in r["runs"]:
            if run["status"] == "ok":
                chk = run["check"]
                # a WebSocket echo: the handshake's 101, then the echoes
                assert chk["status"] == (101 if r["server"] in WS else 200), run
                assert chk["body_ok"] is True, run
        if r["workload"] == "bulk":
            assert r["bytes"] == data["settings"]["bulk_bytes"]
            assert all(run["check"]["bytes"] == r["bytes"] for run in r["runs"]
                       if run["status"] == "ok")
            assert _number(r["mb_per_s"])
        else:
            size = next(w["size"] for w in data["workloads"] if w["id"] == r["workload"])
            assert all(run["check"]["bytes"] == size for run in r["runs"]
                       if run["status"] == "ok")
            assert r["response_bytes"] >= size
            assert r["requests"] > 0 and _number(r["requests_per_s"])
            assert {"p50", "p99", "p999"} <= r["latency_us"].keys()
            assert all(_number(v) for v in r["latency_us"].values())
            assert {"server", "machine", "client"} <= r["cpu_us_per_request"].keys()
            assert all(_number(v) for v in r["cpu_us_per_request"].values())
            diag = r["runs"][0]["diag"]
            assert {"net_rx_per_request", "softirq_pct", "ksoftirqd_pct",
                    "steal_pct"} <= diag.keys()
            if by_server[r["server"]]["bypass"]:
                assert isinstance(diag["anon_maps"], list)
            if r["server"] in FAST:   # several runs: the VM's speed probed before each
                for run in r["runs"]:
                    probe = run["diag"]["cpu_probe_ns"]
                    assert len(probe) == os.cpu_count()
                    assert all(_number(x) and x > 0 for pair in probe for x in pair)
    fast = [r for r in data["results"] if r["server"] == "aiohttp-specloop-fastpath"]
    assert fast and all(r["status"] == "ok" or r["reason"] for r in fast)

    # nginx at its best: in each cell the fastest configuration is "nginx"
    for recs in (data["results"], data["bulk"]):
        cells: dict[tuple, list] = {}
        for r in recs:
            cells.setdefault((r["workload"], r.get("connections")), []).append(r)
        for key, rows in cells.items():
            ng = [r for r in rows if r["server"] in NGINX and r["status"] == "ok"]
            if not ng:
                continue
            metric = "mb_per_s" if key[0] == "bulk" else "requests_per_s"
            best = max(ng, key=lambda r: r[metric])
            assert [r for r in ng if r.get("nginx_best")] == [best], key
            for r in rows:
                if r["status"] == "ok":
                    assert r["refs"]["nginx"] == best["server"]
                    assert abs(r["ratio"]["nginx"] - r[metric] / best[metric]) < 0.01
    assert {(b["workload"], b.get("connections")) for b in data["settings"]["nginx_best"]}

    # the transport's ceiling: every TX mechanism, the frames counted at the client
    ceiling = data["ceiling"]
    assert ceiling["measured"] is True, ceiling
    assert {r["id"] for r in ceiling["results"]} == {
        "afxdp", "packet", "packet-mmsg", "packet-gso", "packet-gso-mmsg", "kernel-tcp",
        "kernel-tcp-sendfile"}
    for r in ceiling["results"]:
        assert r["status"] == "ok", r
        assert r["segments_per_s"] > 0 and r["payload_gbit_s"] > 0
        assert _number(r["cpu_us_per_segment"]) and r["cpu_us_per_segment"] > 0
        assert 90 <= r["delivered_pct"] <= 100.5, r
    # the constant-rate cell of 8 KiB: every server that serves it, at the rate asked
    cr = data["constant_rate"]
    assert cr["measured"] is True and cr["reason"] and cr["rate"] > 0
    rate_rows = cr["results"]
    assert {r["server"] for r in rate_rows} == {
        r["server"] for r in data["results"] if r["workload"] == "static-8k"}
    for r in rate_rows:
        assert r["workload"] == "static-8k" and r["rate"] == cr["rate"]
        if r["status"] != "ok":
            assert isinstance(r["reason"], str) and r["reason"], r
            continue
        assert r["requests"] > 0 and 0 <= r["late_pct"] <= 100
        # open loop: the client never sends ahead of the schedule
        assert r["requests_per_s"] <= 1.2 * cr["rate"], r
        lat = r["latency_us"]
        assert {"p50", "p90", "p99", "p999", "max"} <= lat.keys()
        assert all(_number(v) and v > 0 for v in lat.values())
        assert lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p999"] <= lat["max"]

    # the report: on stdout and in report.md, every table well formed
    md = (out / "report.md").read_text()
    assert md.strip() in p.stdout
    tables = _tables(md)
    assert len(tables) >= 3      # summary, hello, 8 KiB, bulk, constant rate
    for section in ("## Summary", "## The bypass against uvloop", "## Runs: one fresh server "
                    "process each", "## Transport ceiling"):
        assert section in md, section
    # CPU per request beside req/s in the summary; the fast path's spread
    summary = md.split("## Summary", 1)[1].split("\n## ", 1)[0]
    assert "| c=32 req/s | c=32 µs/req |" in summary
    # the WebSocket table: messages, against websockets on uvloop (no nginx)
    assert "| c=32 msg/s | c=32 µs/msg |" in summary
    assert 'against "websockets · uvloop"' in summary
    assert re.search(r"\| websockets · specloop bypass \| [\d,]+ \([\d.]+×\)", summary), summary
    assert "nginx (fastest configuration per cell)" in summary
    assert re.search(r"\| specloop static fast path \| [\d,]+ \([\d.]+×\) \[[\d.k]+–[\d.k]+\]",
                     summary), summary
    for t in tables:
        assert len(t) >= 3, t
        ncol = len(_split_row(t[0]))
        assert re.fullmatch(r"\|(---:?\|){%d}" % ncol, t[1]), t[1]
        for row in t[2:]:
            assert len(_split_row(row)) == ncol, row

    for name in data["plots"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "throughput.png" in data["plots"]


def test_bench_mixed_smoke(lab: netlab.Lab, tmp_path) -> None:
    """``specloop bench --mixed`` (issue 11's workload, wrk's mix of 90%
    static and 10% dynamic): every row checked (each distinct request's
    status and exact bytes) and measured, direct and through the nginx
    proxy; the table and JSON written; at least 99% of the fast path's
    static requests answered in C."""
    out = tmp_path / "mixed.md"
    p = subprocess.run([sys.executable, "-m", "specloop", "bench", "--mixed", "--runs", "1",
                        "--seconds", "1", "--out", str(out)],
                       capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    recs = json.loads(out.with_suffix(".json").read_text())
    assert {(r["server"], r["via"]) for r in recs} == {
        (s, v) for s in ("aiohttp-specloop-fastpath", "aiohttp-specloop-bypass",
                         "aiohttp-uvloop") for v in ("direct", "proxy")}
    for r in recs:
        assert r["status"] == "ok" and r["requests"] > 0 and r["errors"] == 0, r
    # hand-back (issue 11): behind a dynamic request, on the same connection
    # or the proxy's pooled ones, static requests are answered in C again
    fast = [r for r in recs if r["server"] == "aiohttp-specloop-fastpath"]
    assert all(99 <= r["static_in_c_pct"] <= 100 for r in fast), fast
    assert all(r["handbacks"] > 0 for r in fast), fast
    rows = [ln for ln in out.read_text().splitlines() if ln.startswith("| ")]
    assert len(rows) == 1 + len(recs)   # the header, a row per cell
    assert all(len(_split_row(ln)) == len(_split_row(rows[0])) for ln in rows)
