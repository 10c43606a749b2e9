"""The ``specloop`` command: lab, doctor, demo, bench."""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Sequence

from . import doctor, netlab

__all__ = ["main"]


def _cmd_lab(args: argparse.Namespace) -> int:
    if args.action == "up":
        lab = netlab.up(queues=args.queues, mtu=args.mtu)
        print(f"lab up: {lab.server_ns}/{lab.server_if} {lab.server_ip}/{netlab.PREFIX} "
              f"<-> {lab.client_ns}/{lab.client_if} {lab.client_ip}/{netlab.PREFIX} "
              f"(queues {lab.queues}, mtu {lab.mtu})")
        return 0
    if args.action == "down":
        netlab.down()
        print("lab down")
        return 0
    st = netlab.status()
    if args.json:
        print(json.dumps(st, indent=2))
    else:
        print("lab is " + ("up" if st["up"] else "down or incomplete"))
        for ns, info in st["namespaces"].items():  # type: ignore[union-attr]
            if info is None:
                print(f"  {ns}: missing")
            elif info["link"] is None:
                print(f"  {ns}: no link")
            else:
                link = info["link"]
                print(f"  {ns}: {link['name']} {link['state']} {','.join(link['addresses'])} "
                      f"mac {link['mac']} mtu {link['mtu']} queues {link['queues']} "
                      f"xdp {'attached' if link['xdp_attached'] else 'none'}")
    return 0 if st["up"] else 1


def _cmd_doctor(args: argparse.Namespace) -> int:
    def run() -> list[doctor.Finding]:
        return doctor.diagnose(args.interface)

    if args.netns:
        with netlab.inside(args.netns):
            findings = run()
    else:
        findings = run()
    width = max(len(f.name) for f in findings)
    for f in findings:
        mark = {"ok": "ok     ", "warn": "warn   ", "missing": "MISSING"}[f.status]
        line = f"{mark} {f.name:<{width}}  {f.detail}"
        if f.fix and f.status != "ok":
            line += f"\n        {'':<{width}}  fix: {f.fix}"
        print(line)
    missing = [f for f in findings if f.status == "missing"]
    if missing:
        print(f"\n{len(missing)} missing: the bypass cannot run here until fixed.")
        return 1
    print("\neverything the bypass needs is here.")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from . import demo
    return demo.main(requests=args.requests)


def _cmd_bench(args: argparse.Namespace) -> int:
    # the suite lives in the checkout's benchmarks/, beside the package
    root = pathlib.Path(__file__).resolve().parent.parent
    if not (root / "benchmarks" / "suite.py").exists():
        print("specloop bench: benchmarks/ not found next to the specloop package "
              "(run it from a checkout: make bench)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(root))
    # the studies beside the suite, each a module of benchmarks/ with main(argv)
    studies = {"--bound": "bound", "--mixed": "mixed", "--loss-matrix": "loss_matrix",
               "--loss-drop": "loss_drop"}
    if args.rest and args.rest[0] in studies:
        import importlib
        study = importlib.import_module(f"benchmarks.{studies[args.rest[0]]}")
        return int(study.main(args.rest[1:]))
    from benchmarks import suite  # type: ignore[import-not-found]
    return int(suite.main(args.rest))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="specloop", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    lab = sub.add_parser("lab", help="the slsrv/slcli namespace lab")
    lab.add_argument("action", choices=("up", "down", "status"))
    lab.add_argument("--queues", type=int, default=1, help="veth queues (default 1)")
    lab.add_argument("--mtu", type=int, default=1500)
    lab.add_argument("--json", action="store_true", help="status as JSON")
    lab.set_defaults(func=_cmd_lab)

    doc = sub.add_parser("doctor", help="check what the bypass needs")
    doc.add_argument("--interface", "-i", help="also check this interface and XDP attach")
    doc.add_argument("--netns", help="run the checks inside this network namespace")
    doc.set_defaults(func=_cmd_doctor)

    demo = sub.add_parser("demo", help="serve aiohttp over the bypass in the lab")
    demo.add_argument("--requests", type=int, default=200)
    demo.set_defaults(func=_cmd_demo)

    bench = sub.add_parser("bench", help="the benchmark suite (see benchmarks/)",
                           add_help=False)
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    bench.set_defaults(func=_cmd_bench)

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        # everything after "bench" is the suite's own (its --help too)
        return _cmd_bench(argparse.Namespace(rest=argv[1:]))
    args = p.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
