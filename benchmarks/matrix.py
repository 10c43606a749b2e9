"""What the suite measures: servers (found in servers/*_app.py, plus
nginx), workloads, connection counts, and the plan that orders them.

Every app script is read with ``ast``, not imported: a script's framework
need not be installed for the suite to list it (its row then says why it
did not start).
"""

from __future__ import annotations

import ast
import dataclasses
import fnmatch
import pathlib
from typing import Iterable, Sequence

HERE = pathlib.Path(__file__).resolve().parent
SERVERS_DIR = HERE / "servers"

ALL_LOOPS = ("asyncio", "uvloop", "specloop")
# the rows every ratio is taken against: "nginx" is the fastest of the nginx
# configurations (NGINX_CONFIGS) in each cell; "uvloop" is the same app's
# uvloop row, and aiohttp's (REF_UVLOOP) for rows without one (nginx)
REF_NGINX = "nginx"
REF_UVLOOP = "aiohttp-uvloop"

# nginx runs in each of these configurations, each its own server row (id,
# label, directives); in every cell the fastest of them is "nginx" for the
# ×nginx ratios (issue 10: compare against the competitor at its best).
# tcp_nopush (TCP_CORK around sendfile) is ~40% slower for 8 KiB on this veth
# than nginx's default (off); sendfile off reads and writes through a buffer.
# open_file_cache keeps the files' descriptors and stat() results, as the fast
# path keeps its files: without it nginx opens, stats and closes the file per
# request (64 B at 32 connections: ~14 against ~8.5 µs of CPU a request); the
# last row is nginx without it, to show that knob.
NGINX_CACHE = "max=1000 inactive=60s"
NGINX_CONFIGS: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    ("nginx-sendfile", "nginx · sendfile",
     (("sendfile", "on"), ("tcp_nopush", "off"), ("open_file_cache", NGINX_CACHE))),
    ("nginx-nopush", "nginx · sendfile + tcp_nopush",
     (("sendfile", "on"), ("tcp_nopush", "on"), ("open_file_cache", NGINX_CACHE))),
    ("nginx-nosendfile", "nginx · no sendfile",
     (("sendfile", "off"), ("tcp_nopush", "off"), ("open_file_cache", NGINX_CACHE))),
    ("nginx-nocache", "nginx · no sendfile, no open_file_cache",
     (("sendfile", "off"), ("tcp_nopush", "off"), ("open_file_cache", "off"))),
)

# the constant-rate latency cell: requests/s that every server here sustains
# (aiohttp's FileResponse on asyncio makes ~3,000 8 KiB responses/s on one
# connection), over this many connections (suite.py runs it, report.py shows it)
RATE = 2000
RATE_CONNECTIONS = 8


@dataclasses.dataclass(frozen=True)
class Workload:
    id: str
    label: str
    path: str          # URL path on the server
    file: str | None   # name in the static dir, for static workloads
    size: int          # body bytes (ws_load: message bytes)
    client: str = "wrk"   # the load generator: "wrk" (HTTP) or "ws_load" (WebSocket echo)

    @property
    def static(self) -> bool:
        return self.file is not None

    @property
    def websocket(self) -> bool:
        """A WebSocket workload: one message per "request", sent by
        benchmarks/ws_load.c; only servers whose script names it in
        WORKLOADS run it."""
        return self.client == "ws_load"


WORKLOADS: tuple[Workload, ...] = (
    Workload("hello", "dynamic hello (13 B body)", "/", None, 13),
    Workload("static-64", "static file, 64 B", "/static/64B.bin", "64B.bin", 64),
    Workload("static-8k", "static file, 8 KiB", "/static/8KiB.bin", "8KiB.bin", 8192),
    Workload("static-1m", "static file, 1 MiB", "/static/1MiB.bin", "1MiB.bin", 1 << 20),
    # closed loop over WebSocket: each connection sends "Hello, world!" in a
    # masked frame and waits for the echo (benchmarks/ws_load.c checks it)
    Workload("ws-echo", "websocket echo (13 B message)", "/", None, 13, client="ws_load"),
)
WS_ECHO = "ws-echo"
BULK = "bulk"        # the single-flow goodput workload's id
CEILING = "ceiling"  # the transport's TX ceiling (ceiling.py): no server, once per run
# the order the plan runs them in: the WebSocket workloads after bulk, so
# that the HTTP workloads keep their place (and their server order)
WORKLOAD_IDS = (tuple(w.id for w in WORKLOADS if not w.websocket) + (BULK,)
                + tuple(w.id for w in WORKLOADS if w.websocket) + (CEILING,))
WEBSOCKET_IDS = frozenset(w.id for w in WORKLOADS if w.websocket)


# ---- the static fast path switch ------------------------------------------------

