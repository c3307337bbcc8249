"""Overlay benchmark: throughput of every backend next to its reference, and convergence.

Not a test: it prints figures, all measured in this one run, on the light lab (network
namespaces; nothing is routed from the root namespace). Run it as root, alone (the boxes
have 2 cores; anything else running skews every figure), from the checkout:

    .venv/bin/python -m bench.overlay_bench [--only throughput|convergence] [--seconds 5] [--runs 3]

Throughput (iperf3 TCP, container on h1 -> container on h2, -t <seconds>, <runs> runs each,
median and every run reported), one fresh 2-host lab per group:

  vxlan lab    rounds of: vxlan (the real agents); the same flannel.1 with the agents stopped
               by SIGTERM (info: the path without the agents' CPU); a hand-made kernel VXLAN of the
               same structure as flannel's: agents stopped with SIGTERM (which leaves the
               data plane), flannel.1 deleted on both hosts, a vxlan device created with
               `ip` (same VNI, port, MTU, MAC, local address, learning off), the lease
               network /32 on it, a permanent neighbour, an FDB entry and an onlink route
               per peer. Between rounds the hand-made device is deleted and the agents are
               started again (they recreate flannel.1). --sequential: all vxlan runs first.
  host-gw lab  rounds of: host-gw (the real agents); the underlay veth (info: host to host
               on the underlay addresses, which no container path can reach); host-gw routes
               set by hand (the reference: agents stopped, each agent route replaced by
               `ip route add <peer subnet> via <peer PublicIP> dev eth0`, the same container
               path with no agent); then, agents stopped (info): host -> container and
               container -> host (the cost of one container hop).
  udp lab      each of --udp-modes with freshly started agents: fast (GSO super-packets
               between our agents), mixed (sender fast path, receiver --udp-fast-path=false
               like upstream flanneld: the sender segments in userspace), plain (flannel's
               per-packet format end to end), underlay (host to host, reference); the
               forwarders' counters per mode (splits, segmented, largest read, converted).

Convergence (3 hosts running the agent, vxlan; see bench/convergence.py): a fake lease put
in etcd -> its route on every host, p50/p99 (nearest rank) over <joins> joins after one
warm-up join.

Targets: vxlan >= 95 % of the hand-made VXLAN; host-gw >= 97 % of host-gw routes by hand; udp fast
path >= 2.5 Gbit/s; udp per-packet >= 0.5 Gbit/s; convergence p99 < 250 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from lab import netns

from .convergence import bench_convergence
from .measure import Bench, loadavg, log
from .report import TARGETS, build_table, note_results, print_table
from .throughput import UDP_MODES, bench_hostgw, bench_udp, bench_vxlan

GROUPS = {"vxlan": bench_vxlan, "host-gw": bench_hostgw, "udp": bench_udp}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.overlay_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["throughput", "convergence"], help="run one part only")
    parser.add_argument("--backends", default="vxlan,host-gw,udp",
                        help="throughput groups, comma separated (vxlan,host-gw,udp); default all")
    parser.add_argument("--udp-modes", default="fast,plain",
                        help="udp group: fast, mixed, plain, underlay, comma separated (default fast,plain)")
    parser.add_argument("--seconds", type=int, default=5, help="iperf3 -t (default 5)")
    parser.add_argument("--runs", type=int, default=3, help="iperf3 runs per figure (default 3)")
    parser.add_argument("--joins", type=int, default=20, help="convergence joins measured (default 20)")
    parser.add_argument("--sequential", action="store_true",
                        help="vxlan: all agent runs, then all hand-made runs (default: alternated)")
    parser.add_argument("--prefix", default="oflbn-", help="namespace prefix of the bench's labs")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")
    parser.add_argument("--json-file", help="also write the JSON results to this file")
    parser.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                        help="first wait up to SECONDS for the 1-minute load average to drop below "
                             "--idle-load (default 0: do not wait)")
    parser.add_argument("--idle-load", type=float, default=0.5)
    parser.add_argument("--keep-logs", action="store_true", help="keep the work dir (agent logs) on success")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.seconds < 1 or args.joins < 1:
        parser.error("--runs, --seconds and --joins must be at least 1")
    args.backends = [x.strip() for x in args.backends.split(",") if x.strip()]
    unknown = set(args.backends) - set(GROUPS)
    if unknown:
        parser.error(f"unknown --backends {sorted(unknown)}; use vxlan, host-gw, udp")
    bad = {x.strip() for x in args.udp_modes.split(",") if x.strip()} - {*UDP_MODES, "underlay"}
    if bad:
        parser.error(f"unknown --udp-modes {sorted(bad)}; use fast, mixed, plain, underlay")
    return args


def wait_idle(args: argparse.Namespace) -> None:
    deadline = time.monotonic() + args.wait_idle
    while args.wait_idle > 0 and loadavg() >= args.idle_load and time.monotonic() < deadline:
        log(f"waiting for the box to calm down: load average {loadavg()} (>= {args.idle_load})")
        time.sleep(10)


def start_meta(b: Bench) -> dict[str, Any]:
    """What the run ran on; notes when the box is busy or other labs exist."""
    args = b.args
    others = sorted(ns for ns in netns.list_netns() if not ns.startswith(args.prefix))
    meta: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"), "kernel": platform.release(), "cpus": os.cpu_count(),
        "load_before": loadavg(), "seconds": args.seconds, "runs": args.runs, "joins": args.joins,
        "vxlan_order": "sequential" if args.sequential else "alternated", "workdir": str(b.workdir),
        "other_namespaces": others,
    }
    if meta["load_before"] > 0.5:
        b.note(f"load average {meta['load_before']} before the run: the box is busy, throughput will be low/noisy")
    if others:
        b.note(f"{len(others)} network namespaces of others exist while this runs "
               f"({', '.join(others[:8])}{' ...' if len(others) > 8 else ''}): other labs may be running")
    return meta


def run_groups(b: Bench) -> dict[str, Any]:
    """Every selected group; on a failure, what was measured so far (and b.failed)."""
    res: dict[str, Any] = {}
    try:
        if b.args.only in (None, "throughput"):
            for name, group in GROUPS.items():  # in this order, whatever the order given
                if name in b.args.backends:
                    res.update(group(b))
        if b.args.only in (None, "convergence"):
            res["convergence"] = bench_convergence(b)
    except BaseException as exc:  # noqa: BLE001 - report what was measured, then fail
        b.failed = True
        b.note(f"ABORTED: {type(exc).__name__}: {exc}")
        for path in sorted(b.logs.rglob("*.log")):
            text = path.read_text(errors="replace").strip().splitlines()
            if text:
                log(f"--- last lines of {path}:\n" + "\n".join(text[-15:]))
    return res


def output(b: Bench, meta: dict[str, Any], res: dict[str, Any]) -> None:
    args = b.args
    rows = build_table(res)
    doc = {"meta": meta, "results": res, "table": rows, "notes": b.notes, "targets": TARGETS, "failed": b.failed}
    if args.json_file:
        Path(args.json_file).write_text(json.dumps(doc, indent=2) + "\n")
    if args.json:
        print(json.dumps(doc, indent=2))
        return
    print()
    print(f"overlaynet.flannel overlay bench - iperf3 TCP container -> container, -t {args.seconds} x "
          f"{args.runs} runs (median), {meta['cpus']} CPUs, kernel {meta['kernel']}, load "
          f"{meta['load_before']} -> {meta['load_after']}, {meta['elapsed_s']} s")
    print_table(rows, sys.stdout)
    if b.notes:
        print("notes:")
        for n in b.notes:
            print(f"  - {n}")


def on_term(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (network namespaces, TUN and VXLAN devices)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, on_term)
    wait_idle(args)
    b = Bench(args)
    meta = start_meta(b)
    log(f"work dir {b.workdir}; load average {meta['load_before']}")
    started = time.monotonic()
    res = run_groups(b)
    meta["load_after"] = loadavg()
    meta["elapsed_s"] = round(time.monotonic() - started, 1)
    note_results(b, res)
    output(b, meta, res)
    if b.failed or args.keep_logs:
        log(f"logs kept in {b.workdir}")
    else:
        shutil.rmtree(b.workdir, ignore_errors=True)
    return 1 if b.failed else 0


if __name__ == "__main__":
    sys.exit(main())
