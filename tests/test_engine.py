"""The native engine on a real veth in the lab: steering, counters, teardown.

The engine sits on sl-srv0 in slsrv; kernel clients run in slcli.
"""

from __future__ import annotations

import errno
import socket
import subprocess
import time

import pytest

import specloop
from specloop import netlab

from labtools import run_client, python_in_client

pytestmark = pytest.mark.lab

CONNECT = """
import socket, sys
s = socket.socket()
s.settimeout({timeout})
try:
    s.connect(("10.55.0.2", {port}))
    print("connected")
except socket.timeout:
    print("timeout")
except ConnectionRefusedError:
    print("refused")
"""


def connect_from_client(port: int, timeout: float = 1.5) -> str:
    r = subprocess.run(python_in_client(CONNECT.format(port=port, timeout=timeout)),
                       capture_output=True, text=True, timeout=30)
    return r.stdout.strip()


def xdp_attached() -> bool:
    link = netlab.status()["namespaces"][netlab.SERVER_NS]["link"]
    return bool(link and link["xdp_attached"])


def test_steered_syns_reach_engine_and_kernel_stays_silent(bypass_loop):
    stack = bypass_loop.stack
    before = stack.counters()["rx_tcp_syn"]
    stack.steer_port(9100)
    # no RST from the kernel: the client's SYN is never answered, it times out
    assert connect_from_client(9100) == "timeout"
    bypass_loop.run_until_complete(_drain(bypass_loop))
    c = stack.counters()
    assert c["rx_tcp_syn"] - before >= 1
    assert c["rx_packets"] >= 1 and c["drop_bad_tcp_checksum"] == 0


async def _drain(loop) -> None:
    import asyncio
    for _ in range(5):
        await asyncio.sleep(0.01)


def test_unsteered_port_reaches_the_kernel(bypass_loop):
    bypass_loop.stack.steer_port(9101)
    with netlab.inside(netlab.SERVER_NS):
        listener = socket.create_server(("10.55.0.2", 9102))
    try:
        assert connect_from_client(9102) == "connected"
        # no listener and not steered: the kernel answers with RST
        assert connect_from_client(9103) == "refused"
    finally:
        listener.close()


def test_unsteer_gives_port_back(bypass_loop):
    stack = bypass_loop.stack
    stack.steer_port(9104)
    assert connect_from_client(9104, timeout=1.0) == "timeout"
    stack.unsteer_port(9104)
    assert connect_from_client(9104) == "refused"


def test_ping_and_arp_still_work(bypass_loop):
    bypass_loop.stack.steer_port(9105)
    run_client("ip", "neigh", "flush", "dev", netlab.CLIENT_IF)
    r = run_client("ping", "-c", "2", "-i", "0.2", "-W", "2", netlab.SERVER_IP)
    assert r.returncode == 0, r.stdout + r.stderr
    r = run_client("ip", "neigh", "show", netlab.SERVER_IP)
    assert "lladdr" in r.stdout


def test_xdp_program_lives_and_dies_with_the_loop(lab):
    assert not xdp_attached()
    with netlab.inside(lab.server_ns):
        loop = specloop.new_event_loop(interface=lab.server_if)
    try:
        assert xdp_attached()
        assert loop.stack.xdp_mode in ("native", "generic")
    finally:
        loop.close()
    assert not xdp_attached()
    loop.close()  # idempotent


def test_generic_mode(lab):
    with netlab.inside(lab.server_ns):
        loop = specloop.new_event_loop(interface=lab.server_if, xdp_mode="generic")
    try:
        assert loop.stack.xdp_mode == "generic"
        loop.stack.steer_port(9106)
        assert connect_from_client(9106, timeout=1.0) == "timeout"
        loop.run_until_complete(_drain(loop))
        assert loop.stack.counters()["rx_tcp_syn"] >= 1
    finally:
        loop.close()


def test_second_engine_on_same_queue_is_refused(bypass_loop, lab):
    with netlab.inside(lab.server_ns):
        with pytest.raises(specloop.BypassUnavailableError) as info:
            specloop.new_event_loop(interface=lab.server_if)
    assert info.value.errno in (errno.EBUSY, errno.EEXIST)
    assert netlab.SERVER_IF in str(info.value)