def fast_path_unavailable() -> str | None:
    """THE switch for the "specloop static fast path" row (issue 4): None when
    ``specloop.aiohttp.add_static`` exists, so the row runs aiohttp_app.py
    with ``--fast-path`` over the bypass; otherwise why the row cannot run."""
    try:
        import specloop.aiohttp as fast  # noqa: F401  (the feature under test)
    except ImportError as exc:
        return f"not built yet (import specloop.aiohttp: {exc})"
    if not hasattr(fast, "add_static"):
        return "not built yet (specloop.aiohttp has no add_static)"
    return None


def fast_path_max_file_size() -> int | None:
    """The largest file ``specloop.aiohttp.add_static`` keeps as packets by
    default (larger ones are served by aiohttp), or None if unknown."""
    try:
        import inspect

        import specloop.aiohttp as fast
        default = inspect.signature(fast.add_static).parameters["max_file_size"].default
    except (ImportError, AttributeError, KeyError, TypeError, ValueError):
        return None
    return default if isinstance(default, int) else None


# ---- servers ------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Server:
    id: str                    # for --servers, in JSON
    label: str                 # in tables and plots
    kind: str                  # "app" or "nginx"
    app: str | None = None     # "aiohttp", "uvicorn", ... (kind "app")
    script: pathlib.Path | None = None
    loop: str | None = None    # asyncio / uvloop / specloop
    bypass: bool = False       # specloop with SPECLOOP_INTERFACE set
    fast_path: bool = False    # aiohttp_app.py --fast-path
    static: bool = True        # serves files under /static/
    core: bool = True          # runs every workload by default
    unavailable: str | None = None   # why it cannot run at all
    env: tuple[tuple[str, str], ...] = ()   # extra environment (SPECLOOP_* settings)
    nginx: tuple[tuple[str, str], ...] = ()  # nginx directives (kind "nginx")
    varies: bool = False       # its speed varies per process: at least
                               # --fast-path-runs fresh processes per cell
    workloads: tuple[str, ...] | None = None   # the only workloads it serves (its
                               # script's WORKLOADS); None: the HTTP ones

    @property
    def uvloop_ref(self) -> str:
        """The row this one's ×uvloop is taken against: the same app on
        uvloop (aiohttp's for nginx)."""
        return f"{self.app}-uvloop" if self.app else REF_UVLOOP

    def cannot(self, workload_id: str) -> str | None:
        """Why this server cannot run ``workload_id``, or None."""
        if self.unavailable:
            return self.unavailable
        if self.workloads is not None:
            if workload_id in self.workloads:
                return None
            return f"serves only {', '.join(self.workloads)} (WORKLOADS in its script)"
        if workload_id in WEBSOCKET_IDS:
            return ("speaks no WebSocket: ws-echo runs on the WebSocket echo servers "
                    "(servers/websockets_app.py)")
        if workload_id != "hello" and not self.static:
            return "serves no static files (STATIC = False in its script)"
        if workload_id == "hello" and self.fast_path:
            return ("not applicable: the fast path answers registered static routes; "
                    "hello is dynamic (see the specloop bypass row)")
        return None

    def runs_by_default(self, workload_id: str) -> bool:
        """Whether the plan includes this row for ``workload_id`` when no
        --servers names it: the core rows every HTTP workload, the other
        apps hello, a server with WORKLOADS just those."""
        if self.workloads is not None:
            return workload_id in self.workloads
        if workload_id in WEBSOCKET_IDS:
            return False
        return self.core or workload_id == "hello"


def _constants(script: pathlib.Path) -> dict[str, object]:
    """The literal module-level constants of a server script."""
    out: dict[str, object] = {}
    tree = ast.parse(script.read_text(), str(script))
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return out


