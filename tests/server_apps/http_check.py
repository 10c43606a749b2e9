"""An HTTP/1.1 client for the server tests, run in the client namespace.

    python http_check.py HOST PORT [--post-mib N] [--get-mib N] [--hold]

On one keep-alive connection (http.client): GET /, POST /echo with a large
body, GET /bytes?n= with a large response, GET / again; checks every answer
and that all went over the same socket.  With ``--hold`` it then prints
``HOLD <client port>`` and keeps the connection open until a line arrives
on stdin (the test looks at ``ss`` meanwhile).  Prints one JSON line.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import sys
import time


def pattern(n: int) -> bytes:
    block = hashlib.sha256(b"specloop").digest() * 2048
    return (block * (n // len(block) + 1))[:n]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--post-mib", type=int, default=8)
    p.add_argument("--get-mib", type=int, default=8)
    p.add_argument("--hold", action="store_true")
    p.add_argument("--wait", type=float, default=20.0,
                   help="seconds to retry a refused connection (server starting)")
    args = p.parse_args()
    result: dict = {"ok": False}
    conn = http.client.HTTPConnection(args.host, args.port, timeout=30)
    deadline = time.monotonic() + args.wait
    while True:
        try:
            conn.connect()
            break
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    socks = []

    def request(method: str, path: str, body: bytes | None = None) -> tuple[int, bytes, dict]:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        data = resp.read()
        socks.append(conn.sock)
        return resp.status, data, {k.lower(): v for k, v in resp.getheaders()}

    status, data, _ = request("GET", "/")
    result["get"] = [status, data.decode(errors="replace")]
    body = pattern(args.post_mib << 20)
    status, data, _ = request("POST", "/echo", body)
    echoed = json.loads(data)
    result["post"] = [status, echoed == {"sha256": hashlib.sha256(body).hexdigest(),
                                         "length": len(body)}]
    n = args.get_mib << 20
    status, data, _ = request("GET", f"/bytes?n={n}")
    result["big"] = [status, len(data), data == pattern(n)]
    status, data, headers = request("GET", "/")
    result["again"] = [status, data.decode(errors="replace")]
    result["keepalive"] = (all(s is socks[0] for s in socks) and socks[0] is not None
                           and headers.get("connection", "").lower() != "close")
    result["ok"] = (result["get"] == [200, "Hello, world!"] and result["post"] == [200, True]
                    and result["big"] == [200, n, True] and result["again"] == result["get"]
                    and result["keepalive"])
    if args.hold:
        print(f"HOLD {conn.sock.getsockname()[1]}", flush=True)
        sys.stdin.readline()
    conn.close()
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
