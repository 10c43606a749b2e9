"""tornado: GET / -> "Hello, world!" (13 bytes, text/plain) from a
tornado.web RequestHandler behind Tornado's HTTPServer.

On asyncio and uvloop it listens the usual way (``server.listen``); on
specloop through ``specloop.tornado.listen`` (Tornado's own listen watches a
kernel socket with add_reader, which the bypass cannot carry).
"""

from __future__ import annotations

import sys

import tornado.httpserver
import tornado.web

import _common

STATIC = False                     # serves no static files (--static is ignored)
LOOPS = ("asyncio", "uvloop", "specloop")   # runs on every loop


class Hello(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/plain")
        self.write(_common.HELLO)


def main() -> int:
    args = _common.parse_args(__doc__.splitlines()[0])

    async def start():
        app = tornado.web.Application([(r"/", Hello)])
        server = tornado.httpserver.HTTPServer(app)
        aserver = None
        if args.loop == "specloop":
            import specloop.tornado
            aserver = await specloop.tornado.listen(server, args.port, args.host,
                                                    backlog=_common.BACKLOG)
        else:
            server.listen(args.port, args.host, backlog=_common.BACKLOG)

        async def cleanup() -> None:
            server.stop()
            if aserver is not None:
                aserver.close()
                await aserver.wait_closed()
            await server.close_all_connections()

        return cleanup

    return _common.serve(args.loop, start)


if __name__ == "__main__":
    sys.exit(main())
