"""The static fast path: registered files answered by the engine in C.

The same aiohttp app is served twice: by specloop over the bypass with
``specloop.aiohttp.add_static`` (the fast path), and by plain aiohttp on
asyncio's loop in a subprocess (the reference, its FileResponse).  A client
in the client namespace sends each request to both and compares them:
status, every header field (Date and Server aside) and the body.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
from aiohttp import web

import specloop
import specloop.aiohttp
from specloop import netlab

from labtools import arun_client, nft_loss

pytestmark = pytest.mark.lab

FAST_PORT = 8090
REF_PORT = 8091
MSS = 1448  # Linux peer with timestamps
SIZES = {"zero.bin": 0, "one.txt": 1, "mss_minus.bin": MSS - 1, "mss.bin": MSS,
         "mss_plus.bin": MSS + 1, "eight.css": 8192, "mib.js": 1 << 20, "ten.bin": 10 << 20}

REFERENCE_SERVER = """
import sys
from aiohttp import web
app = web.Application()
app.router.add_static("/static", sys.argv[1])
web.run_app(app, host=sys.argv[2], port=int(sys.argv[3]), print=lambda *a: print("READY", flush=True))
"""

COMPARE_CLIENT = """
import json, socket, sys

def fetch(port, raw):
    s = socket.create_connection(("{host}", port), timeout=10)
    s.sendall(raw)
    data = b""
    while b"\\r\\n\\r\\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\\r\\n\\r\\n")
    lines = head.decode("latin-1").split("\\r\\n")
    headers = {{}}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers.setdefault(k.strip().lower(), []).append(v.strip())
    if raw.startswith(b"HEAD") or lines[0].split()[1] in ("304",):
        want = 0
    elif "content-length" in headers:
        want = int(headers["content-length"][0])
    else:
        want = None
    while want is not None and len(body) < want:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        body += chunk
    if want is None and headers.get("transfer-encoding") == ["chunked"]:
        while not body.endswith(b"0\\r\\n\\r\\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
    elif want is None:  # close-delimited
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
    s.close()
    headers.pop("date", None)
    headers.pop("server", None)
    return lines[0], headers, body

out = []
for raw in json.loads(sys.stdin.read()):
    raw = raw.encode("latin-1")
    fast = fetch({fast}, raw)
    ref = fetch({ref}, raw)
    out.append([raw.decode("latin-1").split("\\r\\n")[0], fast[0], fast == ref,
                fast[0] if fast == ref else repr((fast[0], fast[1], ref[0], ref[1],
                                                  len(fast[2]), len(ref[2])))])
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("static")
    d = root / "site"
    (d / "sub").mkdir(parents=True)
    for name, size in SIZES.items():
        (d / name).write_bytes(os.urandom(size))
    (d / "sub" / "page.html").write_text("<html>sub page</html>")
    (d / "with space.txt").write_text("a space in the name")
    (root / "secret.txt").write_text("TOP-SECRET-OUTSIDE")
    # precompressed siblings, as a build step leaves them (their bytes need
    # not really be compressed: the server never decodes them)
    enc = d / "enc"
    enc.mkdir()
    for name, size, sibs in (("app.js", 3000, (".br", ".gz")), ("style.css", 700, (".gz",)),
                             ("logo.svg", 65536, (".br", ".gz")), ("plain.txt", 100, ()),
                             ("linked.js", 500, ())):
        (enc / name).write_bytes(os.urandom(size))
        for ext in sibs:
            (enc / (name + ext)).write_bytes(os.urandom(size // 3 + len(ext)))
    os.symlink(enc / "app.js.gz", enc / "linked.js.gz")  # aiohttp ignores linked siblings
    os.symlink(root / "secret.txt", d / "link-to-secret.txt")
    return d


@pytest.fixture
def reference(lab, files):
    proc = subprocess.Popen(netlab.in_ns(lab.server_ns, sys.executable, "-c", REFERENCE_SERVER,
                                         str(files), netlab.SERVER_IP, str(REF_PORT)),
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "READY"
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)


class Counter:
    def __init__(self):
        self.python_requests = 0

    @web.middleware
    async def middleware(self, request, handler):
        self.python_requests += 1
        return await handler(request)


def fast_app(files, counter: Counter) -> web.Application:
    app = web.Application(middlewares=[counter.middleware])

    async def dynamic(request):
        return web.Response(text="from python")

    app.router.add_get("/dyn", dynamic)
    specloop.aiohttp.add_static(app, "/static", files)
    return app


@pytest.fixture
def fast_server(in_server_ns, files):
    loop = specloop.new_event_loop(interface=in_server_ns.server_if)
    asyncio.set_event_loop(loop)
    counter = Counter()
    runner = web.AppRunner(fast_app(files, counter))
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, netlab.SERVER_IP, FAST_PORT).start())
    try:
        yield loop, counter
    finally:
        loop.run_until_complete(runner.cleanup())
        asyncio.set_event_loop(None)
        loop.close()


def compare(loop, requests: list[bytes]) -> list:
    code = textwrap.dedent(COMPARE_CLIENT.format(host=netlab.SERVER_IP, fast=FAST_PORT,
                                                 ref=REF_PORT))

    async def main():
        rc, out, err = await arun_client(sys.executable, "-c", code,
                                         stdin=json.dumps([r.decode("latin-1")
                                                           for r in requests]).encode(),
                                         timeout=120)
        assert rc == 0, err.decode()[-3000:]
        return json.loads(out)

    return loop.run_until_complete(main())


def req(path: str, *headers: str, method: str = "GET", version: str = "1.1") -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: x", *headers, "", ""]
    return "\r\n".join(lines).encode("latin-1")


def test_responses_equal_aiohttp_fileresponse(fast_server, reference, files):
    loop, counter = fast_server
    etags = {}
    for name in SIZES:
        st = os.stat(files / name)
        etags[name] = f'"{st.st_mtime_ns:x}-{st.st_size:x}"'
    lm = web.StreamResponse()
    requests = []
    for name, size in SIZES.items():
        p = f"/static/{name}"
        lm.last_modified = os.stat(files / name).st_mtime
        requests += [
            req(p), req(p, method="HEAD"), req(p, version="1.0"),
            req(p, "Connection: keep-alive", version="1.0"), req(p, "Connection: close"),
            req(p, f"If-None-Match: {etags[name]}"), req(p, 'If-None-Match: "other"'),
            req(p, f'If-None-Match: W/{etags[name]}, "x"'), req(p, "If-None-Match: *"),
            req(p, f"If-Modified-Since: {lm.headers['Last-Modified']}"),
            req(p, "If-Modified-Since: Thu, 01 Jan 1970 00:00:01 GMT"),
            req(p, "Range: bytes=0-0"), req(p, "Range: bytes=1-"), req(p, "Range: bytes=-1"),
            req(p, f"Range: bytes=0-{size}"), req(p, f"Range: bytes={size}-"),
            req(p, f"Range: bytes={max(size - 1, 0)}-{size + 100}"), req(p, "Range: bytes=-0"),
            req(p, "Range: bytes=5-2"), req(p, "Range: bytes=-"),
        ]
        if size > 3000:
            requests += [req(p, "Range: bytes=1000-2999"), req(p, f"Range: bytes=-{size // 3}")]
    requests += [req("/static/sub/page.html"), req("/static/with%20space.txt?v=3")]
    results = compare(loop, requests)
    bad = [r for r in results if not r[2]]
    assert not bad, "\n".join(f"{r[0]} -> {r[3]}" for r in bad[:10])
    statuses = {r[1].split()[1] for r in results}
    assert {"200", "206", "304", "416"} <= statuses
    c = loop.stack.counters()
    assert c["fast_requests"] == len(requests)
    assert c["fast_status_200"] > 0 and c["fast_status_206"] > 0
    assert c["fast_status_304"] > 0 and c["fast_status_416"] > 0
    # none of them reached Python: the aiohttp handler ran zero times
    assert counter.python_requests == 0
    assert c["fast_handovers"] == 0


def test_fast_path_traffic_runs_no_python(fast_server, files):
    """The engine waits in C: while only fast-path requests arrive, the
    loop's wait answers them there and does not come back to Python.  The
    loop's iterations (wait calls) stay a handful (the client subprocess's
    pipes and exit) while wrk sends thousands of requests."""
    loop, counter = fast_server
    before = loop.stack.counters()

    async def main():
        return await arun_client("wrk", "-t1", "-c4", "-d1s",
                                 f"http://{netlab.SERVER_IP}:{FAST_PORT}/static/eight.css",
                                 timeout=30)

    rc, out, err = loop.run_until_complete(main())
    assert rc == 0, err.decode()
    after = loop.stack.counters()
    served = after["fast_requests"] - before["fast_requests"]
    waits = after["loop_waits"] - before["loop_waits"]
    assert served > 1000, out.decode()
    assert after["loop_returns_events"] == before["loop_returns_events"]
    assert after["loop_engine_rounds"] - before["loop_engine_rounds"] > 100
    print(f"\n{served} fast-path requests, {waits} loop iterations")
    assert waits * 50 < served, (waits, served)
    assert counter.python_requests == 0


def test_what_the_fast_path_leaves_to_aiohttp(fast_server, reference, files):
    loop, counter = fast_server
    requests = [
        req("/static/nope.txt"), req("/static/sub"), req("/static/sub/"),
        req("/static/one.txt", "If-Match: \"x\""), req("/static/one.txt", "Range: bytes=0-1,3-4"),
        req("/static/mib.js", "Range: bytes=abc"),
        req("/static/one.txt", method="POST"), req("/static/one.txt", method="DELETE"),
        req("/static/one.txt", "Content-Length: 3") + b"abc",
        req("/static/one.txt", "If-Modified-Since: yesterday"),
        req("/static/link-to-secret.txt"),
    ]
    results = compare(loop, requests)
    bad = [r for r in results if not r[2]]
    assert not bad, "\n".join(f"{r[0]} -> {r[3]}" for r in bad[:10])
    c = loop.stack.counters()
    assert c["fast_requests"] == 0
    assert c["fast_handovers"] == len(requests)
    assert counter.python_requests == len(requests)


def test_traversal_never_leaks(fast_server, files):
    loop, counter = fast_server
    attempts = ["/static/../secret.txt", "/static/%2e%2e/secret.txt", "/static/%2E%2E/secret.txt",
                "/static/sub/../../secret.txt", "/static/sub/%2e%2e/%2e%2e/secret.txt",
                "/static/..%2fsecret.txt", "/static/%2fetc%2fpasswd", "//etc/passwd",
                "/static//etc/passwd", str(files.parent / "secret.txt"),
                "/static/one.txt%00.png", "/static/%00", "/static/sub%5c..%5c..%5csecret.txt",
                "/static/link-to-secret.txt", "/static/./one.txt", "/static/sub/./page.html"]
    code = textwrap.dedent(f"""
        import socket, json
        out = []
        for path in json.loads(input()):
            s = socket.create_connection(("{netlab.SERVER_IP}", {FAST_PORT}), timeout=10)
            s.sendall(("GET " + path + " HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n").encode())
            data = b""
            while True:
                d = s.recv(65536)
                if not d:
                    break
                data += d
            out.append([path, data.split(b"\\r\\n")[0].decode(), b"TOP-SECRET" in data])
        print(json.dumps(out))
    """)
    rc, out, err = loop.run_until_complete(
        arun_client(sys.executable, "-c", code, stdin=json.dumps(attempts).encode() + b"\n"))
    assert rc == 0, err
    for path, status, leaked in json.loads(out):
        assert not leaked, path
        assert status.split()[1] in ("400", "403", "404", "200"), (path, status)
    # the dot-segment and NUL forms were not taken by the fast path
    assert loop.stack.counters()["fast_requests"] == 0


def test_mixed_keepalive_connection_in_order(fast_server, files):
    loop, counter = fast_server
    big = (files / "mib.js").read_bytes()
    code = textwrap.dedent(f"""
        import socket, sys
        s = socket.create_connection(("{netlab.SERVER_IP}", {FAST_PORT}), timeout=10)
        pending = b""
        def read_response():
            global pending
            while b"\\r\\n\\r\\n" not in pending:
                pending += s.recv(65536)
            head, _, rest = pending.partition(b"\\r\\n\\r\\n")
            n = int([l for l in head.split(b"\\r\\n") if l.lower().startswith(b"content-length")][0].split(b":")[1])
            while len(rest) < n:
                rest += s.recv(1 << 20)
            body, pending = rest[:n], rest[n:]
            return head.split(b"\\r\\n")[0], body
        out = []
        # one at a time: fast, Python, fast
        for path in ("/static/one.txt", "/dyn", "/static/eight.css"):
            s.sendall(("GET " + path + " HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n").encode())
            out.append(read_response())
        # pipelined: a big fast response, then Python, then fast
        s = socket.create_connection(("{netlab.SERVER_IP}", {FAST_PORT}), timeout=10)
        pending = b""
        s.sendall(b"GET /static/mib.js HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n"
                  b"GET /dyn HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n"
                  b"GET /static/one.txt HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
        for _ in range(3):
            out.append(read_response())
        sys.stdout.buffer.write(repr([(st, len(b), b[:20]) for st, b in out]).encode() + b"\\n")
        import hashlib
        sys.stdout.buffer.write(hashlib.sha256(out[3][1]).hexdigest().encode())
    """)
    rc, out, err = loop.run_until_complete(arun_client(sys.executable, "-c", code))
    assert rc == 0, err.decode()[-2000:]
    summary, digest = out.decode().splitlines()
    one = (files / "one.txt").read_bytes()
    eight = (files / "eight.css").read_bytes()
    assert summary == repr([(b"HTTP/1.1 200 OK", 1, one), (b"HTTP/1.1 200 OK", 11, b"from python"),
                            (b"HTTP/1.1 200 OK", 8192, eight[:20]),
                            (b"HTTP/1.1 200 OK", 1 << 20, big[:20]),
                            (b"HTTP/1.1 200 OK", 11, b"from python"),
                            (b"HTTP/1.1 200 OK", 1, one)])
    import hashlib
    assert digest == hashlib.sha256(big).hexdigest()
    c = loop.stack.counters()
    # /dyn went to aiohttp, and the connection came back to the fast path
    # for the static requests after it (tests/test_handback.py)
    assert c["fast_requests"] == 4 and c["fast_handovers"] == 2
    assert c["fast_handbacks"] == 2
    assert counter.python_requests == 2


def test_file_changes_and_deletion(fast_server, files):
    loop, counter = fast_server
    f = files / "changing.txt"
    f.write_text("version 1")

    async def get() -> tuple[int, bytes]:
        rc, out, err = await arun_client("curl", "-s", "-w", "|%{http_code}",
                                         f"http://{netlab.SERVER_IP}:{FAST_PORT}/static/changing.txt")
        body, _, code = out.rpartition(b"|")
        return int(code), body

    async def main():
        await asyncio.sleep(1.0)  # the watcher picks up the new file
        assert await get() == (200, b"version 1")
        fast_before = loop.stack.counters()["fast_requests"]
        assert fast_before >= 1
        time.sleep(0.01)
        f.write_text("version two")
        await asyncio.sleep(1.0)
        assert await get() == (200, b"version two")
        f.unlink()
        await asyncio.sleep(1.0)
        code, _ = await get()
        assert code == 404

    loop.run_until_complete(main())
    assert counter.python_requests == 1  # only the 404 reached aiohttp


def test_fast_downloads_byte_exact_under_loss_and_reordering(fast_server, files):
    loop, counter = fast_server
    import hashlib
    want = hashlib.sha256((files / "ten.bin").read_bytes()).hexdigest()
    loop.stack.impair(tx_reorder=0.05, rx_reorder=0.05, tx_dup=0.01, rx_dup=0.01, seed=3)
    with nft_loss(5):
        rc, out, err = loop.run_until_complete(arun_client(
            "sh", "-c", " ; ".join(
                [f"curl -s http://{netlab.SERVER_IP}:{FAST_PORT}/static/ten.bin | sha256sum"] * 3),
            timeout=180))
    assert rc == 0, err
    assert [line.split()[0] for line in out.decode().splitlines()] == [want] * 3
    c = loop.stack.counters()
    assert c["fast_requests"] == 3 and c["retransmits"] > 10
    assert counter.python_requests == 0


def test_memory_budget_and_size_limit_fall_back_to_aiohttp(in_server_ns, files):
    loop = specloop.new_event_loop(interface=in_server_ns.server_if)
    asyncio.set_event_loop(loop)
    counter = Counter()
    app = web.Application(middlewares=[counter.middleware])
    specloop.aiohttp.add_static(app, "/static", files, max_file_size=4096,
                                memory_budget=2000)
    runner = web.AppRunner(app)
    try:
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, netlab.SERVER_IP, FAST_PORT).start())
        rc, out, err = loop.run_until_complete(arun_client(
            "sh", "-c", "; ".join(f"curl -s -o /dev/null -w '%{{http_code}} ' "
                                  f"http://{netlab.SERVER_IP}:{FAST_PORT}/static/{n}"
                                  for n in SIZES)))
        assert out.split() == [b"200"] * len(SIZES)  # every file served, none refused
        c = loop.stack.counters()
        assert c["static_bytes"] <= 2000
        assert c["fast_requests"] + counter.python_requests == len(SIZES)
        assert counter.python_requests >= 4  # 8 KiB, 1 MiB, 10 MiB over the limit
    finally:
        loop.run_until_complete(runner.cleanup())
        asyncio.set_event_loop(None)
        loop.close()


