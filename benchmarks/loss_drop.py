"""Losses at chosen places (issue 12): what recovering from them costs
specloop's TCP and the kernel's.

Random loss spreads a cell's times over a factor of ten, and a stack that
recovers worse from each loss hides in that spread.  Here nothing is lost
but the chosen packets, the same ones for both stacks: packet number K
(counting from 0) of those the server sends with a payload, or several
such numbers in one run, dropped in the client
namespace's input hook (nftables ``numgen inc``, the rule made afresh for
every run).  The exchange is the loss matrix's (benchmarks/loss_exchange.py:
the client uploads N bytes, the server answers their digest and N bytes),
with the matrix's delay, segments on the wire and fresh TCP metrics; the
figure is the download: from the server's digest to the last byte.

    specloop bench --loss-drop [--drop 10,30,80+200] [--delay 20] [--size 1]
                               [--runs 3] [--pin]

prints a markdown table: per place and stack the download's median time
(min-max over the runs), the server's retransmissions and RTOs per run.
``--drop=none,30,30+150``: "none" (or -1, then with "=") is a run without
any drop; "30+150" drops both packets in one run.  As root; SPECLOOP_LAB
picks the lab.
"""

from __future__ import annotations

import argparse
import contextlib
import pathlib
import statistics
import subprocess
import sys
from typing import Any, Iterator, Sequence

from specloop import netlab

try:
    from . import impair
    from .loss_matrix import MIB, STACKS, run_once
except ImportError:     # run as a script
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
    from benchmarks import impair  # type: ignore[no-redef]
    from benchmarks.loss_matrix import MIB, STACKS, run_once  # type: ignore[no-redef]

DROP_TABLE = "sldrop"
# what counts as a packet with payload: more than the headers (IP 20, TCP
# 32 with timestamps) and any option the ACKs of this exchange carry
PAYLOAD_OVER = 400


@contextlib.contextmanager
def drop_packets(places: Sequence[int]) -> Iterator[dict[str, int]]:
    """Drops the packets numbered ``places`` (from 0) of the server's packets
    with a payload, in the client namespace's input hook, while the body
    runs; yields a dict that gets, on exit, how many such packets the rule
    saw (``seen``) and dropped (``dropped``)."""
    if (isinstance(places, (str, bytes)) or not places
            or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 0
                       for k in places)):
        raise ValueError(f"drop_packets: places={places!r}: must be integers >= 0, "
                         "at least one")
    t = DROP_TABLE
    which = "{ " + ", ".join(str(k) for k in sorted(set(places))) + " }"
    text = "\n".join([
        f"add table inet {t}",
        f"add counter inet {t} seen",
        f"add counter inet {t} dropped",
        f"add chain inet {t} c {{ type filter hook input priority 0 ; }}",
        f"add rule inet {t} c ip saddr {netlab.SERVER_IP} meta l4proto tcp "
        f"meta length > {PAYLOAD_OVER} counter name seen "
        f"numgen inc mod {1 << 30} {which} counter name dropped drop",
    ]) + "\n"
    delete = netlab.in_ns(netlab.CLIENT_NS, "nft", "delete", "table", "inet", t)
    subprocess.run(delete, capture_output=True)
    p = subprocess.run(netlab.in_ns(netlab.CLIENT_NS, "nft", "-f", "-"), input=text, text=True,
                       capture_output=True)
    if p.returncode:
        raise RuntimeError(f"drop_packets: nft in {netlab.CLIENT_NS}: {p.stderr.strip()}")
    counts: dict[str, int] = {}
    try:
        yield counts
    finally:
        counts.update(netlab.nft_counters(netlab.CLIENT_NS, t))
        subprocess.run(delete, capture_output=True)


def download_s(rec: dict[str, Any]) -> float | None:
    """The download's time of a run: from the server's digest (the end of
    the upload) to the last byte; None unless the run was ok."""
    cli = rec.get("client") or {}
    if rec.get("status") != "ok":
        return None
    return cli["seconds"] - cli["upload_s"]


def run_drop(place: Sequence[int], stack: str, size: int, limit: float, cc: str,
             pin: bool = False) -> dict[str, Any]:
    """One exchange against ``stack`` with the packets numbered ``place``
    dropped (empty: none); ``pin``: the server on one CPU, the client on the
    other."""
    place = tuple(place)
    if not place:
        rec = run_once(stack, size, limit, cc, pin=pin)
        rec["drop"] = {"place": [], "seen": 0, "dropped": 0}
    else:
        with drop_packets(place) as counts:
            rec = run_once(stack, size, limit, cc, pin=pin)
        rec["drop"] = {"place": list(place), **counts}
    rec["download_s"] = download_s(rec)
    return rec


