"""Running things in the lab: a server in the server namespace pinned to
one CPU, wrk and curl in the client namespace pinned to the other, and the
CPU and memory they cost read from /proc.

The server's pid is the server itself (``ip netns exec`` and ``taskset``
both exec), so its CPU time and RSS are read straight from /proc/<pid>,
summed over its children (nginx's worker).
"""

from __future__ import annotations

import json
import os
import resource
import pathlib
import select
import shutil
import signal
import subprocess
import sys
import time
from typing import Any, Callable

from specloop import netlab

from . import matrix

HERE = pathlib.Path(__file__).resolve().parent
WRK_LUA = HERE / "wrk_report.lua"
WRK_RATE_LUA = HERE / "wrk_rate.lua"
CLK_TCK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1
SERVER_CPU = 1 if NCPU > 1 else 0
CLIENT_CPU = 0
WRK_TIMEOUT = "10s"        # wrk's per-request timeout (its default, 2 s, is
                           # shorter than a 1 MiB response at 256 connections)
# the ws-echo workload's client, built by `make tools` (benchmarks/ws_load.c)
WS_LOAD = HERE.parent / "build" / "tools" / "ws_load"
WS_TIMEOUT_S = 10          # ws_load's wait for a handshake or an echo


class ServerError(Exception):
    """The server did not start, or does not answer as it should."""


# ---- /proc ------------------------------------------------------------------------------

def machine_busy_ticks() -> int:
    """Non-idle jiffies of all CPUs since boot (/proc/stat, line "cpu"):
    user nice system irq softirq steal (guest time is inside user)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    user, nice, system, idle, iowait, irq, softirq, steal = map(int, fields[1:9])
    return user + nice + system + irq + softirq + steal


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def process_tree(pid: int) -> list[int]:
    kids = _children()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, ()))
    return out


def tree_cpu_ticks(pids: list[int]) -> int:
    """utime + stime of these processes (jiffies)."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                rest = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(rest[11]) + int(rest[12])   # fields 14 and 15
    return total


def background_busy(seconds: float = 1.0) -> float:
    """How busy the machine is (percent of one CPU) over ``seconds`` while
    this suite runs nothing: other users' work on a shared machine."""
    m0, t0 = machine_busy_ticks(), time.monotonic()
    time.sleep(seconds)
    m1, t1 = machine_busy_ticks(), time.monotonic()
    return round((m1 - m0) / CLK_TCK / (t1 - t0) * 100, 1)


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _children_ctx() -> tuple[int, int]:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_nvcsw, ru.ru_nivcsw


