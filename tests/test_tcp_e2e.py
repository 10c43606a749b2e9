"""aiohttp, unchanged, served on both paths to real kernel clients in the
client namespace: curl, wrk, Python sockets, aiohttp's client.

Every case runs twice: on the kernel path (specloop's loop without an
interface) and over the bypass (specloop's own TCP on sl-srv0); only how
the loop is made differs.  ``path == "bypass"`` marks the few assertions
that only hold there (no kernel listener, engine counters).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import pytest
from aiohttp import web

from specloop import netlab

from labtools import arun_client, kernel_conns_in_server_ns, listeners_in_server_ns

pytestmark = pytest.mark.lab

PORT = 8080
URL = f"http://{netlab.SERVER_IP}:{PORT}"


def pattern(n: int) -> bytes:
    """n deterministic bytes."""
    block = hashlib.sha256(b"specloop").digest() * 2048  # 64 KiB
    return (block * (n // len(block) + 1))[:n]


def make_app(tmpdir: str) -> web.Application:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="Hello, world!")

    async def echo(request: web.Request) -> web.Response:
        h = hashlib.sha256()
        n = 0
        async for chunk in request.content.iter_any():
            h.update(chunk)
            n += len(chunk)
        return web.json_response({"sha256": h.hexdigest(), "length": n})

    async def nbytes(request: web.Request) -> web.Response:
        return web.Response(body=pattern(int(request.query["n"])))

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(20):
            await resp.write(f"chunk {i}\n".encode() * 100)
        await resp.write_eof()
        return resp

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for msg in sock:
            if msg.type == 1:  # TEXT
                await sock.send_str(msg.data.upper())
            elif msg.type == 2:  # BINARY
                await sock.send_bytes(msg.data[::-1])
        return sock

    async def file(request: web.Request) -> web.FileResponse:
        return web.FileResponse(os.path.join(tmpdir, "blob.bin"))

    app = web.Application(client_max_size=200 << 20)
    app.add_routes([web.get("/", hello), web.post("/echo", echo), web.get("/bytes", nbytes),
                    web.get("/chunked", chunked), web.get("/ws", ws), web.get("/file", file)])
    return app


async def start(app: web.Application, ssl_context=None) -> web.AppRunner:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, netlab.SERVER_IP, PORT, ssl_context=ssl_context).start()
    return runner


@pytest.fixture
def blob(tmp_path) -> bytes:
    data = os.urandom(5 << 20)
    (tmp_path / "blob.bin").write_bytes(data)
    return data


def test_get_post_chunked_file(serve_loop, path, tmp_path, blob):
    async def main():
        runner = await start(make_app(str(tmp_path)))
        try:
            rc, out, err = await arun_client("curl", "-sS", f"{URL}/")
            assert (rc, out) == (0, b"Hello, world!"), err

            body = os.urandom(3 << 20)
            up = tmp_path / "up.bin"
            up.write_bytes(body)
            rc, out, err = await arun_client("curl", "-sS", "--data-binary", f"@{up}",
                                             f"{URL}/echo")
            assert rc == 0, err
            assert json.loads(out) == {"sha256": hashlib.sha256(body).hexdigest(),
                                       "length": len(body)}

            rc, out, err = await arun_client("curl", "-sS", "--raw", "-D", "-", f"{URL}/chunked")
            assert rc == 0 and b"Transfer-Encoding: chunked" in out
            rc, out, err = await arun_client("curl", "-sS", f"{URL}/chunked")
            assert out == b"".join(f"chunk {i}\n".encode() * 100 for i in range(20))

            rc, out, err = await arun_client("curl", "-sS", f"{URL}/file")
            assert rc == 0 and hashlib.sha256(out).digest() == hashlib.sha256(blob).digest()
            if path == "bypass":
                assert listeners_in_server_ns(PORT) == []
                assert kernel_conns_in_server_ns(PORT) == []
                assert serve_loop.stack.counters()["conns_opened"] >= 4
            else:
                assert len(listeners_in_server_ns(PORT)) == 1
        finally:
            await runner.cleanup()

    serve_loop.run_until_complete(asyncio.wait_for(main(), 60))


def test_100mb_bodies_both_ways(serve_loop, path, tmp_path):
    n = 100 << 20

    async def main():
        runner = await start(make_app(str(tmp_path)))
        try:
            big = tmp_path / "big.bin"
            big.write_bytes(pattern(n))
            rc, out, err = await arun_client("curl", "-sS", "--data-binary", f"@{big}",
                                             f"{URL}/echo", timeout=120)
            assert rc == 0, err
            assert json.loads(out)["sha256"] == hashlib.sha256(pattern(n)).hexdigest()
            rc, out, err = await arun_client(
                "sh", "-c", f"curl -sS '{URL}/bytes?n={n}' | sha256sum", timeout=120)
            assert rc == 0, err
            assert out.split()[0].decode() == hashlib.sha256(pattern(n)).hexdigest()
        finally:
            await runner.cleanup()

    serve_loop.run_until_complete(asyncio.wait_for(main(), 240))


def test_keepalive_and_pipelining(serve_loop, path, tmp_path):
    pipeline = f"""
