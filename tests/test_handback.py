"""Hand-back: a connection whose request went to Python comes back to the
fast path once Python's response is complete (RFC 9112 §6.3 framing of
what Python wrote), so the static requests after a dynamic one are still
answered in C.

The same aiohttp app is served twice on one bypass loop: with
``specloop.aiohttp.add_static`` (the fast path, hand-back on), and with
aiohttp's own ``add_static`` (every request through aiohttp: the
reference).  A raw socket in the client namespace sends the same bytes to
both, on one keep-alive connection (one request at a time, or several
written at once), reads each response by its framing, and the two byte
streams must be equal once the Date fields are taken out.  A raw
asyncio.Protocol behind ``loop.add_static_route`` writes exactly the
responses the framing must judge (lengths missing, doubled, exceeded).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys

import pytest
from aiohttp import web

import specloop
import specloop.aiohttp
from specloop import netlab

from labtools import arun_client

pytestmark = pytest.mark.lab

FAST_PORT = 8094
REF_PORT = 8095
HOST = netlab.SERVER_IP

# One connection, a list of steps; each step is bytes written at once and
# the methods of the requests in it (to read each response by RFC 9112
# §6.3).  Prints the responses (1xx included) and whether the server closed.
CLIENT = r"""
import json, socket, sys, time

def read_exact(s, buf, n):
    while len(buf) < n:
        d = s.recv(1 << 20)
        if not d:
            raise EOFError("closed mid-response")
        buf += d
    return buf

def read_line(s, buf):
    while b"\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            raise EOFError("closed mid-line")
        buf += d
    i = buf.index(b"\r\n") + 2
    return buf[:i], buf[i:]

def read_response(s, buf, method):
    '''One response and what follows it; interim 1xx go with it.'''
    out = b""
    while True:
        while b"\r\n\r\n" not in buf:
            d = s.recv(65536)
            if not d:
                raise EOFError("closed before a response: %r" % (out + buf))
            buf += d
        i = buf.index(b"\r\n\r\n") + 4
        head, buf = buf[:i], buf[i:]
        out += head
        status = int(head.split(b" ", 2)[1])
        if 100 <= status < 200 and status != 101:
            if method == "INTERIM":
                return out, buf, False
            continue
        break
    fields = {}
    for line in head.split(b"\r\n")[1:]:
        if b":" in line:
            k, _, v = line.partition(b":")
            fields.setdefault(k.strip().lower(), []).append(v.strip())
    if method == "HEAD" or status in (204, 304) or status < 200:
        return out, buf, False
    if b"transfer-encoding" in fields:
        while True:
            line, buf = read_line(s, buf)
            out += line
            size = int(line.split(b";")[0], 16)
            if size == 0:
                while True:
                    line, buf = read_line(s, buf)
                    out += line
                    if line == b"\r\n":
                        return out, buf, False
            buf = read_exact(s, buf, size + 2)
            out += buf[:size + 2]
            buf = buf[size + 2:]
    if b"content-length" in fields:
        n = int(fields[b"content-length"][0])
        buf = read_exact(s, buf, n)
        return out + buf[:n], buf[n:], False
    while True:  # close-delimited
        d = s.recv(65536)
        if not d:
            return out + buf, b"", True
        buf += d

cfg = json.loads(sys.stdin.read())
s = socket.create_connection((cfg["host"], cfg["port"]), timeout=10)
buf, out, closed = b"", [], False
for raw, methods, pause in cfg["steps"]:
    s.sendall(raw.encode("latin-1"))
    for m in methods:
        r, buf, closed = read_response(s, buf, m)
        out.append(r.decode("latin-1"))
    if pause:
        time.sleep(pause)
if not closed:
    s.settimeout(cfg.get("linger", 0.3))
    try:
        closed = s.recv(1) == b""
    except socket.timeout:
        closed = False