def test_add_static_route_for_any_protocol(in_server_ns, files):
    """loop.add_static_route: the fast path in front of a non-aiohttp server."""
    loop = specloop.new_event_loop(interface=in_server_ns.server_if)
    seen = []

    class Plain(asyncio.Protocol):
        def connection_made(self, t):
            self.t = t

        def data_received(self, data):
            seen.append(data)
            self.t.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain")

    try:
        loop.add_static_route("/files", files, port=FAST_PORT, cache_control="max-age=60")
        server = loop.run_until_complete(loop.create_server(Plain, netlab.SERVER_IP, FAST_PORT))
        rc, out, err = loop.run_until_complete(arun_client(
            "curl", "-si", f"http://{netlab.SERVER_IP}:{FAST_PORT}/files/one.txt",
            f"http://{netlab.SERVER_IP}:{FAST_PORT}/other"))
        assert rc == 0
        assert b"Cache-Control: max-age=60\r\n" in out and out.endswith(b"plain")
        assert len(seen) == 1 and seen[0].startswith(b"GET /other ")
        server.close()
        with pytest.raises(ValueError, match="prefix"):
            loop.add_static_route("files", files)
        with pytest.raises(ValueError, match="directory"):
            loop.add_static_route("/x", files / "one.txt")
        with pytest.raises(TypeError, match="colour"):
            loop.add_static_route("/x", files, colour="red")
    finally:
        loop.close()
    with pytest.raises(RuntimeError, match="no bypass"):
        specloop.new_event_loop().add_static_route("/x", files)


