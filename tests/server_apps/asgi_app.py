"""The ASGI apps the server tests serve, unchanged by specloop: a FastAPI app
(for uvicorn) and a plain Starlette app (for hypercorn), with the same routes:

- ``GET /``: "Hello, world!"
- ``POST /echo``: the request body's length and SHA-256 as JSON
- ``GET /bytes?n=N``: N bytes of ``pattern(N)``
"""

from __future__ import annotations

import hashlib

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route


def pattern(n: int) -> bytes:
    """n deterministic bytes (the same as tests/test_tcp_e2e.py's)."""
    block = hashlib.sha256(b"specloop").digest() * 2048  # 64 KiB
    return (block * (n // len(block) + 1))[:n]


async def _digest(request: Request) -> dict:
    h = hashlib.sha256()
    n = 0
    async for chunk in request.stream():
        h.update(chunk)
        n += len(chunk)
    return {"sha256": h.hexdigest(), "length": n}


# ---- FastAPI ---------------------------------------------------------------

app = FastAPI()


@app.get("/", response_class=PlainTextResponse)
async def hello() -> str:
    return "Hello, world!"


@app.post("/echo")
async def echo(request: Request) -> dict:
    return await _digest(request)


@app.get("/bytes")
async def nbytes(n: int) -> Response:
    return Response(content=pattern(n), media_type="application/octet-stream")


# ---- Starlette ---------------------------------------------------------------

async def _hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("Hello, world!")


async def _echo(request: Request) -> JSONResponse:
    return JSONResponse(await _digest(request))


async def _bytes(request: Request) -> Response:
    return Response(pattern(int(request.query_params["n"])),
                    media_type="application/octet-stream")


starlette_app = Starlette(routes=[Route("/", _hello), Route("/echo", _echo, methods=["POST"]),
                                  Route("/bytes", _bytes)])