print(json.dumps({"responses": out, "closed": closed, "extra": buf.decode("latin-1")}))
"""


def req(path: str, *headers: str, method: str = "GET", body: str = "",
        version: str = "1.1") -> str:
    lines = [f"{method} {path} HTTP/{version}", "Host: x", *headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return "\r\n".join(lines) + "\r\n\r\n" + body


def step(*requests: str, methods: list[str] | None = None, pause: float = 0.0) -> list:
    """Requests written at once; their methods read from their request lines."""
    if methods is None:
        methods = [r.split(" ", 1)[0] for r in requests]
    return ["".join(requests), methods, pause]


async def talk(port: int, steps: list, *, linger: float = 0.3) -> dict:
    cfg = json.dumps({"host": HOST, "port": port, "steps": steps, "linger": linger})
    rc, out, err = await arun_client(sys.executable, "-c", CLIENT, stdin=cfg.encode(),
                                     timeout=120)
    assert rc == 0, err.decode()[-3000:]
    return json.loads(out)


def undated(responses: list[str]) -> list[str]:
    """The responses without their Date fields (the one thing that may differ)."""
    return [re.sub(r"\r\nDate: [^\r]*", "", r) for r in responses]


class Counter:
    def __init__(self) -> None:
        self.python_requests = 0
        self.protocols: list = []  # the protocol of each request, in order

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        self.python_requests += 1
        self.protocols.append(request.protocol)
        return await handler(request)


def make_app(files, counter: Counter, *, fast: bool, hand_back: bool = True) -> web.Application:
    app = web.Application(middlewares=[counter.middleware])

    async def dyn(request: web.Request) -> web.Response:
        return web.Response(text="from python " + request.query.get("n", ""))

    async def post(request: web.Request) -> web.Response:
        body = await request.read()
        return web.Response(body=b"got %d bytes: " % len(body) + body[:16])

    async def no_content(request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def not_modified(request: web.Request) -> web.Response:
        return web.Response(status=304, headers={"ETag": '"x"'})

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(3):
            await resp.write(b"part %d;" % i)
        await resp.write_eof()
        return resp

    app.router.add_get("/dyn", dyn)  # HEAD too
    app.router.add_post("/post", post)
    app.router.add_get("/204", no_content)
    app.router.add_get("/304", not_modified)
    app.router.add_get("/chunked", chunked)
    if fast:
        specloop.aiohttp.add_static(app, "/static", files, hand_back=hand_back)
    else:
        app.router.add_static("/static", files)
    return app


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("handback")
    for name, size in {"a.css": 100, "b.js": 5000, "c.bin": 70000, "zero.txt": 0}.items():
        (d / name).write_bytes(os.urandom(size))
    return d


@pytest.fixture
def servers(in_server_ns, files):
    """(loop, counter of the fast app): the fast app on FAST_PORT, the
    reference (the same app, aiohttp's own static route) on REF_PORT."""
    loop = specloop.new_event_loop(interface=in_server_ns.server_if)
    asyncio.set_event_loop(loop)
    counter = Counter()
    runners = [web.AppRunner(make_app(files, counter, fast=True)),
               web.AppRunner(make_app(files, Counter(), fast=False))]
    for runner, port in zip(runners, (FAST_PORT, REF_PORT)):
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, HOST, port).start())
    try:
        yield loop, counter
    finally:
        for runner in runners:
            loop.run_until_complete(runner.cleanup())
        asyncio.set_event_loop(None)
        loop.close()


def compare(loop, steps: list) -> tuple[dict, dict]:
    async def main():
        return await talk(FAST_PORT, steps), await talk(REF_PORT, steps)

    fast, ref = loop.run_until_complete(main())
    assert undated(fast["responses"]) == undated(ref["responses"])
    assert (fast["closed"], fast["extra"]) == (ref["closed"], ref["extra"])
    return fast, ref


def delta(loop, before: dict, *names: str) -> dict:
    after = loop.stack.counters()
    return {n: after[n] - before[n] for n in names}


COUNTS = ("fast_requests", "fast_handovers", "fast_handbacks")


def test_alternating_dynamic_and_static_on_one_connection(servers):
    loop, counter = servers
    steps = []
    for i in range(6):
        steps.append(step(req(f"/dyn?n={i}")))
        steps.append(step(req("/static/a.css")))
        steps.append(step(req("/static/c.bin")))
    before = loop.stack.counters()
    fast, _ = compare(loop, steps)
    assert len(fast["responses"]) == 18 and not fast["closed"]
    assert "from python 5" in fast["responses"][15]
    d = delta(loop, before, *COUNTS)
    # every static request after a dynamic one was answered in C
    assert d == {"fast_requests": 12, "fast_handovers": 6, "fast_handbacks": 6}
    assert counter.python_requests == 6
    # aiohttp's protocol stayed attached, idle, while the fast path answered:
    # one protocol for the connection's six dynamic requests
    assert all(p is counter.protocols[0] for p in counter.protocols)