def discover(servers_dir: pathlib.Path = SERVERS_DIR) -> list[Server]:
    """Every server row: aiohttp's, nginx, then three per other app script
    (on asyncio's default loop, uvloop and specloop's bypass), in a fixed
    order."""
    rows: list[Server] = []
    scripts = sorted(servers_dir.glob("*_app.py"))
    by_app = {p.name[:-len("_app.py")]: p for p in scripts}
    aio = by_app.pop("aiohttp", None)
    if aio is not None:
        c = _constants(aio)
        static = bool(c.get("STATIC", False))
        rows += [
            Server("aiohttp-asyncio", "aiohttp · asyncio", "app", "aiohttp", aio, "asyncio",
                   static=static),
            Server("aiohttp-uvloop", "aiohttp · uvloop", "app", "aiohttp", aio, "uvloop",
                   static=static),
            Server("aiohttp-specloop-kernel", "aiohttp · specloop kernel path", "app",
                   "aiohttp", aio, "specloop", static=static),
            Server("aiohttp-specloop-bypass", "aiohttp · specloop bypass", "app", "aiohttp",
                   aio, "specloop", bypass=True, static=static),
            # the fast path's speed differs from process to process ("two
            # steady speeds", README Limits): several fresh processes per cell
            Server("aiohttp-specloop-fastpath", "specloop static fast path", "app", "aiohttp",
                   aio, "specloop", bypass=True, fast_path=True, static=static,
                   unavailable=fast_path_unavailable(), varies=True),
            # issue 4: multi-buffer TX (header frame + shared payload frame)
            # against one copied frame per packet, side by side
            Server("aiohttp-specloop-fastpath-mb", "specloop static fast path · multi-buffer TX",
                   "app", "aiohttp", aio, "specloop", bypass=True, fast_path=True,
                   static=static, unavailable=fast_path_unavailable(),
                   env=(("SPECLOOP_TX_MULTIBUFFER", "1"),), varies=True),
        ]
    rows += [Server(sid, label, "nginx", nginx=conf) for sid, label, conf in NGINX_CONFIGS]
    for app, script in by_app.items():
        c = _constants(script)
        loops = c.get("LOOPS", ALL_LOOPS)
        loops = tuple(loops) if isinstance(loops, (tuple, list)) else ALL_LOOPS
        static = bool(c.get("STATIC", False))
        served = c.get("WORKLOADS")
        served = tuple(served) if isinstance(served, (tuple, list)) else None
        # issue 7: each server on the default loop, uvloop and specloop
        wanted = [lp for lp in ("asyncio", "uvloop", "specloop") if lp in loops] or list(loops[:1])
        for lp in wanted:
            bypass = lp == "specloop"
            suffix = "specloop-bypass" if bypass else lp
            label = "specloop bypass" if bypass else lp
            rows.append(Server(f"{app}-{suffix}", f"{app} · {label}", "app", app, script, lp,
                               bypass=bypass, static=static, core=False, workloads=served))
    return rows


def _matches(row: Server, pattern: str) -> bool:
    # "nginx" names every nginx configuration (there is no row "nginx")
    if pattern == REF_NGINX:
        return row.kind == "nginx"
    return fnmatch.fnmatchcase(row.id, pattern)


def select_servers(rows: Sequence[Server], patterns: str | None) -> list[Server]:
    """Rows whose id matches one of the comma-separated fnmatch patterns
    ("nginx": every nginx configuration)."""
    if not patterns:
        return list(rows)
    pats = [p.strip() for p in patterns.split(",") if p.strip()]
    for p in pats:
        if not any(_matches(r, p) for r in rows):
            raise ValueError(f"--servers: {p!r} matches no server; "
                             f"known: {', '.join(r.id for r in rows)}")
    return [r for r in rows if any(_matches(r, p) for p in pats)]


def select_workloads(ids: str | None, default: Iterable[str]) -> list[str]:
    if not ids:
        return list(default)
    out = [w.strip() for w in ids.split(",") if w.strip()]
    for w in out:
        if w not in WORKLOAD_IDS:
            raise ValueError(f"--workloads: unknown {w!r}; known: {', '.join(WORKLOAD_IDS)}")
    return [w for w in WORKLOAD_IDS if w in out]


def workload(wid: str) -> Workload:
    for w in WORKLOADS:
        if w.id == wid:
            return w
    raise KeyError(wid)


# ---- the plan -------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Step:
    """One server start for one workload: its cells, or why none run."""
    workload: str
    server: Server
    connections: tuple[int, ...]      # empty for bulk
    skip: str | None = None
    runs: int = 1                     # fresh server processes, each runs every cell


def plan(servers: Sequence[Server], workloads: Sequence[str], connections: Sequence[int],
         explicit_servers: bool, extra_connections: Sequence[int] | None = None,
         runs: int = 1, varies_runs: int = 1) -> list[Step]:
    """Workload by workload, every server once, the server order rotated by
    one per workload so that no server is always first (drift hits all
    alike).  Extra apps run only hello unless named with --servers, at
    ``extra_connections`` if given; a server with WORKLOADS in its script
    (the WebSocket echo) only those, and the WebSocket workloads only such
    servers (``Server.runs_by_default``).  Each step runs in ``runs`` fresh
    server processes, at least ``varies_runs`` for a server whose speed
    varies from process to process."""
    steps: list[Step] = []
    workloads = [w for w in workloads if w != CEILING]
    for i, wid in enumerate(workloads):
        rows = [s for s in servers if explicit_servers or s.runs_by_default(wid)]
        if rows:
            k = i % len(rows)
            rows = rows[k:] + rows[:k]
        for s in rows:
            skip = s.cannot(wid)
            conns = () if wid == BULK else tuple(
                connections if s.core or extra_connections is None else extra_connections)
            steps.append(Step(wid, s, conns, skip,
                              max(runs, varies_runs) if s.varies else runs))
    return steps