def test_frames_add_up(bypass_loop):
    c = bypass_loop.stack.counters()
    parts = ("frames_free", "frames_fill", "frames_rx_held", "frames_tx", "frames_sndq")
    assert sum(c[p] for p in parts) == c["frames_total"] == bypass_loop.config.frame_count
    assert c["frames_fill"] == 2 * bypass_loop.config.ring_size  # the fill ring is twice RX


def test_bad_port_is_a_value_error(bypass_loop):
    for bad in (0, 65536, 70000):
        with pytest.raises(ValueError, match="port"):
            bypass_loop.stack.steer_port(bad)


def test_sigkill_leaves_no_xdp_program(lab):
    code = ("import specloop, sys, time\n"
            f"loop = specloop.new_event_loop(interface={netlab.SERVER_IF!r})\n"
            "loop.stack.steer_port(9107)\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n")
    import sys
    proc = subprocess.Popen(netlab.in_ns(lab.server_ns, sys.executable, "-c", code),
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert xdp_attached()
        proc.kill()
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 5
    while xdp_attached() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not xdp_attached()
    # and the port is the kernel's again: nothing blackholes it
    assert connect_from_client(9107) == "refused"


def test_busy_poll_loop_serves(lab):
    """busy_poll_us: the engine's wait spins on the RX ring before sleeping
    in epoll, and the loop still serves and idles correctly."""
    import asyncio

    with netlab.inside(lab.server_ns):
        loop = specloop.new_event_loop(interface=lab.server_if, busy_poll_us=200)
    try:
        assert loop.config.busy_poll_us == 200

        class Echo(asyncio.Protocol):
            def connection_made(self, t):
                self.t = t

            def data_received(self, data):
                self.t.write(data)

        async def main():
            server = await loop.create_server(Echo, netlab.SERVER_IP, 9108)
            code = ("import socket; s = socket.create_connection(('%s', 9108), timeout=5)\n"
                    "for i in range(200):\n s.sendall(b'ping'); assert s.recv(4) == b'ping'\n"
                    "print('ok')" % netlab.SERVER_IP)
            proc = await asyncio.create_subprocess_exec(*python_in_client(code),
                                                        stdout=subprocess.PIPE)
            out, _ = await proc.communicate()
            server.close()
            t0 = loop.time()
            await asyncio.sleep(0.05)  # an idle loop still sleeps the right time
            return out.strip(), loop.time() - t0

        out, slept = loop.run_until_complete(main())
        assert out == b"ok" and 0.045 < slept < 0.5
        assert loop.stack.counters()["loop_busy_poll_hits"] > 0  # the spin found frames
    finally:
        loop.close()


def test_adaptive_poll_spins_for_one_connection_only(lab):
    """adaptive_poll_us: the wait spins on the RX ring while one connection's
    request-response turns pace the loop (wrk -c1), never while 32
    connections are busy (their peers have other work while we sleep), and
    not at all when it is 0.  The ceiling is wide here so that a slow
    machine's gaps still qualify: what is tested is the choice."""
    import asyncio

    from labtools import arun_client

    response = (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain"
                b"\r\n\r\nok")

    class Hello(asyncio.Protocol):
        def connection_made(self, t):
            self.t = t

        def data_received(self, data):
            self.t.write(response * data.count(b"\r\n\r\n"))

    def serve(ceiling: int, port: int, conns: tuple[int, ...]) -> list[dict]:
        with netlab.inside(lab.server_ns):
            loop = specloop.new_event_loop(interface=lab.server_if, adaptive_poll_us=ceiling)
        try:
            assert loop.config.adaptive_poll_us == ceiling

            async def main():
                server = await loop.create_server(Hello, netlab.SERVER_IP, port)
                seen = []
                for c in conns:
                    before = loop.stack.counters()
                    rc, out, err = await arun_client(
                        "wrk", "-t1", f"-c{c}", "-d1s", f"http://{netlab.SERVER_IP}:{port}/")
                    assert rc == 0, err.decode()
                    after = loop.stack.counters()
                    requests = int(out.decode().split(" requests in")[0].split()[-1])
                    seen.append({"conns": c, "requests": requests,
                                 "hits": after["loop_busy_poll_hits"] - before["loop_busy_poll_hits"],
                                 "misses": after["loop_busy_poll_misses"]
                                 - before["loop_busy_poll_misses"]})
                server.close()
                return seen

            return loop.run_until_complete(main())
        finally:
            loop.close()

    one, many = serve(1000, 9109, (1, 32))
    print(f"\n{one}\n{many}")
    assert one["requests"] > 1000 and many["requests"] > 1000
    # most turns of the one connection were caught by the spin
    assert one["hits"] > one["requests"] // 2, one
    # 32 connections: at most the few turns before the count saw them all
    assert many["hits"] + many["misses"] < many["requests"] // 100, many
    (off,) = serve(0, 9110, (1,))
    assert off["hits"] == off["misses"] == 0, off


def test_adaptive_poll_stops_where_kernel_sockets_pace_the_loop(lab):
    """The spin sees only the RX ring: a loop whose turns are a kernel
    socket's (here an echo on loopback, pinged by a thread) stops spinning
    after a few waits instead of spinning through every one."""
    import asyncio
    import threading

    class Echo(asyncio.Protocol):
        def connection_made(self, t):
            self.t = t

        def data_received(self, data):
            self.t.write(data)

    with netlab.inside(lab.server_ns):
        loop = specloop.new_event_loop(interface=lab.server_if, adaptive_poll_us=1000)
    try:
        server = loop.run_until_complete(loop.create_server(Echo, "127.0.0.1", 0))
        port = server.sockets[0].getsockname()[1]
        turns = 500
        done = []

        def client():
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                for _ in range(turns):
                    s.sendall(b"ping")
                    assert s.recv(4) == b"ping"
            done.append(True)

        before = loop.stack.counters()
        thread = threading.Thread(target=client)
        thread.start()

        async def wait_client():
            while thread.is_alive():
                await asyncio.sleep(0.01)

        loop.run_until_complete(wait_client())
        thread.join()
        after = loop.stack.counters()
        server.close()
        assert done == [True]
        spins = (after["loop_busy_poll_hits"] + after["loop_busy_poll_misses"]
                 - before["loop_busy_poll_hits"] - before["loop_busy_poll_misses"])
        assert spins <= 5, spins
    finally:
        loop.close()


def test_every_queue_of_a_multi_queue_interface(lab):
    """queue="all" (the default) opens one AF_XDP socket per RX queue on one
    UMEM: flows the sender puts on either queue are all served."""
    import asyncio

    netlab.up(queues=2)
    try:
        with netlab.inside(lab.server_ns):
            loop = specloop.new_event_loop(interface=lab.server_if, xdp_mode="native")
        try:
            assert len(loop.stack.engine.fds) == 2

            class Echo(asyncio.Protocol):
                def connection_made(self, t):
                    self.t = t

                def data_received(self, data):
                    self.t.write(data)

            code = ("import socket\nfor i in range(20):\n"
                    " s = socket.create_connection(('%s', 9109), timeout=3)\n"
                    " s.sendall(b'q'); assert s.recv(1) == b'q'; s.close()\n"
                    "print('ok')" % netlab.SERVER_IP)

            async def main():
                server = await loop.create_server(Echo, netlab.SERVER_IP, 9109)
                outs = []
                for cpu in ("0", "1"):  # XPS: the client's CPU picks its queue
                    proc = await asyncio.create_subprocess_exec(
                        *netlab.in_ns(netlab.CLIENT_NS, "taskset", "-c", cpu, sys.executable,
                                      "-c", code), stdout=subprocess.PIPE)
                    outs.append((await proc.communicate())[0].strip())
                server.close()
                return outs

            import sys
            assert loop.run_until_complete(main()) == [b"ok", b"ok"]
            per_queue = loop.stack.counters()["rx_queue_packets"]
            assert len(per_queue) == 2 and all(n > 0 for n in per_queue), per_queue
        finally:
            loop.close()
    finally:
        netlab.up(queues=1)
