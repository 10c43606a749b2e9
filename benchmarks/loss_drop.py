"""One loss at a chosen place (issue 12): what recovering from it costs
specloop's TCP and the kernel's.

Random loss spreads a cell's times over a factor of ten, and a stack that
recovers worse from each loss hides in that spread.  Here nothing is lost
but one packet, the same one for both stacks: packet number K (counting
from 0) of those the server sends with a payload, dropped in the client
namespace's input hook (nftables ``numgen inc``, the rule made afresh for
every run).  The exchange is the loss matrix's (benchmarks/loss_exchange.py:
the client uploads N bytes, the server answers their digest and N bytes),
with the matrix's delay, segments on the wire and fresh TCP metrics; the
figure is the download: from the server's digest to the last byte.

    specloop bench --loss-drop [--drop 10,30,80] [--delay 20] [--size 1]
                               [--runs 3] [--pin]

prints a markdown table: per place and stack the download's median time
(min-max over the runs), the server's retransmissions and RTOs per run.
``--drop=-1,30`` (with "="): -1 is a run without any drop.  As root; SPECLOOP_LAB
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
def drop_one(k: int) -> Iterator[dict[str, int]]:
    """Drops packet number ``k`` (from 0) of the server's packets with a
    payload, in the client namespace's input hook, while the body runs;
    yields a dict that gets, on exit, how many such packets the rule saw
    (``seen``) and dropped (``dropped``)."""
    if not isinstance(k, int) or k < 0:
        raise ValueError(f"drop_one: k={k!r}: must be an integer >= 0")
    t = DROP_TABLE
    text = "\n".join([
        f"add table inet {t}",
        f"add counter inet {t} seen",
        f"add counter inet {t} dropped",
        f"add chain inet {t} c {{ type filter hook input priority 0 ; }}",
        f"add rule inet {t} c ip saddr {netlab.SERVER_IP} meta l4proto tcp "
        f"meta length > {PAYLOAD_OVER} counter name seen "
        f"numgen inc mod {1 << 30} {k} counter name dropped drop",
    ]) + "\n"
    delete = netlab.in_ns(netlab.CLIENT_NS, "nft", "delete", "table", "inet", t)
    subprocess.run(delete, capture_output=True)
    p = subprocess.run(netlab.in_ns(netlab.CLIENT_NS, "nft", "-f", "-"), input=text, text=True,
                       capture_output=True)
    if p.returncode:
        raise RuntimeError(f"drop_one: nft in {netlab.CLIENT_NS}: {p.stderr.strip()}")
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


def run_drop(k: int, stack: str, size: int, limit: float, cc: str,
             pin: bool = False) -> dict[str, Any]:
    """One exchange against ``stack`` with packet ``k`` dropped (-1: none);
    ``pin``: the server on one CPU, the client on the other."""
    if k < 0:
        rec = run_once(stack, size, limit, cc, pin=pin)
        rec["drop"] = {"k": k, "seen": 0, "dropped": 0}
    else:
        with drop_one(k) as counts:
            rec = run_once(stack, size, limit, cc, pin=pin)
        rec["drop"] = {"k": k, **counts}
    rec["download_s"] = download_s(rec)
    return rec


def measure(drops: Sequence[int], runs: int, size: int, limit: float,
            cc: str, pin: bool = False) -> list[dict[str, Any]]:
    """Every place of ``drops``, ``runs`` runs per stack, alternating."""
    out = []
    for k in drops:
        by_stack: dict[str, list] = {s: [] for s in STACKS}
        for i in range(runs):
            for stack in (STACKS if i % 2 == 0 else STACKS[::-1]):
                rec = run_drop(k, stack, size, limit, cc, pin)
                by_stack[stack].append(rec)
                print(f"   drop {k} run {i} {stack:8s}: {rec['status']} download "
                      f"{rec['download_s'] or 0:.3f} s retransmits {rec.get('retransmits')} "
                      f"rto {rec.get('rto')} dropped {rec['drop'].get('dropped')}",
                      file=sys.stderr, flush=True)
        out.append({"k": k, "runs": by_stack})
    return out


def markdown(results: list[dict[str, Any]], delay_ms: float, size_mib: int,
             pin: bool = False) -> str:
    lines = [f"One packet dropped, {size_mib} MiB each way, {delay_ms:g} ms added delay"
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
        place = "none" if r["k"] < 0 else f"packet {r['k']}"
        lines.append(f"| {place} | {cells[0]} | {cells[1]} | {ratio:.2f}× | "
                     f"{' / '.join(rtx)} | {' / '.join(rto)} | {', '.join(ok)} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="specloop bench --loss-drop",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--drop", default="10,30,80",
                   help="places: packet numbers from 0 of the server's packets with payload, "
                        "-1 for none (default 10,30,80)")
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
        drops = [int(x) for x in args.drop.split(",")]
    except ValueError:
        p.error(f"--drop {args.drop!r}: integers separated by commas")
    if any(k < -1 for k in drops) or args.runs < 1 or args.size < 1:
        p.error("--drop takes -1 or more, --runs and --size 1 or more")
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