def test_multibuffer_tx_serves_the_same_bytes(in_server_ns, files):
    """tx_multibuffer=1 (XDP_USE_SG): body segments leave as a header frame
    plus the file's shared payload frame; the bytes are the same, and the
    UMEM chunks go back when the file goes.  (GSO super-frames off: with
    them, runs of body segments leave as super-frames, and multi-buffer
    frames only carry what goes alone.)"""
    import hashlib

    loop = specloop.new_event_loop(interface=in_server_ns.server_if, tx_multibuffer=1,
                                   tx_gso="off")
    asyncio.set_event_loop(loop)
    counter = Counter()
    runner = web.AppRunner(fast_app(files, counter))
    try:
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, netlab.SERVER_IP, FAST_PORT).start())
        want = hashlib.sha256((files / "mib.js").read_bytes()).hexdigest()
        rc, out, err = loop.run_until_complete(arun_client(
            "sh", "-c", " ; ".join([f"curl -s http://{netlab.SERVER_IP}:{FAST_PORT}"
                                    f"/static/mib.js | sha256sum"] * 3)))
        assert [line.split()[0] for line in out.decode().splitlines()] == [want] * 3
        c = loop.stack.counters()
        assert c["tx_multibuffer_segments"] > 1000 and c["frames_static"] > 700
        assert counter.python_requests == 0
    finally:
        loop.run_until_complete(runner.cleanup())
        asyncio.set_event_loop(None)
        c = loop.stack.counters()
        loop.close()
    # the listener closed: its files left the store, their frames came back
    assert c["frames_static"] == 0 and c["static_files"] == 0