def tree_rss_kib(pids: list[int]) -> int:
    """Sum of VmRSS of these processes (KiB)."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


# ---- what the kernel did around a cell (the "two speeds" candidates) -----------

def _softirqs() -> dict[str, list[int]]:
    """NET_RX and NET_TX softirq counts per CPU (/proc/softirqs)."""
    out: dict[str, list[int]] = {}
    try:
        with open("/proc/softirqs") as f:
            for line in f:
                parts = line.split()
                if parts and parts[0] in ("NET_RX:", "NET_TX:"):
                    out[parts[0][:-1]] = [int(x) for x in parts[1:]]
    except OSError:
        pass
    return out


def _ipis() -> dict[str, list[int]]:
    """Per CPU: rescheduling and function-call interrupts (IPIs: a wakeup
    of a task on another CPU, a remote call), TLB shootdowns and local timer
    interrupts (/proc/interrupts)."""
    out: dict[str, list[int]] = {}
    try:
        with open("/proc/interrupts") as f:
            for line in f:
                parts = line.split()
                if parts and parts[0] in ("RES:", "CAL:", "TLB:", "LOC:"):
                    out[parts[0][:-1]] = [int(x) for x in parts[1:1 + NCPU]]
    except (OSError, ValueError):
        pass
    return out


def _ctx_switches(pids: list[int]) -> tuple[int, int]:
    """(voluntary, involuntary) context switches of these processes."""
    vol = invol = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        vol += int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches:"):
                        invol += int(line.split()[1])
        except OSError:
            continue
    return vol, invol


def per_cpu_times() -> list[list[int]]:
    """Per CPU: user nice system idle iowait irq softirq steal (jiffies)."""
    out = []
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3:4].isdigit():
                out.append([int(x) for x in line.split()[1:9]])
    return out


def _ksoftirqd_ticks() -> list[int]:
    """utime+stime of ksoftirqd/N, per CPU N: softirq work the kernel
    deferred to a thread instead of running it on return from an interrupt
    or at local_bh_enable."""
    ticks = [0] * NCPU
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.find("(") + 1:stat.rfind(")")]
        if name.startswith("ksoftirqd/"):
            cpu = int(name.split("/", 1)[1])
            rest = stat.rpartition(")")[2].split()
            if cpu < NCPU:
                ticks[cpu] += int(rest[11]) + int(rest[12])
    return ticks


class KernelProbe:
    """Readings before and after a cell: per CPU, where the network softirqs
    ran (NET_RX/NET_TX counts per request), how much time went to softirq,
    to ksoftirqd (deferred softirq work), to other guests (steal) and idle.
    ``KernelProbe()`` reads; ``delta(n, seconds)`` reads again and
    compares."""

    def __init__(self, pids: list[int] | None = None) -> None:
        self.pids = pids or []
        self.t = time.monotonic()
        self.softirqs = _softirqs()
        self.ipis = _ipis()
        self.ctx = _ctx_switches(self.pids)
        self.cpu = per_cpu_times()
        self.ksoftirqd = _ksoftirqd_ticks()

    def delta(self, requests: int, seconds: float | None = None) -> dict[str, Any]:
        after = KernelProbe(self.pids)
        secs = seconds or (after.t - self.t)
        n = max(1, requests)
        pct = 100 / (CLK_TCK * secs)

        def per_cpu(col: int) -> list[float]:
            return [round((a[col] - b[col]) * pct, 1) for a, b in zip(after.cpu, self.cpu)]

        out: dict[str, Any] = {
            name.lower() + "_per_request": [round((a - b) / n, 2) for a, b in
                                            zip(after.softirqs.get(name, ()),
                                                self.softirqs.get(name, ()))]
            for name in ("NET_RX", "NET_TX")}
        out.update({
            name.lower() + "_per_request": [round((a - b) / n, 2) for a, b in
                                            zip(after.ipis.get(name, ()),
                                                self.ipis.get(name, ()))]
            for name in ("RES", "CAL")})
        if self.pids:
            out["server_ctx_switches_per_request"] = [
                round((a - b) / n, 2) for a, b in zip(after.ctx, self.ctx)]
        out.update(softirq_pct=per_cpu(6), system_pct=per_cpu(2), user_pct=per_cpu(0),
                   steal_pct=per_cpu(7), idle_pct=per_cpu(3),
                   ksoftirqd_pct=[round((a - b) * pct, 1)
                                  for a, b in zip(after.ksoftirqd, self.ksoftirqd)])
        return out


def thp_mode() -> str:
    """The machine's transparent huge page setting (the bracketed word)."""
    try:
        text = pathlib.Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return "unknown"
    return text[text.find("[") + 1:text.find("]")] if "[" in text else text.strip()