import socket
s = socket.create_connection(("{netlab.SERVER_IP}", {PORT}), timeout=10)
req = b"GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n"
s.sendall(req * 5 + b"GET /bytes?n=70000 HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n" + req)
data = b""
while data.count(b"HTTP/1.1 200 OK") < 7 or not data.endswith(b"Hello, world!"):
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
print(data.count(b"HTTP/1.1 200 OK"), data.count(b"Hello, world!"), len(data))
"""

    async def main():
        runner = await start(make_app(str(tmp_path)))
        try:
            rc, out, err = await arun_client(
                "curl", "-sS", *["-o", "/dev/null"] * 4, "-w", "%{num_connects} ",
                f"{URL}/", f"{URL}/", f"{URL}/bytes?n=100000", f"{URL}/")
            assert rc == 0, err
            assert out.split() == [b"1", b"0", b"0", b"0"]  # one connection, reused
            rc, out, err = await arun_client(sys.executable, "-c", pipeline)
            assert rc == 0, err
            ok, hellos, _ = out.split()
            assert (int(ok), int(hellos)) == (7, 6)
        finally:
            await runner.cleanup()

    serve_loop.run_until_complete(asyncio.wait_for(main(), 60))


def test_kernel_peer_takes_its_fast_path(serve_loop, path, tmp_path):
    """wrk's keep-alive connections, request after request: the client
    kernel's TCP takes its header-prediction fast path for the server's
    segments (TcpExtTCPHPHits in the client namespace), over the bypass as
    on the kernel path.  It cannot when the server's window field changes
    from segment to segment."""
    client = f"""
import re, subprocess
def hp_hits():
    lines = [l.split() for l in open("/proc/net/netstat") if l.startswith("TcpExt:")]
    return int(dict(zip(lines[0], lines[1]))["TCPHPHits"])
before = hp_hits()
out = subprocess.run(["wrk", "-t1", "-c4", "-d1s", "{URL}/"], capture_output=True,
                     text=True, check=True).stdout
print(int(re.search(r"(\\d+) requests in", out).group(1)), hp_hits() - before)
"""

    async def main():
        runner = await start(make_app(str(tmp_path)))
        try:
            rc, out, err = await arun_client(sys.executable, "-c", client)
            assert rc == 0, err
            requests, hits = map(int, out.split())
            assert requests >= 100 and hits >= requests // 2, (requests, hits)
        finally:
            await runner.cleanup()

    serve_loop.run_until_complete(asyncio.wait_for(main(), 60))


AIOHTTP_CLIENT = """
import asyncio, hashlib, json, sys
import aiohttp
URL = sys.argv[1]
async def main():
    out = {}
    async with aiohttp.ClientSession() as s:
        async with s.get(URL + "/") as r:
            out["hello"] = await r.text()
        body = bytes(range(256)) * 40000
        async with s.post(URL + "/echo", data=body) as r:
            out["echo_ok"] = (await r.json())["sha256"] == hashlib.sha256(body).hexdigest()
        async with s.ws_connect(URL + "/ws") as ws:
            await ws.send_str("hello ws")
            out["ws_text"] = (await ws.receive()).data
            await ws.send_bytes(b"\\x01\\x02\\x03" * 100000)
            out["ws_bin_ok"] = (await ws.receive()).data == (b"\\x01\\x02\\x03" * 100000)[::-1]
        results = await asyncio.gather(*(s.get(URL + "/") for _ in range(50)))
        out["parallel"] = [r.status for r in results].count(200)
        for r in results:
            r.release()
    print(json.dumps(out))
asyncio.run(main())
"""


def test_aiohttp_client_and_websockets(serve_loop, path, tmp_path):
    async def main():
        runner = await start(make_app(str(tmp_path)))
        try:
            rc, out, err = await arun_client(sys.executable, "-c", AIOHTTP_CLIENT, URL)
            assert rc == 0, err.decode()[-2000:]
            assert json.loads(out) == {"hello": "Hello, world!", "echo_ok": True,
                                       "ws_text": "HELLO WS", "ws_bin_ok": True,
                                       "parallel": 50}
        finally:
            await runner.cleanup()

    serve_loop.run_until_complete(asyncio.wait_for(main(), 60))


def test_wrk(serve_loop, path, tmp_path):
    async def main():
        runner = await start(make_app(str(tmp_path)))
        try:
            rc, out, err = await arun_client("wrk", "-t1", "-c32", "-d2s", f"{URL}/")
            text = out.decode()
            assert rc == 0, err
            assert "Socket errors" not in text and "Non-2xx" not in text, text
            requests = int(text.split(" requests in ")[0].split()[-1])
            assert requests > 1000, text
        finally:
            await runner.cleanup()

    serve_loop.run_until_complete(asyncio.wait_for(main(), 60))


def test_https(serve_loop, path, tmp_path):
    import ssl

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", f"/CN={netlab.SERVER_IP}", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert), str(key))

    async def main():
        runner = await start(make_app(str(tmp_path)), ssl_context=ctx)
        try:
            url = f"https://{netlab.SERVER_IP}:{PORT}"
            rc, out, err = await arun_client("curl", "-sS", "--cacert", str(cert), f"{url}/")
            assert (rc, out) == (0, b"Hello, world!"), err
            rc, out, err = await arun_client("sh", "-c",
                                             f"curl -sS --cacert {cert} '{url}/bytes?n=3000000'"
                                             " | sha256sum")
            assert out.split()[0].decode() == hashlib.sha256(pattern(3000000)).hexdigest()
        finally:
            await runner.cleanup()

    serve_loop.run_until_complete(asyncio.wait_for(main(), 60))