def test_precompressed_siblings_equal_aiohttp_fileresponse(fast_server, reference, files):
    """A file with .br/.gz siblings: the variant aiohttp's FileResponse
    picks for each Accept-Encoding (its own bytes, ETag, Last-Modified;
    Content-Encoding and Vary), answered in C, byte for byte the same.
    Requests whose Accept-Encoding says q=0 (which aiohttp's test of the
    coding name would not honour) are left to aiohttp."""
    loop, counter = fast_server
    enc = files / "enc"
    requests, python = [], 0
    for name in ("app.js", "style.css", "logo.svg", "plain.txt", "linked.js"):
        p = f"/static/enc/{name}"
        st = os.stat(enc / name)
        etag = f'"{st.st_mtime_ns:x}-{st.st_size:x}"'
        variants = [e for e in (".br", ".gz") if (enc / (name + e)).is_file()
                    and not (enc / (name + e)).is_symlink()]
        for ae in ("", "gzip, deflate, br", "gzip, deflate", "br", "BR", "GZip", "identity",
                   "deflate", "gzip;q=1.0, br;q=0.5", "x-gzip", "*", "br, gzip;q=0"):
            h = (f"Accept-Encoding: {ae}",) if ae else ()
            requests.append(req(p, *h))
            python += bool(variants) and ae == "br, gzip;q=0"  # q=0.5 is not zero
        ae = "Accept-Encoding: gzip, deflate, br"
        requests += [req(p, ae, method="HEAD"), req(p, ae, f"If-None-Match: {etag}"),
                     req(p, ae, "Range: bytes=10-99"), req(p, ae, "Range: bytes=-5"),
                     req(p, ae, "Range: bytes=900000-"), req(p, ae, "Connection: close")]
        for e in variants:
            vst = os.stat(enc / (name + e))
            vtag = f'"{vst.st_mtime_ns:x}-{vst.st_size:x}"'
            requests += [req(p, ae, f"If-None-Match: {vtag}"),
                         req(p, f"Accept-Encoding: {'br' if e == '.br' else 'gzip'}",
                             f"If-None-Match: W/{vtag}")]
    results = compare(loop, requests)
    bad = [r for r in results if not r[2]]
    assert not bad, "\n".join(f"{r[0]} -> {r[3]}" for r in bad[:10])
    c = loop.stack.counters()
    assert counter.python_requests == python > 0
    assert c["fast_requests"] == len(requests) - python
    assert c["fast_encoded"] > 40 and c["fast_status_304"] >= 6 and c["fast_status_206"] > 0