def big_anon_mappings(pid: int, min_kib: int = 32 << 10) -> list[dict[str, Any]]:
    """The process's anonymous read-write mappings of at least ``min_kib``
    (the UMEM area is one: 64 MiB by default, often merged with a neighbour),
    with their resident and transparent-huge-page KiB (/proc/PID/smaps)."""
    out: list[dict[str, Any]] = []
    cur: dict[str, Any] | None = None
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                first = line.split(None, 1)[0]
                if "-" in first and not first.endswith(":"):
                    fields = line.split()
                    anon = len(fields) < 6 and fields[1].startswith("rw")
                    cur = {"range": first} if anon else None
                    if cur is not None:
                        out.append(cur)
                elif cur is not None:
                    key, _, value = line.partition(":")
                    if key in ("Size", "Rss", "AnonHugePages"):
                        cur[{"Size": "kib", "Rss": "rss_kib",
                             "AnonHugePages": "anon_huge_kib"}[key]] = int(value.split()[0])
                    elif key == "THPeligible":
                        cur["thp_eligible"] = int(value.split()[0])
    except (OSError, ValueError, IndexError):
        return []
    return [m for m in out if m.get("kib", 0) >= min_kib]


class CpuProbe:
    """cpuprobe.c, compiled with gcc into a temporary folder: nanoseconds per
    step of a multiply-add chain and of a 4 MiB pointer chase on one CPU,
    right now (the VM's own speed, which other guests on the host move)."""

    SOURCE = HERE / "cpuprobe.c"

    def __init__(self, tmp: pathlib.Path) -> None:
        self.binary: pathlib.Path | None = None
        self.error: str | None = None
        gcc = shutil.which("gcc") or shutil.which("cc")
        if gcc is None:
            self.error = "no C compiler"
            return
        out = tmp / "cpuprobe"
        p = subprocess.run([gcc, "-O2", "-o", str(out), str(self.SOURCE)],
                           capture_output=True, text=True)
        if p.returncode != 0:
            self.error = f"gcc failed: {p.stderr.strip()[-200:]}"
            return
        self.binary = out

    def measure(self) -> list[list[float]] | None:
        """[[alu ns, chase ns] per CPU], or None without the binary."""
        if self.binary is None:
            return None
        out = []
        for cpu in range(NCPU):
            p = subprocess.run(["taskset", "-c", str(cpu), str(self.binary)],
                               capture_output=True, text=True, timeout=30)
            try:
                out.append([float(x) for x in p.stdout.split()[:2]])
            except ValueError:
                return None
        return out


# ---- clients (in the client namespace, on CLIENT_CPU) ----------------------------

def client_argv(*argv: str) -> list[str]:
    return netlab.in_ns(netlab.CLIENT_NS, "taskset", "-c", str(CLIENT_CPU), *argv)


def url(port: int, path: str) -> str:
    return f"http://{netlab.SERVER_IP}:{port}{path}"


def fetch(port: int, path: str, timeout: float = 10) -> tuple[int, bytes]:
    """(HTTP status, body) of one GET with curl from the client namespace."""
    p = subprocess.run(client_argv("curl", "-s", "-o", "-", "-w", "\n%{http_code}",
                                   "--max-time", str(timeout), url(port, path)),
                       capture_output=True, timeout=timeout + 10)
    body, _, code = p.stdout.rpartition(b"\n")
    try:
        return int(code), body
    except ValueError:
        return 0, body


def wrk(port: int, path: str, connections: int, seconds: int) -> dict[str, Any]:
    """One wrk run (-t1, --latency, our done() hook); its summary as a dict."""
    argv = client_argv("wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
                       "--timeout", WRK_TIMEOUT, "-s", str(WRK_LUA), url(port, path))
    c0, x0 = _children_cpu_s(), _children_ctx()
    p = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    client_cpu = _children_cpu_s() - c0   # wrk's own (ip netns exec and taskset exec it)
    x1 = _children_ctx()
    for line in p.stdout.splitlines():
        if line.startswith("SPECLOOP_WRK "):
            out = json.loads(line[len("SPECLOOP_WRK "):])
            out["client_cpu_s"] = client_cpu
            out["client_ctx_switches"] = [x1[0] - x0[0], x1[1] - x0[1]]
            return out
    raise RuntimeError(f"wrk gave no summary (rc {p.returncode}): "
                       f"{(p.stderr or p.stdout).strip()[-300:]}")


