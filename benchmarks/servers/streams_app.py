"""asyncio streams: GET / -> "Hello, world!" (13 bytes, text/plain), a
minimal HTTP/1.1 keep-alive server on ``asyncio.start_server``
(StreamReader/StreamWriter), no framework.
"""

from __future__ import annotations

import asyncio
import sys

import _common

STATIC = False                     # serves no static files (--static is ignored)
LOOPS = ("asyncio", "uvloop", "specloop")   # runs on every loop

RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\n"
            + _common.HELLO)
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                break
            lines = head.split(b"\r\n")
            parts = lines[0].split()
            if len(parts) != 3:
                break
            close = parts[2] == b"HTTP/1.0"
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection":
                    v = value.strip().lower()
                    close = v == b"close" or (close and v != b"keep-alive")
            if length:
                await reader.readexactly(length)
            writer.write(RESPONSE if parts[1] == b"/" else NOT_FOUND)
            await writer.drain()
            if close:
                break
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        pass
    finally:
        writer.close()


def main() -> int:
    args = _common.parse_args(__doc__.splitlines()[0])

    return _common.serve_server(args.loop, lambda: asyncio.start_server(
        handle, args.host, args.port, backlog=_common.BACKLOG))


if __name__ == "__main__":
    sys.exit(main())
