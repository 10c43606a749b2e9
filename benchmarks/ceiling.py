"""The transport's ceiling: frames (and GSO super-frames) per second that
this machine can send from the server namespace over the lab veth, and
their CPU cost, for the TX mechanisms specloop can use -- against the
kernel's own TCP sending the same bytes, measured the same way.

ceiling.c is compiled here with gcc at run time (nothing built is kept)
and run in the server namespace pinned to the server's CPU.  Its frames go
to a port nobody listens on in the client namespace, where an nft rule in
the input hook counts and drops them: the receiver's work per frame is then
IP receive, routing and one netfilter rule -- the same for every mode, and
no RST comes back to cost the sender's CPU a second skb (on veth the
receive side of a frame runs on the sender's CPU, inside its send call).
The kernel TCP row's receiver is a real socket (ceiling tcp-sink) on the
client's CPU: its TCP receive work is in the row, and it is what a kernel
server's bytes cost.

CPU per frame: all non-idle time of the server's CPU (user, system, irq,
softirq; /proc/stat) over the run, per frame sent -- the sender's system
call, the veth crossing and the receiver's input hook, whoever is charged
for them.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import time
from typing import Any

from specloop import netlab

from . import runner

HERE = pathlib.Path(__file__).resolve().parent
SOURCE = HERE / "ceiling.c"
PORT = 9              # discard: nobody listens on it in the client namespace
TCP_PORT = 5299       # the kernel TCP row's sink
NFT_TABLE = "specloop_ceiling"
PAYLOAD = 1448        # bytes per segment: specloop's MSS on this lab (timestamps on)
GSO_SEGMENTS = 45     # segments per super-frame (65,160 payload bytes)

# (id, label, ceiling.c mode, batch): what each row sends
MODES: tuple[tuple[str, str, str, int], ...] = (
    ("afxdp", "AF_XDP copy-mode TX, 64 frames per sendto kick (specloop's path)", "xdp", 64),
    ("packet", "AF_PACKET, one sendmsg per 1,514-byte frame", "packet", 1),
    ("packet-mmsg", "AF_PACKET, sendmmsg of 64 frames", "packet", 64),
    ("packet-gso", "AF_PACKET + PACKET_VNET_HDR, one 64 KiB GSO super-frame per sendmsg",
     "gso", 1),
    ("packet-gso-mmsg", "AF_PACKET + PACKET_VNET_HDR, sendmmsg of 8 super-frames", "gso", 8),
    ("kernel-tcp", "the kernel's TCP: send() of 64 KiB buffers to a socket in the client "
                   "namespace (TSO/GSO, its receiver's TCP included)", "tcp", 65536),
    ("kernel-tcp-sendfile", "the kernel's TCP: sendfile() of a 16 MiB file, over and over "
                            "(nginx's way: no copy from user space)", "tcp-sendfile", 0),
)
SENDFILE_BYTES = 16 << 20

METHOD = (
    "Each row sends for {seconds} s from the server namespace, pinned to CPU {cpu}, over "
    "the lab veth: finished Ethernet/IPv4/TCP frames of specloop's layout (32-byte TCP "
    "header with timestamps, 1,448 payload bytes; super-frames of 45 such segments with a "
    "virtio_net_hdr: NEEDS_CSUM, GSO_TCPV4, gso_size 1448) to port {port} in the client "
    "namespace, where an nft rule in the input hook counts and drops them (the receiver "
    "does IP receive and routing, no TCP and no RST back; delivered = the rule's count "
    "over what was sent). The kernel TCP row sends to a reading socket on CPU {ccpu}. CPU "
    "per frame: all non-idle time of CPU {cpu} (/proc/stat, steal excluded) per frame "
    "(skb) sent; on veth that includes the receiver's input work, which runs inside the "
    "sender's system call. Source: benchmarks/ceiling.c (compiled with gcc at run time).")


class CeilingError(Exception):
    pass


def build(tmp: pathlib.Path) -> pathlib.Path:
    """Compiles ceiling.c into ``tmp``; raises CeilingError saying why not."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise CeilingError("no C compiler (apt-get install gcc)")
    out = tmp / "ceiling"
    p = subprocess.run([gcc, "-O2", "-Wall", "-o", str(out), str(SOURCE), "-lxdp", "-lbpf"],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise CeilingError(f"gcc failed (libxdp-dev, libbpf-dev?): {p.stderr.strip()[-300:]}")
    return out


def _mac(ns: str, ifname: str) -> str:
    p = subprocess.run(["ip", "-n", ns, "-j", "link", "show", ifname], capture_output=True,
                       text=True, check=True)
    return json.loads(p.stdout)[0]["address"]


def _nft(*argv: str, stdin: str | None = None) -> str:
    p = subprocess.run(netlab.in_ns(netlab.CLIENT_NS, "nft", *argv), input=stdin,
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise CeilingError(f"nft {' '.join(argv)}: {p.stderr.strip()[-200:]}")
    return p.stdout


def _counter() -> tuple[int, int]:
    """(packets, bytes) the client's drop rule has counted."""
    data = json.loads(_nft("-j", "list", "table", "ip", NFT_TABLE))
    for item in data.get("nftables", []):
        rule = item.get("rule")
        if rule:
            for expr in rule.get("expr", []):
                if "counter" in expr:
                    return expr["counter"]["packets"], expr["counter"]["bytes"]
    return 0, 0


def _tx_packets() -> tuple[int, int]:
    """(packets, dropped) the server's veth has transmitted: skbs, whoever
    made them (the kernel TCP row's frame count)."""
    p = subprocess.run(["ip", "-n", netlab.SERVER_NS, "-s", "-j", "link", "show",
                        netlab.SERVER_IF], capture_output=True, text=True, check=True)
    tx = json.loads(p.stdout)[0]["stats64"]["tx"]
    return int(tx["packets"]), int(tx["dropped"])


def _cpu_busy(cpu: int) -> tuple[int, int]:
    """(non-idle jiffies without steal, steal jiffies) of one CPU."""
    user, nice, system, idle, iowait, irq, softirq, steal = runner.per_cpu_times()[cpu]
    return user + nice + system + irq + softirq, steal


def _measure(argv: list[str], frames_known: bool) -> tuple[dict[str, Any], dict[str, float]]:
    cpu = runner.SERVER_CPU
    c0 = _counter() if frames_known else (0, 0)
    x0 = _tx_packets()
    b0, s0 = _cpu_busy(cpu)
    cb0, _ = _cpu_busy(runner.CLIENT_CPU)
    t0 = time.monotonic()
    p = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    t1 = time.monotonic()
    b1, s1 = _cpu_busy(cpu)
    cb1, _ = _cpu_busy(runner.CLIENT_CPU)
    c1 = _counter() if frames_known else (0, 0)
    x1 = _tx_packets()
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("CEILING ")), None)
    if line is None:
        raise CeilingError(f"rc {p.returncode}: {(p.stderr or p.stdout).strip()[-300:]}")
    r = json.loads(line[len("CEILING "):])
    wall = t1 - t0
    return r, {"server_cpu_s": (b1 - b0) / runner.CLK_TCK,
               "steal_s": (s1 - s0) / runner.CLK_TCK,
               "client_cpu_s": (cb1 - cb0) / runner.CLK_TCK, "wall_s": wall,
               "counted_packets": c1[0] - c0[0], "counted_bytes": c1[1] - c0[1],
               "veth_tx_packets": x1[0] - x0[0], "veth_tx_dropped": x1[1] - x0[1]}