def wrk_rate(port: int, path: str, rate: int, connections: int, seconds: int,
             settle: float = 0.0) -> dict[str, Any]:
    """One constant-rate run: ``rate`` requests/s over ``connections``
    connections (one wrk thread each, so that wrk_rate.lua can keep each
    one's send schedule); latencies corrected for coordinated omission, of
    the requests after the first ``settle`` seconds."""
    argv = client_argv("env", f"SPECLOOP_RATE={rate}", f"SPECLOOP_RATE_CONNS={connections}",
                       f"SPECLOOP_RATE_SETTLE_US={int(settle * 1e6)}",
                       "wrk", f"-t{connections}", f"-c{connections}", f"-d{seconds}s",
                       "--timeout", WRK_TIMEOUT, "-s", str(WRK_RATE_LUA), url(port, path))
    p = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    for line in p.stdout.splitlines():
        if line.startswith("SPECLOOP_RATE "):
            return json.loads(line[len("SPECLOOP_RATE "):])
    raise RuntimeError(f"wrk (constant rate) gave no summary (rc {p.returncode}): "
                       f"{(p.stderr or p.stdout).strip()[-300:]}")


def ws_load_binary() -> pathlib.Path:
    """build/tools/ws_load, or RuntimeError saying how to build it."""
    if not os.access(WS_LOAD, os.X_OK):
        raise RuntimeError(f"{WS_LOAD} is missing: run `make tools`")
    return WS_LOAD


def _read_line(stream: Any, deadline: float) -> bytes:
    """One line from a pipe, or b"" at EOF; RuntimeError after ``deadline``."""
    buf = b""
    fd = stream.fileno()
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise RuntimeError("ws_load said nothing in time")
        chunk = os.read(fd, 1)
        if not chunk:
            break
        buf += chunk
    return buf


def ws_load(port: int, path: str, connections: int, seconds: int, warmup: int,
            begin: Callable[[], None]) -> dict[str, Any]:
    """One ws_load run: ``connections`` WebSocket connections opened, then
    ``warmup`` seconds of echoes, then (the messages in flight back, every
    connection idle) ``begin()`` is called and ``seconds`` are measured.
    Its summary in wrk's shape (``requests`` are echoed messages).  Any
    error, a wrong echo above all, raises RuntimeError with ws_load's
    reason."""
    argv = client_argv(str(ws_load_binary()), "-s", "-c", str(connections), "-w", str(warmup),
                       "-d", str(seconds), "-t", str(WS_TIMEOUT_S), netlab.SERVER_IP, str(port),
                       path)
    x0 = _children_ctx()
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    assert p.stdin is not None and p.stdout is not None
    try:
        # warm-up done and drained: ws_load waits for our line
        line = _read_line(p.stdout, time.monotonic() + warmup + 3 * WS_TIMEOUT_S + 30)
        if line != b"WARM\n":
            p.wait(10)
            raise RuntimeError(f"ws_load rc {p.returncode} before its measured phase: "
                               f"{_tail(p.stderr.read() if p.stderr else b'')}")
        begin()
        out, err = p.communicate(b"\n", timeout=seconds + 2 * WS_TIMEOUT_S + 30)
    except (subprocess.TimeoutExpired, RuntimeError):
        p.kill()
        p.wait()
        raise
    finally:
        for f in (p.stdin, p.stdout, p.stderr):
            if f is not None and not f.closed:
                f.close()
    x1 = _children_ctx()
    if p.returncode != 0:
        raise RuntimeError(f"ws_load rc {p.returncode}: {_tail(err)}")
    r = json.loads(out.decode().strip().splitlines()[-1])
    return {"requests": r["messages"], "duration_us": r["seconds"] * 1e6, "bytes": r["bytes"],
            "errors": r["errors"], "latency_us": r["latency_us"],
            "client_cpu_s": r["client_cpu_s"],   # over the measured seconds only
            "client_busy_pct": r["client_busy"] * 100,
            "client_ctx_switches": [x1[0] - x0[0], x1[1] - x0[1]]}


