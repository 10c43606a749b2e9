"""One exchange of the loss matrix (benchmarks/loss_matrix.py), both ends.

The client sends N bytes; the server answers with their sha256 (64 hex
digits) and N bytes of its own, then closes.  The client checks both
byte for byte and prints one JSON line: what it got, how long the
exchange took, and its kernel TCP's view of the connection (TCP_INFO).

The server is the same asyncio Protocol on either stack: on specloop's
bypass (``--stack specloop``: a specloop loop on ``--interface``) or on
the kernel's TCP (``--stack kernel``: asyncio's default loop).  It serves
one connection, then prints one JSON line (with specloop's engine
counters on the bypass) and exits.

Runs as a script (``python loss_exchange.py client|server ...``), inside
a lab namespace; nothing here needs the checkout besides specloop itself.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import socket
import struct
import sys
import threading
import time

UP = bytes(range(256)) * 4096                              # 1 MiB, client -> server
DOWN = hashlib.sha256(b"down").digest() * (1 << 15)        # 1 MiB, server -> client
MIB = 1 << 20

# struct tcp_info (include/uapi/linux/tcp.h): byte offsets of the fields read
TCPI_RTT, TCPI_TOTAL_RETRANS, TCPI_MIN_RTT = 68, 100, 148

# the engine counters a server on the bypass reports
SPECLOOP_COUNTERS = ("rto_expired", "retransmits", "fast_retransmits", "tail_loss_probes",
                     "dupacks_in", "ooo_segments", "sack_blocks_in", "dsack_in", "dsack_sent",
                     "retransmits_lost", "tlp_recoveries", "delayed_acks", "pure_acks_sent",
                     "drop_ooo_full",
                     "rx_packets", "impair_rx_dropped",
                     "tx_gso_frames", "tx_gso_fallback_segments")


def _set_cc(sock: socket.socket, cc: str | None) -> None:
    if cc:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc.encode())


# ---- server --------------------------------------------------------------------


class Exchange(asyncio.Protocol):
    """Takes ``n`` bytes in, answers with their sha256 and then ``n`` bytes."""

    def __init__(self, n: int, done: asyncio.Future) -> None:
        self.n = n
        self.got = 0
        self.h = hashlib.sha256()
        self.done = done
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.h.update(data)
        self.got += len(data)
        if self.got == self.n and self.transport is not None:
            self.transport.write(self.h.hexdigest().encode())
            for _ in range(self.n // MIB):
                self.transport.write(DOWN)
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(exc)


async def _serve(loop: asyncio.AbstractEventLoop, args: argparse.Namespace) -> dict:
    done = loop.create_future()
    protos: list[Exchange] = []

    def factory() -> Exchange:
        protos.append(Exchange(args.size, done))
        return protos[-1]

    if args.stack == "kernel":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        _set_cc(sock, args.cc)      # accepted connections inherit it
        sock.bind((args.host, args.port))
        server = await loop.create_server(factory, sock=sock, backlog=4)
    else:
        server = await loop.create_server(factory, args.host, args.port, backlog=4)
    print("ready", flush=True)
    out: dict = {"stack": args.stack, "cpus": sorted(os.sched_getaffinity(0))}
    try:
        exc = await asyncio.wait_for(done, args.limit)
        out["status"] = "ok" if exc is None and protos[0].got == args.size else "error"
        if exc is not None:
            out["error"] = repr(exc)
        out["received"] = protos[0].got
    except asyncio.TimeoutError:
        out["status"] = "timeout"
        out["received"] = protos[0].got if protos else 0
    finally:
        server.close()
    if args.stack == "specloop" and out["status"] != "timeout":
        # (after a timeout the client is gone: report at once, so that the
        # matrix gets the counters before it gives up on this process)
        # connection_lost came when the data left the transport, but our TCP
        # still holds it until acknowledged: it runs in this process, so the
        # process lives on until every connection is in TIME-WAIT or gone
        # (the kernel's TCP carries on without its process)
        deadline = loop.time() + args.limit
        while loop.time() < deadline and any(
                c["state_name"] not in ("TIME-WAIT", "CLOSED", "LISTEN")
                for c in loop.stack.tcp_connections()):  # type: ignore[attr-defined]
            await asyncio.sleep(0.01)
    return out


def server_main(args: argparse.Namespace) -> int:
    if args.stack == "specloop":
        import specloop

        loop = specloop.new_event_loop(interface=args.interface)
        if args.rx_loss:
            # the client's packets lost after the client's TCP: XDP hands
            # them to us before any nft hook of this namespace could drop
            # them, so the engine drops the share itself, at its RX
            loop.stack.impair(rx_loss=args.rx_loss / 100,  # type: ignore[attr-defined]
                              seed=args.seed)
    else:
        loop = asyncio.new_event_loop()
    try:
        out = loop.run_until_complete(_serve(loop, args))
        if args.stack == "specloop":
            c = loop.stack.counters()  # type: ignore[attr-defined]
            out["counters"] = {k: int(c[k]) for k in SPECLOOP_COUNTERS if k in c}
    finally:
        loop.close()
    print(json.dumps(out), flush=True)
    return 0


# ---- client --------------------------------------------------------------------


def _tcp_info(sock: socket.socket) -> dict:
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    if len(raw) < TCPI_MIN_RTT + 4:
        return {}
    u32 = lambda off: struct.unpack_from("I", raw, off)[0]  # noqa: E731
    return {"rtt_us": u32(TCPI_RTT), "min_rtt_us": u32(TCPI_MIN_RTT),
            "total_retrans": u32(TCPI_TOTAL_RETRANS)}


def client_main(args: argparse.Namespace) -> int:
    n = args.size
    out: dict = {"status": "error", "cpus": sorted(os.sched_getaffinity(0))}
    t0 = time.monotonic()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(args.limit)
        _set_cc(sock, args.cc)
        sock.connect((args.host, args.port))
        out["connect_s"] = time.monotonic() - t0
        sent_err: list[BaseException] = []

        def send() -> None:
            try:
                for _ in range(n // MIB):
                    sock.sendall(UP)
            except BaseException as e:  # reported below, as the exchange's error
                sent_err.append(e)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        want_up = hashlib.sha256()
        for _ in range(n // MIB):
            want_up.update(UP)
        digest = b""
        deadline = t0 + args.limit
        while len(digest) < 64:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            d = sock.recv(64 - len(digest))
            if not d:
                break
            digest += d
        out["upload_s"] = time.monotonic() - t0
        down = hashlib.sha256()
        got = 0
        while True:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            d = sock.recv(1 << 20)
            if not d:
                break
            down.update(d)
            got += len(d)
            out["downloaded"] = got     # how far it got, should it time out
        out["seconds"] = time.monotonic() - t0
        sender.join(1)
        want_down = hashlib.sha256()
        for _ in range(n // MIB):
            want_down.update(DOWN)
        out["upload_exact"] = digest.decode(errors="replace") == want_up.hexdigest()
        out["download_exact"] = got == n and down.hexdigest() == want_down.hexdigest()
        out["downloaded"] = got
        out["tcp_info"] = _tcp_info(sock)
        if sent_err:
            out["error"] = repr(sent_err[0])
        elif out["upload_exact"] and out["download_exact"]:
            out["status"] = "ok"
    except TimeoutError:
        out["status"] = "timeout"
        out["seconds"] = time.monotonic() - t0
    except OSError as e:
        out["error"] = repr(e)
        out["seconds"] = time.monotonic() - t0
    finally:
        sock.close()
    print(json.dumps(out), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("role", choices=("client", "server"))
    p.add_argument("--stack", choices=("specloop", "kernel"), default="kernel",
                   help="server: whose TCP serves")
    p.add_argument("--interface", help="server on specloop: the bypass interface")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--size", type=int, required=True, help="bytes each way (whole MiB)")
    p.add_argument("--cc", default=None, help="kernel congestion control (TCP_CONGESTION)")
    p.add_argument("--limit", type=float, default=300.0, help="seconds before giving up")
    p.add_argument("--rx-loss", type=float, default=0.0,
                   help="server on specloop: %% of received packets the engine drops "
                   "(Stack.impair), the client->server loss a kernel server gets from nft")
    p.add_argument("--seed", type=int, default=1, help="--rx-loss's random seed (not 0)")
    args = p.parse_args(argv)
    if args.size <= 0 or args.size % MIB:
        p.error("--size must be a positive whole number of MiB")
    if args.role == "server" and args.stack == "specloop" and not args.interface:
        p.error("--stack specloop needs --interface")
    if args.rx_loss and (args.stack != "specloop" or not 0 < args.rx_loss <= 100):
        p.error("--rx-loss is for --stack specloop, a percentage from 0 to 100")
    return server_main(args) if args.role == "server" else client_main(args)


if __name__ == "__main__":
    sys.exit(main())
