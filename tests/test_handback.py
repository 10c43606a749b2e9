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
import textwrap

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

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        self.python_requests += 1
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