def place_name(place: Sequence[int]) -> str:
    """How the command line and the table write a place: "none", "30",
    "30+150"."""
    return "+".join(str(k) for k in place) or "none"


def parse_places(text: str) -> list[tuple[int, ...]]:
    """``--drop``'s value: places separated by commas, each "none" (or -1)
    or packet numbers joined by "+" (dropped in the same run)."""
    places = []
    for item in text.split(","):
        item = item.strip()
        if item in ("none", "-1"):
            places.append(())
            continue
        try:
            place = tuple(int(x) for x in item.split("+"))
        except ValueError:
            raise ValueError(f"--drop: {item!r}: packet numbers joined by '+', "
                             "or none") from None
        if any(k < 0 for k in place):
            raise ValueError(f"--drop: {item!r}: packet numbers are 0 or more")
        places.append(place)
    return places


def measure(drops: Sequence[Sequence[int]], runs: int, size: int, limit: float,
            cc: str, pin: bool = False) -> list[dict[str, Any]]:
    """Every place of ``drops``, ``runs`` runs per stack, alternating."""
    out = []
    for k in drops:
        by_stack: dict[str, list] = {s: [] for s in STACKS}
        for i in range(runs):
            for stack in (STACKS if i % 2 == 0 else STACKS[::-1]):
                rec = run_drop(k, stack, size, limit, cc, pin)
                by_stack[stack].append(rec)
                print(f"   drop {place_name(k)} run {i} {stack:8s}: {rec['status']} download "
                      f"{rec['download_s'] or 0:.3f} s retransmits {rec.get('retransmits')} "
                      f"rto {rec.get('rto')} dropped {rec['drop'].get('dropped')}",
                      file=sys.stderr, flush=True)
        out.append({"place": list(k), "runs": by_stack})
    return out


def markdown(results: list[dict[str, Any]], delay_ms: float, size_mib: int,
             pin: bool = False) -> str:
    lines = [f"Chosen packets dropped, {size_mib} MiB each way, {delay_ms:g} ms added delay"
             f"{', server and client pinned to a CPU each' if pin else ''}; "
             "download: from the server's digest to the last byte, median (min–max) "
             "over the runs; the server's retransmissions and RTOs per run.", "",
             "| dropped | specloop download s | kernel download s | × | "
             "retransmits specloop / kernel | RTOs specloop / kernel | ok |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        cells, med, rtx, rto, ok = [], {}, [], [], []
        for s in STACKS:
            runs = r["runs"][s]
            t = [x["download_s"] for x in runs if x["download_s"] is not None]
            med[s] = statistics.median(t) if t else float("nan")
            cells.append(f"{med[s]:.3f} ({min(t):.3f}–{max(t):.3f})" if t else "–")
            rtx.append(f"{statistics.mean(x.get('retransmits') or 0 for x in runs):.1f}")
            rto.append(f"{statistics.mean(x.get('rto') or 0 for x in runs):.1f}")
            ok.append(f"{len(t)}/{len(runs)}")
        ratio = med["specloop"] / med["kernel"] if med["kernel"] else float("nan")
        place = "none" if not r["place"] else "packet " + place_name(r["place"])
        lines.append(f"| {place} | {cells[0]} | {cells[1]} | {ratio:.2f}× | "
                     f"{' / '.join(rtx)} | {' / '.join(rto)} | {', '.join(ok)} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="specloop bench --loss-drop",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--drop", default="10,30,80",
                   help="places, separated by commas: a packet number from 0 of the server's "
                        "packets with payload, several joined by '+' to drop them in one run "
                        "(30+150), or none (-1) (default 10,30,80)")
    p.add_argument("--delay", type=float, default=20.0, help="added round-trip ms (default 20)")
    p.add_argument("--size", type=int, default=1, help="MiB each way (default 1)")
    p.add_argument("--runs", type=int, default=3, help="runs per place and stack (default 3)")
    p.add_argument("--limit", type=float, default=60.0, help="seconds per run (default 60)")
    p.add_argument("--kernel-cc", default="cubic", help="the kernel's congestion control")
    p.add_argument("--pin", action="store_true",
                   help="the server on CPU 1 and the client on CPU 0 (taskset), as "
                        "specloop bench pins them; unpinned by default, as the loss matrix")
    args = p.parse_args(argv)
    try:
        drops = parse_places(args.drop)
    except ValueError as e:
        p.error(str(e))
    if args.runs < 1 or args.size < 1:
        p.error("--runs and --size take 1 or more")
    was_up = netlab.is_up()
    netlab.up()
    try:
        with impair.segments_on_wire(), impair.delay(args.delay):
            results = measure(drops, args.runs, args.size * MIB, args.limit, args.kernel_cc,
                              args.pin)
    finally:
        if not was_up:
            netlab.down()
    print(markdown(results, args.delay, args.size, args.pin), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