def ws_check(port: int, path: str) -> dict[str, Any]:
    """One connection, one text and one binary message: the handshake (101
    and its Sec-WebSocket-Accept) and both echoes byte for byte, or
    ServerError with ws_load's reason."""
    for binary in ((), ("-b",)):
        argv = client_argv(str(ws_load_binary()), "-c", "1", "-w", "0", "-n", "1", "-d", "10",
                           "-t", "5", *binary, netlab.SERVER_IP, str(port), path)
        p = subprocess.run(argv, capture_output=True, timeout=30)
        if p.returncode != 0:
            raise ServerError(f"WebSocket echo at {path}: {_tail(p.stderr)}")
        if json.loads(p.stdout.decode().splitlines()[-1])["messages"] != 1:
            raise ServerError(f"WebSocket echo at {path}: no echo")
    return {"path": path, "status": 101, "bytes": 13, "body_ok": True}


def _tail(err: bytes) -> str:
    return err.decode(errors="replace").strip()[-300:] or "(nothing on stderr)"


def curl_bulk(port: int, path: str, timeout: float) -> dict[str, Any]:
    """One download to /dev/null: bytes, seconds, bytes/s (curl's own)."""
    argv = client_argv("curl", "-s", "-o", "/dev/null", "--max-time", str(int(timeout)), "-w",
                       "%{http_code} %{size_download} %{time_total} %{speed_download}",
                       url(port, path))
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 30)
    fields = p.stdout.split()
    if len(fields) != 4:
        raise RuntimeError(f"curl rc {p.returncode}: {p.stderr.strip()[-200:]}")
    code, size, total, speed = fields
    return {"rc": p.returncode, "status": int(code), "bytes": int(float(size)),
            "seconds": float(total), "bytes_per_s": float(speed)}


# ---- servers (in the server namespace, on SERVER_CPU) -----------------------------

NGINX_CONF = """\
# generated by specloop's benchmark suite
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    sendfile {sendfile};
    tcp_nopush {tcp_nopush};
    open_file_cache {open_file_cache};
    access_log off;
    keepalive_requests 100000000;  # wrk keeps connections; so do the Python servers
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen {host}:{port} backlog=1024;
        location = / {{
            default_type text/plain;
            return 200 "Hello, world!";
        }}
        location /static/ {{
            alias {static}/;
        }}
    }}
}}
"""


