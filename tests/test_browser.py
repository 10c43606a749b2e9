"""A real browser loads a real page: the HTML from an aiohttp handler, 36
assets (style sheets, scripts, images; some with a precompressed sibling)
from the static fast path, over the keep-alive connections the browser
chooses.

Headless Chromium runs in the client namespace and is driven over the
DevTools protocol (tests/browser_driver.py).  The page renders (its own
script checks every style, script and image took effect; the screenshot is
not blank), every asset is a 200 in the browser's log, and the engine's
counters show each asset answered in C: including those the browser asked
for on the connection that carried the dynamic HTML, which Python handed
back to the fast path.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import shutil
import sys
from pathlib import Path

import pytest
from aiohttp import web

import specloop
import specloop.aiohttp
from specloop import netlab

from labtools import arun_client

pytestmark = pytest.mark.lab

PORT = 8094
N_STYLES, N_SCRIPTS, N_IMAGES = 12, 12, 12
COMPRESSED = 6  # the first COMPRESSED style sheets and scripts have .gz and .br siblings
DRIVER = Path(__file__).with_name("browser_driver.py")


def color(i: int) -> tuple[int, int, int]:
    return (40 + 17 * i % 200, 200 - 13 * i % 180, 60 + 29 * i % 190)


def build_site(root: Path) -> list[str]:
    """Writes the assets; returns their URL paths."""
    from PIL import Image
    import brotli

    paths = []
    for i in range(N_STYLES):
        r, g, b = color(i)
        css = (f"/* style sheet {i} */\n.box{i} {{ display: inline-block; width: 60px;"
               f" height: 40px; margin: 2px; background-color: rgb({r}, {g}, {b}); }}\n")
        css += "/* padding so compression has something to do */\n" * 40
        (root / f"s{i}.css").write_text(css)
        paths.append(f"/static/s{i}.css")
    for i in range(N_SCRIPTS):
        js = (f"// script {i}\n(window.ran = window.ran || []).push({i});\n"
              + "// padding so compression has something to do\n" * 40)
        (root / f"j{i}.js").write_text(js)
        paths.append(f"/static/j{i}.js")
    for i in range(N_IMAGES):
        Image.new("RGB", (48, 32), color(100 + i)).save(root / f"i{i}.png")
        paths.append(f"/static/i{i}.png")
    for name in [f"s{i}.css" for i in range(COMPRESSED)] + [f"j{i}.js" for i in range(COMPRESSED)]:
        data = (root / name).read_bytes()
        (root / f"{name}.gz").write_bytes(gzip.compress(data))
        (root / f"{name}.br").write_bytes(brotli.compress(data))
    return paths


PAGE_CHECK = """
window.pageCheck = function () {
  var styled = 0, images = 0;
  for (var i = 0; i < %(styles)d; i++) {
    var el = document.querySelector('.box' + i);
    var bg = getComputedStyle(el).backgroundColor;
    if (bg && bg !== 'rgba(0, 0, 0, 0)' && el.offsetWidth === 60) styled++;
  }
  document.querySelectorAll('img').forEach(function (im) {
    if (im.complete && im.naturalWidth === 48) images++;
  });
  return {styled: styled, scripts: (window.ran || []).length, images: images};
};
"""


def page_html() -> str:
    head = [f'<link rel="stylesheet" href="/static/s{i}.css">' for i in range(N_STYLES)]
    body = [f'<div class="box{i}"></div>' for i in range(N_STYLES)]
    body += [f'<img src="/static/i{i}.png" width="48" height="32">' for i in range(N_IMAGES)]
    body += [f'<script src="/static/j{i}.js"></script>' for i in range(N_SCRIPTS)]
    check = PAGE_CHECK % {"styles": N_STYLES}
    return ("<!doctype html><html><head><meta charset=utf-8><title>specloop</title>"
            '<link rel="icon" href="data:,">' + "".join(head)
            + f"</head><body><h1>Made by a handler</h1>{''.join(body)}"
            f"<script>{check}</script></body></html>")


@pytest.fixture
def site(tmp_path: Path) -> tuple[Path, list[str]]:
    root = tmp_path / "site"
    root.mkdir()
    return root, build_site(root)


@pytest.fixture
def browser() -> str:
    for name in ("chromium-headless-shell", "chromium"):
        if shutil.which(name):
            return name
    pytest.fail("no Chromium: `make setup` installs chromium-headless-shell")


def test_browser_loads_dynamic_page_with_assets_from_the_fast_path(in_server_ns, site, browser,
                                                                   tmp_path):
    root, assets = site
    python_paths: list[str] = []

    @web.middleware
    async def count_python(request, handler):
        python_paths.append(request.path)
        return await handler(request)

    async def page(request):
        return web.Response(text=page_html(), content_type="text/html")

    app = web.Application(middlewares=[count_python])
    app.router.add_get("/", page)
    specloop.aiohttp.add_static(app, "/static", root)

    loop = specloop.new_event_loop(interface=in_server_ns.server_if)
    asyncio.set_event_loop(loop)
    runner = web.AppRunner(app)
    shot = tmp_path / "page.png"
    try:
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, netlab.SERVER_IP, PORT).start())
        before = loop.stack.counters()
        rc, out, err = loop.run_until_complete(arun_client(
            sys.executable, str(DRIVER), f"http://{netlab.SERVER_IP}:{PORT}/", str(shot),
            timeout=120))
        after = loop.stack.counters()
    finally:
        loop.run_until_complete(runner.cleanup())
        asyncio.set_event_loop(None)
        loop.close()
    assert rc == 0, err.decode()[-3000:]
    seen = json.loads(out)

    # the page rendered: every style, script and image took effect
    assert seen["failed"] == []
    assert seen["page"] == {"styled": N_STYLES, "scripts": N_SCRIPTS, "images": N_IMAGES}
    from PIL import Image
    with Image.open(shot) as im:
        colors = im.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colors is not None and len(colors) > N_STYLES + N_IMAGES, "blank screenshot"

    # every asset a 200 in the browser's log; the precompressed ones as such
    base = f"http://{netlab.SERVER_IP}:{PORT}"
    by_path = {r["url"][len(base):]: r for r in seen["responses"] if r["url"].startswith(base)}
    assert sorted(by_path) == sorted(["/"] + assets)
    assert all(r["status"] == 200 for r in by_path.values()), by_path
    for i in range(COMPRESSED):
        for p in (f"/static/s{i}.css", f"/static/j{i}.js"):
            # Chromium offers br only over HTTPS: here it takes the .gz
            assert by_path[p]["encoding"] == "gzip", by_path[p]

    # the HTML came from Python, every asset from C, including those sent
    # on the connection that carried the HTML
    assert python_paths == ["/"]
    assert after["fast_requests"] - before["fast_requests"] == len(assets)
    assert after["fast_encoded"] - before["fast_encoded"] == 2 * COMPRESSED
    assert after["fast_handbacks"] - before["fast_handbacks"] >= 1
    html_conn = by_path["/"]["connection"]
    assert any(r["connection"] == html_conn for p, r in by_path.items() if p != "/"), \
        "no asset came over the HTML's connection"