def test_sibling_changes_are_picked_up(fast_server, reference, files):
    """The watcher sees a sibling change, appear and go like the file
    itself: the fast path answers with what aiohttp would send now."""
    loop, counter = fast_server
    enc = files / "enc"
    ae = "Accept-Encoding: gzip, br"
    requests = [req("/static/enc/style.css", ae), req("/static/enc/plain.txt", ae)]

    def same() -> None:
        results = compare(loop, requests)
        bad = [r for r in results if not r[2]]
        assert not bad, "\n".join(f"{r[0]} -> {r[3]}" for r in bad)

    async def settle():
        await asyncio.sleep(1.2)  # the watcher rescans twice a second

    (enc / "style.css.br").write_bytes(b"new br sibling")
    (enc / "plain.txt.gz").write_bytes(b"new gz sibling")
    loop.run_until_complete(settle())
    before = loop.stack.counters()["fast_encoded"]
    same()
    assert loop.stack.counters()["fast_encoded"] - before == 2
    time.sleep(0.01)
    (enc / "style.css.br").write_bytes(b"changed br sibling, longer")
    (enc / "plain.txt.gz").unlink()
    loop.run_until_complete(settle())
    same()
    (enc / "style.css.br").unlink()
    loop.run_until_complete(settle())
    same()
    assert counter.python_requests == 0
