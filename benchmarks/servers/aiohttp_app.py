"""aiohttp: GET / -> "Hello, world!" (13 bytes, text/plain); files of
--static DIR under /static/ with web.FileResponse (aiohttp's add_static).

``--fast-path`` registers the static routes with specloop's static fast path
(``specloop.aiohttp.add_static``: answered in C, never waking Python)
instead of aiohttp's; it needs ``--loop specloop`` over the bypass.
"""

from __future__ import annotations

import sys

from aiohttp import web

import _common

STATIC = True                      # serves --static DIR under /static/
LOOPS = ("asyncio", "uvloop", "specloop")   # runs on every loop


async def hello(request: web.Request) -> web.Response:
    return web.Response(body=_common.HELLO, content_type="text/plain")


# static responses Python made although the fast path serves /static/ (it
# leaves some to aiohttp): with the engine's fast_requests, the share of
# static requests answered in C (benchmarks/mixed.py reads both)
python_static = {"python_static_responses": 0}


async def count_python_static(request: web.Request, response: web.StreamResponse) -> None:
    if request.path.startswith("/static/"):
        python_static["python_static_responses"] += 1


def make_app(static: str | None, fast_path: bool) -> web.Application:
    app = web.Application()
    app.router.add_get("/", hello)
    if static:
        if fast_path:
            import specloop.aiohttp
            specloop.aiohttp.add_static(app, "/static", static)
            app.on_response_prepare.append(count_python_static)
        else:
            app.router.add_static("/static", static)
    return app


def main() -> int:
    args = _common.parse_args(__doc__.splitlines()[0], lambda p: p.add_argument(
        "--fast-path", action="store_true",
        help="static routes through specloop.aiohttp.add_static"))
    if args.fast_path and args.loop != "specloop":
        print("--fast-path needs --loop specloop", file=sys.stderr)
        return 2
    app = make_app(args.static, args.fast_path)

    async def start():
        runner = web.AppRunner(app, access_log=None)   # as nginx: access_log off
        await runner.setup()
        site = web.TCPSite(runner, args.host, args.port, backlog=_common.BACKLOG)
        await site.start()
        return runner.cleanup

    return _common.serve(args.loop, start, lambda: python_static)


if __name__ == "__main__":
    sys.exit(main())