def test_pipelined_mixes(servers):
    loop, counter = servers
    s, dyn = req("/static/b.js"), req("/dyn?n=p")
    steps = [
        step(s, dyn, s, s),                       # fast, Python, fast, fast
        step(dyn, dyn, s),                        # two Python in a row, then fast
        step(req("/static/c.bin"), dyn, req("/static/a.css"), dyn, req("/static/zero.txt")),
        step(req("/post", method="POST", body="x" * 3000), s,
             req("/post", method="POST", body="y" * 10), req("/static/a.css", method="HEAD")),
        step(req("/static/a.css"), req("/nope"), s),  # a 404 from aiohttp in between
    ]
    before = loop.stack.counters()
    fast, _ = compare(loop, steps)
    assert len(fast["responses"]) == 19
    assert "got 3000 bytes: xxxx" in fast["responses"][12]
    assert "got 10 bytes: yyyy" in fast["responses"][14]
    d = delta(loop, before, *COUNTS)
    assert d == {"fast_requests": 11, "fast_handovers": 8, "fast_handbacks": 8}
    assert counter.python_requests == 8


def test_python_response_kinds_come_back(servers):
    """HEAD, 204, 304, chunked, interim 100 Continue: each ends where RFC
    9112 §6.3 says, and the static request after it is the fast path's."""
    loop, counter = servers
    s = req("/static/a.css")
    steps = [
        step(req("/dyn", method="HEAD")), step(s),
        step(req("/204")), step(s),
        step(req("/304")), step(s),
        step(req("/chunked")), step(s),
        step(req("/chunked"), s, req("/204"), s, req("/dyn", method="HEAD"), s),
    ]
    before = loop.stack.counters()

    async def main():
        out = {}
        for port in (FAST_PORT, REF_PORT):
            # the 100 Continue is read as its own "response", then the body sent
            # on, and the final one read with the next step
            out[port] = await talk(port, steps + [
                ["POST /post HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                 "Content-Length: 5\r\n\r\n", ["INTERIM"], 0],
                ["hello", ["POST"], 0], step(s)])
        return out

    out = loop.run_until_complete(main())
    assert undated(out[FAST_PORT]["responses"]) == undated(out[REF_PORT]["responses"])
    got = out[FAST_PORT]["responses"]
    assert [r.split("\r\n", 1)[0] for r in got[:8]] == [
        "HTTP/1.1 200 OK", "HTTP/1.1 200 OK", "HTTP/1.1 204 No Content", "HTTP/1.1 200 OK",
        "HTTP/1.1 304 Not Modified", "HTTP/1.1 200 OK", "HTTP/1.1 200 OK", "HTTP/1.1 200 OK"]
    assert got[6].endswith("0\r\n\r\n")
    assert got[-3].startswith("HTTP/1.1 100 Continue") and "got 5 bytes: hello" in got[-2]
    d = delta(loop, before, *COUNTS)
    assert d == {"fast_requests": 8, "fast_handovers": 8, "fast_handbacks": 8}
    assert not out[FAST_PORT]["closed"]


def test_connection_close_keeps_it_with_python(servers):
    loop, counter = servers
    steps = [step(req("/dyn", "Connection: close"))]
    before = loop.stack.counters()
    fast, _ = compare(loop, steps)
    assert fast["closed"]
    steps = [step(req("/dyn", version="1.0"))]
    fast, _ = compare(loop, steps)
    assert fast["closed"]
    d = delta(loop, before, "fast_handbacks", "fast_stay_close")
    assert d == {"fast_handbacks": 0, "fast_stay_close": 2}


# ---- what the framing must not guess: a raw protocol writes it --------------------

RAW_PORT = 8096
A_CSS_MARK = "PYTHON-SAW"

RAW_RESPONSES = {
    # comes back
    "/cl": (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", None),
    "/interim": (b"HTTP/1.1 103 Early Hints\r\nLink: </static/a.css>\r\n\r\n"
                 b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", None),
    "/chunked-trailer": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"2;x=y\r\nok\r\n0\r\nX-Sum: 1\r\n\r\n", None),
    # stays with Python, each for its reason
    "/close-delimited": (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close",
                         "fast_stay_close_delimited"),
    "/te-not-chunked": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzz",
                        "fast_stay_close_delimited"),
    "/cl-and-te": (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"0\r\n\r\n", "fast_stay_cl_and_te"),
    "/cl-list": (b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok", "fast_stay_bad_length"),
    "/cl-twice": (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
                  "fast_stay_bad_length"),
    "/cl-sign": (b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok", "fast_stay_bad_length"),
    "/extra": (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", "fast_stay_extra_bytes"),
    "/bad-chunk": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                   "fast_stay_bad_chunk"),
    "/bad-status": (b"HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\nok", "fast_stay_malformed"),
    "/bare-lf": (b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", "fast_stay_malformed"),
    "/switch": (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
                "fast_stay_upgrade"),
    "/close": (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
               "fast_stay_close"),
}


class RawHTTP(asyncio.Protocol):
    """Answers each request with RAW_RESPONSES[path] written as it is; a
    request for /static/... (which only reaches it when the connection
    stayed with Python) gets a marker, and the connection closes."""

    lost: list = []  # connection_lost's argument, per connection

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.buf = b""

    def connection_lost(self, exc) -> None:
        RawHTTP.lost.append(exc)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            head, _, self.buf = self.buf.partition(b"\r\n\r\n")
            parts = head.split(b" ", 2)
            if len(parts) < 3:
                continue  # a chunked body's last chunk, read as a "header"
            path = parts[1].decode(errors="replace")
            if path.startswith("/static/"):
                body = f"{A_CSS_MARK} {path}".encode()
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n"
                                     b"Connection: close\r\n\r\n%s" % (len(body), body))
                self.transport.close()
                return
            self.transport.write(RAW_RESPONSES.get(path, RAW_RESPONSES["/cl"])[0])


RAW_CLIENT = r"""
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
first = sys.argv[3]
if first.startswith("/"):
    first = "GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % first
s.sendall(first.encode("latin-1"))
time.sleep(0.3)
s.sendall(b"GET /static/a.css HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
data = b""
while True:
    d = s.recv(65536)
    if not d:
        break
    data += d
sys.stdout.buffer.write(data)
"""


@pytest.fixture
def raw_server(in_server_ns, files):
    loop = specloop.new_event_loop(interface=in_server_ns.server_if)
    asyncio.set_event_loop(loop)
    loop.add_static_route("/static", files, port=RAW_PORT)
    server = loop.run_until_complete(loop.create_server(RawHTTP, HOST, RAW_PORT))
    try:
        yield loop
    finally:
        server.close()
        loop.run_until_complete(server.wait_closed())
        asyncio.set_event_loop(None)
        loop.close()


@pytest.mark.parametrize("path", list(RAW_RESPONSES))
def test_python_output_framing(raw_server, files, path):
    """A response the framing can delimit brings the connection back (the
    static request after it answered in C); anything it cannot be sure of
    keeps the connection with Python (the static request reaches the
    protocol), counted by reason."""
    loop = raw_server
    raw, reason = RAW_RESPONSES[path]
    RawHTTP.lost.clear()
    before = loop.stack.counters()
    rc, out, err = loop.run_until_complete(
        arun_client(sys.executable, "-c", RAW_CLIENT, HOST, str(RAW_PORT), path))
    assert rc == 0, err.decode()[-2000:]
    assert out.startswith(raw), out[:300]
    after = loop.stack.counters()
    stays = {k: after[k] - before[k] for k in after if k.startswith("fast_stay_")}
    a_css = (files / "a.css").read_bytes()
    if reason is None:
        assert out.endswith(a_css) and A_CSS_MARK.encode() not in out
        # the fast path closed it after "Connection: close": the protocol,
        # idle since its answer, is told as of a clean close
        loop.run_until_complete(asyncio.sleep(0.05))
        assert RawHTTP.lost == [None]
        assert after["fast_handbacks"] - before["fast_handbacks"] == 1
        assert after["fast_requests"] - before["fast_requests"] == 1
        assert not any(stays.values()), stays
    else:
        assert out.endswith(f"{A_CSS_MARK} /static/a.css".encode()), out[-200:]
        assert after["fast_handbacks"] == before["fast_handbacks"]
        assert after["fast_requests"] == before["fast_requests"]
        assert {k: v for k, v in stays.items() if v} == {reason: 1}


REQUESTS_THAT_STAY = {
    "connect": ("CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n", "fast_stay_upgrade"),
    "upgrade": ("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\n\r\n", "fast_stay_upgrade"),
    "chunked-body": ("POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "0\r\n\r\n", "fast_stay_request_chunked"),
    "cl-twice": ("POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1"
                 "\r\n\r\nx", "fast_stay_request_unframed"),
    "cl-bad": ("POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 0x1\r\n\r\n",
               "fast_stay_request_unframed"),
    "obs-fold": ("GET /p HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n 2\r\n\r\n",
                 "fast_stay_request_unframed"),
    "huge-header": ("GET /p HTTP/1.1\r\nHost: x\r\nX-Big: " + "b" * 9000 + "\r\n\r\n",
                    "fast_stay_request_unframed"),
    "close": ("GET /p HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "fast_stay_close"),
    "http10": ("GET /p HTTP/1.0\r\nHost: x\r\n\r\n", "fast_stay_close"),
}


@pytest.mark.parametrize("name", list(REQUESTS_THAT_STAY))
def test_requests_that_stay_with_python(raw_server, name):
    """Requests whose end, or whose connection's future, the engine cannot
    know (RFC 9112 §6.3 for requests; Upgrade, CONNECT; a close asked for):
    the connection stays with Python, counted by reason, and the static
    request after it reaches the protocol."""
    loop = raw_server
    raw, reason = REQUESTS_THAT_STAY[name]
    before = loop.stack.counters()
    rc, out, err = loop.run_until_complete(
        arun_client(sys.executable, "-c", RAW_CLIENT, HOST, str(RAW_PORT), raw))
    assert rc == 0, err.decode()[-2000:]
    assert out.startswith(RAW_RESPONSES["/cl"][0]), out[:200]
    assert out.endswith(f"{A_CSS_MARK} /static/a.css".encode()), out[-200:]
    after = loop.stack.counters()
    stays = {k: after[k] - before[k] for k in after
             if k.startswith("fast_stay_") and after[k] != before[k]}
    assert stays == {reason: 1}
    assert after["fast_requests"] == before["fast_requests"]


# ---- keep-alive timers of the servers above ------------------------------------------

def test_aiohttp_keepalive_timer_spares_the_fast_path(in_server_ns, files):
    """aiohttp closes a connection idle for keepalive_timeout after its
    response.  While the fast path answers static requests on it, that
    close only ends Python's side (connection_lost(None)): static requests
    answered in C for longer than the timeout keep the connection open; a
    dynamic one later gets a new protocol; idle past the timeout (the fast
    path's, aiohttp's setting), it is closed."""
    loop = specloop.new_event_loop(interface=in_server_ns.server_if)
    asyncio.set_event_loop(loop)
    counter = Counter()
    runner = web.AppRunner(make_app(files, counter, fast=True), keepalive_timeout=0.5)
    try:
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, HOST, FAST_PORT).start())
        s = req("/static/a.css")
        steps = [step(req("/dyn?n=1"))] + [step(s, pause=0.2) for _ in range(10)] + \
            [step(req("/dyn?n=2"), pause=1.5)]
        before = loop.stack.counters()
        out = loop.run_until_complete(talk(FAST_PORT, steps, linger=0.5))
        assert len(out["responses"]) == 12
        assert "from python 2" in out["responses"][-1]
        assert out["closed"]  # idle 1.5 s > 0.5 s after the last: closed
        d = delta(loop, before, *COUNTS)
        assert d == {"fast_requests": 10, "fast_handovers": 2, "fast_handbacks": 2}
        assert counter.python_requests == 2
        # aiohttp's timer closed its idle protocol while the fast path answered
        # (only Python's side of the connection ended); the next dynamic
        # request came to a new protocol on the same connection
        made = counter.protocols
        assert len(made) == 2 and made[0] is not made[1]
    finally:
        loop.run_until_complete(runner.cleanup())
        asyncio.set_event_loop(None)
        loop.close()


def test_opt_out_keeps_connections_with_python(in_server_ns, files):
    """hand_back=False (connection-bound schemes): after a request went to
    the app, the connection is the app's for good, as before hand-back."""
    loop = specloop.new_event_loop(interface=in_server_ns.server_if)
    asyncio.set_event_loop(loop)
    counter = Counter()
    runner = web.AppRunner(make_app(files, counter, fast=True, hand_back=False))
    try:
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, HOST, FAST_PORT).start())
        s = req("/static/a.css")
        before = loop.stack.counters()
        out = loop.run_until_complete(talk(FAST_PORT, [step(s), step(req("/dyn")), step(s),
                                                       step(s)]))
        assert len(out["responses"]) == 4 and not out["closed"]
        d = delta(loop, before, *COUNTS, "fast_stay_opt_out")
        assert d == {"fast_requests": 1, "fast_handovers": 1, "fast_handbacks": 0,
                     "fast_stay_opt_out": 1}
        assert counter.python_requests == 3
    finally:
        loop.run_until_complete(runner.cleanup())
        asyncio.set_event_loop(None)
        loop.close()


def asgi_app(seen: list[str]):
    """A minimal ASGI app: "<server> <path>" for every request."""

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        seen.append(scope["path"])
        body = b"asgi " + scope["path"].encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return app


async def keepalive_conversation(loop) -> tuple[dict, dict]:
    """A dynamic request, then static ones 0.3 s apart for 2.4 s (the
    server's keep-alive timer, 1 s, fires meanwhile), then dynamic again
    and static: (counters before, what the client saw)."""
    s = req("/static/b.js")
    steps = [step(req("/dyn"))] + [step(s, pause=0.3) for _ in range(8)] + \
        [step(req("/dyn2"), pause=0.3), step(s)]
    before = loop.stack.counters()
    return before, await talk(FAST_PORT, steps)


def check_keepalive_conversation(loop, before: dict, out: dict, seen: list[str]) -> None:
    """The connection lived through the server's keep-alive timer: every
    answer came, the static ones from C, the dynamic ones from the app."""
    assert len(out["responses"]) == 11 and not out["closed"]
    assert out["responses"][9].endswith("asgi /dyn2")
    assert seen == ["/dyn", "/dyn2"]
    d = delta(loop, before, *COUNTS)
    assert d == {"fast_requests": 9, "fast_handovers": 2, "fast_handbacks": 2}


def test_uvicorn_keepalive_timer_spares_the_fast_path(in_server_ns, files):
    """The same with uvicorn (its timeout_keep_alive, 1 s here) in this loop,
    the fast path in front of it through loop.add_static_route."""
    uvicorn = pytest.importorskip("uvicorn")
    loop = specloop.new_event_loop(interface=in_server_ns.server_if)
    asyncio.set_event_loop(loop)
    seen: list[str] = []
    app = asgi_app(seen)

    async def main():
        loop.add_static_route("/static", files, port=FAST_PORT, keepalive_timeout=1.0)
        config = uvicorn.Config(app, host=HOST, port=FAST_PORT, loop="none", lifespan="off",
                                timeout_keep_alive=1, access_log=False, log_level="warning")
        server = uvicorn.Server(config)
        task = asyncio.ensure_future(server.serve())
        while not server.started:
            await asyncio.sleep(0.05)
        try:
            return await keepalive_conversation(loop)
        finally:
            server.should_exit = True
            await task

    try:
        before, out = loop.run_until_complete(main())
        check_keepalive_conversation(loop, before, out, seen)
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def test_hypercorn_keepalive_timer_spares_the_fast_path(in_server_ns, files):
    """The same with hypercorn (its keep_alive_timeout, 1 s here), which
    binds its own socket and serves it on this loop."""
    hypercorn_asyncio = pytest.importorskip("hypercorn.asyncio")
    from hypercorn.config import Config as HypercornConfig

    loop = specloop.new_event_loop(interface=in_server_ns.server_if)
    asyncio.set_event_loop(loop)
    seen: list[str] = []

    async def main():
        loop.add_static_route("/static", files, port=FAST_PORT, keepalive_timeout=1.0)
        config = HypercornConfig()
        config.bind = [f"{HOST}:{FAST_PORT}"]
        config.keep_alive_timeout = 1
        config.accesslog = None
        stop = asyncio.Event()
        task = asyncio.ensure_future(hypercorn_asyncio.serve(asgi_app(seen), config,
                                                             shutdown_trigger=stop.wait))
        deadline = loop.time() + 10
        while loop.stack.counters()["listeners"] < 1:
            assert not task.done(), task
            assert loop.time() < deadline, "hypercorn did not listen"
            await asyncio.sleep(0.05)
        try:
            return await keepalive_conversation(loop)
        finally:
            stop.set()
            await task

    try:
        before, out = loop.run_until_complete(main())
        check_keepalive_conversation(loop, before, out, seen)
    finally:
        asyncio.set_event_loop(None)
        loop.close()