class ServerProcess:
    """One server, started, checked and stopped."""

    def __init__(self, server: matrix.Server, port: int, static_dir: pathlib.Path,
                 tmp: pathlib.Path) -> None:
        self.server = server
        self.port = port
        self.static_dir = static_dir
        self.tmp = tmp / f"{server.id}-{port}"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.pids: list[int] = []

    def argv_env(self) -> tuple[list[str], dict[str, str]]:
        s = self.server
        env = dict(os.environ)
        env.pop("SPECLOOP_INTERFACE", None)
        if s.kind == "nginx":
            nginx = shutil.which("nginx") or "/usr/sbin/nginx"
            conf = self.tmp / "nginx.conf"
            directives = {"sendfile": "on", "tcp_nopush": "off",
                          "open_file_cache": matrix.NGINX_CACHE, **dict(s.nginx)}
            conf.write_text(NGINX_CONF.format(tmp=self.tmp, host=netlab.SERVER_IP,
                                              port=self.port, static=self.static_dir,
                                              **directives))
            argv = [nginx, "-p", str(self.tmp), "-e", str(self.tmp / "error.log"),
                    "-c", str(conf), "-g", "daemon off;"]
        else:
            assert s.script is not None and s.loop is not None
            argv = [sys.executable, str(s.script), "--loop", s.loop,
                    "--host", netlab.SERVER_IP, "--port", str(self.port)]
            if s.static:
                argv += ["--static", str(self.static_dir)]
            if s.fast_path:
                argv.append("--fast-path")
            if s.bypass:
                env["SPECLOOP_INTERFACE"] = netlab.SERVER_IF
            env.update(s.env)
        return netlab.in_ns(netlab.SERVER_NS, "taskset", "-c", str(SERVER_CPU), *argv), env

    def start(self, timeout: float = 30) -> None:
        if self.server.kind == "nginx" and not (shutil.which("nginx") or
                                                os.path.exists("/usr/sbin/nginx")):
            raise ServerError("nginx is not installed (apt-get install nginx)")
        argv, env = self.argv_env()
        self._out = open(self.tmp / "stdout", "wb")
        self._err = open(self.tmp / "stderr", "wb")
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self._out, stderr=self._err,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        ready = self.server.kind == "nginx"   # nginx prints nothing: the check waits
        while not ready:
            if self.proc.poll() is not None:
                raise ServerError(f"exited with status {self.proc.returncode} before READY: "
                                  f"{self.last_error()}")
            if b"READY" in (self.tmp / "stdout").read_bytes():
                break
            if time.monotonic() > deadline:
                raise ServerError(f"no READY within {timeout:.0f} s: {self.last_error()}")
            time.sleep(0.02)
        # answers GET / (every server), from the client namespace
        while True:
            if self.proc.poll() is not None:
                raise ServerError(f"exited with status {self.proc.returncode}: "
                                  f"{self.last_error()}")
            status, body = fetch(self.port, "/", timeout=2)
            if status:
                break
            if time.monotonic() > deadline:
                raise ServerError(f"no answer to GET / within {timeout:.0f} s: "
                                  f"{self.last_error()}")
            time.sleep(0.1)
        time.sleep(0.2 if self.server.kind == "nginx" else 0)   # its worker is up
        self.pids = process_tree(self.proc.pid)

    def check(self, wl: matrix.Workload | None, expect: bytes) -> dict[str, Any]:
        """GET of the workload's path (or /) must answer 200 with ``expect``
        (a 403 or a 404 benchmarks beautifully); a WebSocket workload's
        path must answer the handshake with 101 and echo a text and a binary
        message; returns what it saw."""
        if wl is not None and wl.websocket:
            return ws_check(self.port, wl.path)
        path = wl.path if wl is not None else "/"
        status, body = fetch(self.port, path)
        if status != 200 or body != expect:
            raise ServerError(f"GET {path}: status {status}, {len(body)} bytes"
                              f"{' (wrong body)' if status == 200 else ''}; "
                              f"expected 200 with {len(expect)} bytes")
        return {"path": path, "status": status, "bytes": len(body), "body_ok": True}

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def last_error(self) -> str:
        lines = []
        for name in ("stderr", "error.log"):
            p = self.tmp / name
            if p.exists():
                lines += [ln for ln in p.read_text(errors="replace").splitlines() if ln.strip()]
        if not lines:
            return "(nothing on stderr)"
        # the exception line of a traceback beats a warning printed after it
        errors = [ln for ln in lines if not ln.startswith(" ") and
                  ("Error" in ln or "Exception" in ln or "[emerg]" in ln)]
        return (errors or lines)[-1].strip()[-300:]

    def refresh_pids(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.pids = process_tree(self.proc.pid)

    def cpu_ticks(self) -> int:
        return tree_cpu_ticks(self.pids)

    def rss_kib(self) -> int:
        return tree_rss_kib(self.pids)

    def big_anon_mappings(self) -> list[dict[str, Any]]:
        return big_anon_mappings(self.pids[0]) if self.pids else []

    def stop(self, timeout: float = 3) -> str | None:
        """SIGTERM, then SIGKILL after ``timeout`` s; says so if it had to kill."""
        p = self.proc
        if p is None:
            return None
        note = None
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                note = f"did not exit within {timeout:.0f} s of SIGTERM at the end (killed)"
        for f in (self._out, self._err):
            f.close()
        self.proc = None
        return note
