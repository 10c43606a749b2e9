"""nginx in front of an aiohttp app over the bypass, as deployed: a reverse
proxy (``proxy_http_version 1.1``, an upstream ``keepalive 16`` pool)
multiplexes every client's requests over a few long-lived connections to
the app.  With hand-back the static requests on those connections are
still answered in C after dynamic ones went to aiohttp.

nginx runs in the client namespace (loopback there); a Python client in
that namespace sends a mix through it from several threads and checks
every body byte for byte; the engine's counters say who answered.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time

import pytest
from aiohttp import web

import specloop
import specloop.aiohttp
from specloop import netlab

from labtools import arun_client, client_argv

pytestmark = pytest.mark.lab

APP_PORT = 8097
PROXY_PORT = 18080

NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
user root;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream app {{
        server {host}:{app_port};
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{proxy_port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_max_temp_file_size 0;
        }}
    }}
}}
"""

# From several threads, keep-alive connections to nginx; each request is
# (path, Accept-Encoding or "", expected body's sha256); prints the failures.
CLIENT = r"""
import hashlib, http.client, json, sys, threading
cfg = json.loads(sys.stdin.read())
bad, done = [], [0]
lock = threading.Lock()

def worker(items):
    conn = http.client.HTTPConnection("127.0.0.1", cfg["port"], timeout=20)
    for path, ae, want in items:
        headers = {"Accept-Encoding": ae} if ae else {"Accept-Encoding": "identity"}
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        body = r.read()
        ok = r.status == 200 and hashlib.sha256(body).hexdigest() == want
        with lock:
            done[0] += 1
            if not ok:
                bad.append([path, ae, r.status, len(body)])
    conn.close()

n = cfg["threads"]
threads = [threading.Thread(target=worker, args=(cfg["requests"][i::n],)) for i in range(n)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps({"done": done[0], "bad": bad[:20], "nbad": len(bad)}))
"""


class Counter:
    def __init__(self) -> None:
        self.python = 0
        self.static_in_python = 0

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        self.python += 1
        self.static_in_python += request.path.startswith("/static/")
        return await handler(request)


@pytest.fixture
def site(tmp_path):
    """Files of 64 B to 64 KiB, some with .br/.gz siblings; the bytes a
    client gets for (name, accept-encoding) as aiohttp's FileResponse
    chooses them."""
    import hashlib
    d = tmp_path / "site"
    d.mkdir()
    expect: dict[tuple[str, str], str] = {}
    sizes = [64, 300, 1500, 4096, 9000, 20000, 65536]
    for i, size in enumerate(sizes * 3):
        name = f"f{i}.{('css', 'js', 'svg')[i % 3]}"
        body = os.urandom(size)
        (d / name).write_bytes(body)
        sibs = {}
        if i % 3 == 1:
            sibs = {".br": os.urandom(size // 4 + 1), ".gz": os.urandom(size // 3 + 1)}
        elif i % 3 == 2:
            sibs = {".gz": os.urandom(size // 2 + 1)}
        for ext, data in sibs.items():
            (d / (name + ext)).write_bytes(data)
        for ae in ("", "gzip, deflate, br", "gzip"):
            chosen = body
            for ext, coding in ((".br", "br"), (".gz", "gzip")):
                if coding in ae and ext in sibs:
                    chosen = sibs[ext]
                    break
            expect[(name, ae)] = hashlib.sha256(chosen).hexdigest()
    return d, expect


def test_nginx_keepalive_pool_static_answered_in_c(in_server_ns, site):
    import hashlib
    import random

    files, expect = site
    loop = specloop.new_event_loop(interface=in_server_ns.server_if)
    asyncio.set_event_loop(loop)
    counter = Counter()
    app = web.Application(middlewares=[counter.middleware])

    async def dyn(request: web.Request) -> web.Response:
        return web.Response(text=f"dynamic {request.match_info['n']}")

    app.router.add_get("/dyn/{n}", dyn)
    specloop.aiohttp.add_static(app, "/static", files)
    runner = web.AppRunner(app)
    tmp = tempfile.mkdtemp(prefix="slnginx")
    os.chmod(tmp, 0o755)
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(dir=tmp, host=netlab.SERVER_IP, app_port=APP_PORT,
                                  proxy_port=PROXY_PORT))
    nginx = subprocess.Popen(client_argv("nginx", "-p", tmp, "-e", f"{tmp}/error.log",
                                         "-c", conf), stderr=subprocess.PIPE)
    rng = random.Random(11)
    names = sorted({name for name, _ in expect})
    requests, nstatic = [], 0
    for i in range(3000):
        if rng.random() < 0.1:
            body = f"dynamic {i}".encode()
            requests.append([f"/dyn/{i}", "", hashlib.sha256(body).hexdigest()])
        else:
            name, ae = rng.choice(names), rng.choice(("", "gzip, deflate, br", "gzip"))
            requests.append([f"/static/{name}", ae, expect[(name, ae)]])
            nstatic += 1
    try:
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, netlab.SERVER_IP, APP_PORT).start())
        deadline = time.monotonic() + 10
        while subprocess.run(client_argv("ss", "-Htln", f"sport = :{PROXY_PORT}"),
                             capture_output=True, text=True).stdout.strip() == "":
            assert nginx.poll() is None, nginx.stderr.read().decode()
            assert time.monotonic() < deadline, "nginx did not start"
            time.sleep(0.05)
        before = loop.stack.counters()
        rc, out, err = loop.run_until_complete(arun_client(
            sys.executable, "-c", CLIENT, timeout=300,
            stdin=json.dumps({"port": PROXY_PORT, "threads": 8,
                              "requests": requests}).encode()))
        assert rc == 0, err.decode()[-3000:]
        result = json.loads(out)
        after = loop.stack.counters()
        assert result["done"] == len(requests)
        assert result["nbad"] == 0, result["bad"]
        fast = after["fast_requests"] - before["fast_requests"]
        handbacks = after["fast_handbacks"] - before["fast_handbacks"]
        stays = {k: after[k] - before[k] for k in after
                 if k.startswith("fast_stay_") and after[k] != before[k]}
        print(f"\n{nstatic} static, {len(requests) - nstatic} dynamic through nginx: "
              f"{fast} answered in C, {counter.static_in_python} static in aiohttp, "
              f"{handbacks} hand-backs, {after['conns_opened'] - before['conns_opened']} "
              f"upstream connections, stays {stays}")
        assert counter.python == len(requests) - nstatic + counter.static_in_python
        assert fast == nstatic - counter.static_in_python
        assert fast >= 0.99 * nstatic
        assert after["fast_encoded"] > before["fast_encoded"]
    finally:
        nginx.terminate()
        try:
            nginx.wait(10)
        except subprocess.TimeoutExpired:
            nginx.kill()
            nginx.wait(10)
        loop.run_until_complete(runner.cleanup())
        asyncio.set_event_loop(None)
        loop.close()
        subprocess.run(["rm", "-rf", tmp])