def measure(tmp: pathlib.Path, seconds: float, progress=lambda msg: None) -> dict[str, Any]:
    """Every mode of MODES, one after the other; the result for the report."""
    base: dict[str, Any] = {"seconds": seconds, "port": PORT,
                            "method": METHOD.format(seconds=seconds, cpu=runner.SERVER_CPU,
                                                    ccpu=runner.CLIENT_CPU, port=PORT)}
    try:
        binary = build(tmp)
    except CeilingError as exc:
        return dict(base, measured=False, reason=f"not measured: {exc}", results=[])
    src_mac = _mac(netlab.SERVER_NS, netlab.SERVER_IF)
    dst_mac = _mac(netlab.CLIENT_NS, netlab.CLIENT_IF)
    server = netlab.in_ns(netlab.SERVER_NS, "taskset", "-c", str(runner.SERVER_CPU), str(binary))
    results = []
    try:
        _nft("-f", "-", stdin=(f"table ip {NFT_TABLE} {{\n  chain input {{\n"
                               f"    type filter hook input priority 0; policy accept;\n"
                               f"    ip saddr {netlab.SERVER_IP} tcp dport {PORT} counter drop\n"
                               f"  }}\n}}\n"))
        for mid, label, mode, batch in MODES:
            rec: dict[str, Any] = {"id": mid, "label": label, "mode": mode, "batch": batch}
            try:
                if mode in ("tcp", "tcp-sendfile"):
                    rec.update(_tcp(server, binary, seconds, mode, batch, tmp))
                else:
                    r, m = _measure(server + [mode, netlab.SERVER_IF, src_mac, dst_mac,
                                              netlab.SERVER_IP, netlab.CLIENT_IP, str(PORT),
                                              str(seconds), str(batch)], True)
                    rec.update(_figures(r, m))
                    rec["delivered_pct"] = (round(100 * m["counted_packets"] / r["frames"], 1)
                                            if r["frames"] else None)
                rec["status"] = "ok"
            except (CeilingError, OSError, subprocess.SubprocessError, ValueError) as exc:
                rec.update(status="failed", reason=str(exc))
            results.append(rec)
            progress(_line(rec))
    except CeilingError as exc:
        return dict(base, measured=False, reason=f"not measured: {exc}", results=results)
    finally:
        subprocess.run(netlab.in_ns(netlab.CLIENT_NS, "nft", "delete", "table", "ip",
                                    NFT_TABLE), capture_output=True)
    return dict(base, measured=any(r["status"] == "ok" for r in results), reason=None,
                results=results)


