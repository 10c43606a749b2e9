"""raw asyncio.Protocol: GET / -> "Hello, world!" (13 bytes, text/plain), a
bare HTTP/1.1 server on ``loop.create_server`` with no framework and no
streams: the loop and transport's own cost per request, with as little
Python above them as HTTP/1.1 keep-alive and pipelining allow.

It parses what keep-alive and pipelining need: the request line, the end of
the head, ``Content-Length`` (a body is skipped) and ``Connection`` (and
HTTP/1.0's default close). All the responses to the requests of one
``data_received`` leave in one ``transport.write``.
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
BAD = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
MAX_HEAD = 64 * 1024


class HelloProtocol(asyncio.Protocol):
    __slots__ = ("transport", "buf", "skip")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.skip = 0          # body bytes of the current request still to drop

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if self.skip:
            n = min(self.skip, len(buf))
            self.skip -= n
            buf = buf[n:]
        out = []
        close = False
        pos = 0
        while True:
            end = buf.find(b"\r\n\r\n", pos)
            if end < 0:
                break
            head = buf[pos:end]
            pos = end + 4
            line_end = head.find(b"\r\n")
            parts = (head if line_end < 0 else head[:line_end]).split()
            if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
                out.append(BAD)
                close = True
                break
            close = parts[2] == b"HTTP/1.0"
            length = 0
            if line_end >= 0:
                for line in head[line_end + 2:].split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        try:
                            length = int(value)
                        except ValueError:
                            length = -1
                    elif name == b"connection":
                        v = value.strip().lower()
                        close = v == b"close" or (close and v != b"keep-alive")
            if length < 0:
                out.append(BAD)
                close = True
                break
            out.append(RESPONSE if parts[1] == b"/" else NOT_FOUND)
            if close:
                break
            if length:
                take = min(length, len(buf) - pos)
                pos += take
                if take < length:
                    self.skip = length - take
                    break
        self.buf = b"" if close else buf[pos:]
        if len(self.buf) > MAX_HEAD:
            out.append(BAD)
            close = True
        t = self.transport
        if t is None:
            return
        if out:
            t.write(out[0] if len(out) == 1 else b"".join(out))
        if close:
            t.close()


def main() -> int:
    args = _common.parse_args(__doc__.splitlines()[0])

    async def open_server() -> asyncio.Server:
        loop = asyncio.get_running_loop()
        return await loop.create_server(HelloProtocol, args.host, args.port,
                                        backlog=_common.BACKLOG)

    return _common.serve_server(args.loop, open_server)


if __name__ == "__main__":
    sys.exit(main())