def _figures(r: dict[str, Any], m: dict[str, float]) -> dict[str, Any]:
    secs = r["seconds"]
    # the kernel's TCP: its skbs as the veth counted them (ACKs go the other way)
    frames = r["frames"] or m["veth_tx_packets"]
    segs = r["segments"]
    cpu = m["server_cpu_s"]
    return {
        "frames": frames, "segments": segs, "payload_bytes": r["payload_bytes"],
        "calls": r["calls"], "errors": r["errors"], "seconds": round(secs, 3),
        "frames_per_s": round(frames / secs) if frames else None,
        "segments_per_s": round(segs / secs),
        "payload_gbit_s": round(r["payload_bytes"] * 8 / secs / 1e9, 3),
        "server_cpu_pct": round(100 * cpu / m["wall_s"], 1),
        "steal_pct": round(100 * m["steal_s"] / m["wall_s"], 1),
        "client_cpu_pct": round(100 * m["client_cpu_s"] / m["wall_s"], 1),
        "process_cpu_s": round(r["user_s"] + r["system_s"], 3),
        "veth_tx_packets": m["veth_tx_packets"], "veth_tx_dropped": m["veth_tx_dropped"],
        "cpu_us_per_frame": round(cpu * 1e6 / frames, 3) if frames else None,
        "cpu_us_per_segment": round(cpu * 1e6 / segs, 3) if segs else None,
    }


def _tcp(server: list[str], binary: pathlib.Path, seconds: float, mode: str, bufsize: int,
         tmp: pathlib.Path) -> dict[str, Any]:
    if mode == "tcp-sendfile":
        src = tmp / "ceiling-sendfile.bin"
        if not src.exists():
            with open(src, "wb") as f:
                f.write(bytes(range(256)) * (SENDFILE_BYTES // 256))
        last = str(src)
    else:
        last = str(bufsize)
    sink = subprocess.Popen(netlab.in_ns(netlab.CLIENT_NS, "taskset", "-c",
                                         str(runner.CLIENT_CPU), str(binary), "tcp-sink",
                                         str(TCP_PORT)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert sink.stdout is not None
        if sink.stdout.readline().strip() != "LISTENING":
            raise CeilingError(f"tcp-sink did not listen: {sink.stderr.read()[-200:]}")
        r, m = _measure(server + [mode, netlab.CLIENT_IP, str(TCP_PORT), str(seconds), last],
                        False)
        out, err = sink.communicate(timeout=30)
    finally:
        if sink.poll() is None:
            sink.kill()
            sink.wait()
    got = next((json.loads(ln[5:]) for ln in out.splitlines() if ln.startswith("SINK ")), None)
    if got is None or got["bytes"] != r["payload_bytes"]:
        raise CeilingError(f"the sink read {got and got['bytes']} of {r['payload_bytes']} "
                           f"bytes: {err.strip()[-200:]}")
    rec = _figures(r, m)
    rec["delivered_pct"] = 100.0
    return rec


def _line(rec: dict[str, Any]) -> str:
    head = f"           ceiling {rec['id']:<16}"
    if rec["status"] != "ok":
        return head + f" failed: {rec['reason']}"
    fr = rec["frames_per_s"]
    return (head + (f" {fr:>10,} frames/s" if fr else " " * 19)
            + f" {rec['segments_per_s']:>10,} segments/s {rec['payload_gbit_s']:6.2f} Gbit/s"
            f"  CPU {rec['server_cpu_pct']:.0f}%")
