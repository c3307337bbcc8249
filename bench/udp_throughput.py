#!/usr/bin/env python3
"""Throughput of the udp backend, container to container across two namespace hosts.

Not a test: it prints figures. Run it as root, alone (the boxes have 2 cores; anything else
running skews every number), from the checkout:

    .venv/bin/python bench/udp_throughput.py [--seconds 10] [--runs 3]

Modes (each with freshly started agents, iperf3 -t <seconds>, median of <runs>):
  fast    both agents with the GSO fast path (vnet-header TUN, super-packets on the wire)
  mixed   sender with the fast path, receiver in plain mode (like upstream flanneld): the
          sender segments super-packets in userspace into flannel's per-packet format
  plain   both agents in plain mode: flannel's per-packet format end to end, no vnet header
  underlay  host to host over the underlay veth, no overlay (reference)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "integration" / "backends"))
sys.path.insert(0, str(REPO / "tests"))  # udp_lab imports support.*

from udp_lab import Lab, container_ip, underlay_ip  # noqa: E402

import tests.conftest  # noqa: E402,F401  (links build/collections/ansible_collections/overlaynet/flannel)

MODES = {"fast": (False, False), "mixed": (False, True), "plain": (True, True)}  # (h1 plain, h2 plain)


def iperf(lab: Lab, src_ns: str, dst_ns: str, dst_ip: str, seconds: int, reverse: bool = False) -> dict:
    server = lab.popen(dst_ns, "iperf3", "-s", "-1", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):
            argv = ["iperf3", "-c", dst_ip, "-t", str(seconds), "-J"] + (["-R"] if reverse else [])
            out = lab.run(src_ns, *argv, check=False, timeout=seconds + 60)
            if "unable to connect" not in out.stdout:
                break
            time.sleep(0.1)
        result = json.loads(out.stdout)
        if "error" in result:
            raise RuntimeError(result["error"])
        return result
    finally:
        if server.poll() is None:
            server.kill()
        server.wait(5)


def summary(result: dict) -> tuple[float, int]:
    end = result["end"]
    return end["sum_received"]["bits_per_second"] / 1e9, int(end["sum_sent"].get("retransmits") or 0)


def run_mode(lab: Lab, mode: str, seconds: int, runs: int, reverse: bool) -> dict:
    plain1, plain2 = MODES[mode]
    a1 = lab.start_agent(1, plain=plain1)
    a2 = lab.start_agent(2, plain=plain2)
    try:
        a1.command("reconcile", peers=[a1.peer(2, not plain2)])
        a2.command("reconcile", peers=[a2.peer(1, not plain1)])
        if not lab.ping(1, container_ip(2)):
            raise RuntimeError(f"{mode}: containers cannot reach each other")
        figures = []
        for _ in range(runs):
            figures.append(summary(iperf(lab, lab.c(1), lab.c(2), container_ip(2), seconds, reverse)))
        s1, s2 = a1.stats(), a2.stats()
        tx, rx = (s2, s1) if reverse else (s1, s2)
        return {
            "gbits": [round(g, 3) for g, _ in figures],
            "median": statistics.median(g for g, _ in figures),
            "retransmits": [r for _, r in figures],
            "sender_splits": tx["tx_split"],
            "sender_segmented": tx["tx_segmented"],
            "largest_read": tx["max_read"],
            "receiver_converted": rx["rx_converted"],
        }
    finally:
        for agent in (a1, a2):
            agent.stop()
        lab.agents.clear()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--modes", default="fast,mixed,plain,underlay")
    parser.add_argument("--underlay-mtu", type=int, default=1500)
    parser.add_argument("--reverse", action="store_true", help="data from container 2 to container 1 (-R)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces, TUN devices)", file=sys.stderr)
        return 2
    load = os.getloadavg()[0]
    print(f"load average before: {load:.2f}{'  (busy box: figures will be low)' if load > 0.5 else ''}")
    lab = Lab(hosts=2, underlay_mtu=args.underlay_mtu)
    results: dict[str, dict] = {}
    try:
        lab.build()
        for mode in args.modes.split(","):
            if mode == "underlay":
                figures = [summary(iperf(lab, lab.h(1), lab.h(2), underlay_ip(2), args.seconds))
                           for _ in range(args.runs)]
                results[mode] = {"gbits": [round(g, 3) for g, _ in figures],
                                 "median": statistics.median(g for g, _ in figures),
                                 "retransmits": [r for _, r in figures]}
            else:
                results[mode] = run_mode(lab, mode, args.seconds, args.runs, args.reverse)
            r = results[mode]
            extra = {k: v for k, v in r.items() if k not in ("gbits", "median", "retransmits")}
            print(f"{mode:9s} median {r['median']:6.2f} Gbit/s  runs {r['gbits']}  retransmits {r['retransmits']}"
                  + (f"  {extra}" if extra else ""), flush=True)
    finally:
        lab.destroy()
    print()
    print(f"iperf3 container -> container, {args.seconds} s x {args.runs}, underlay MTU {args.underlay_mtu}, "
          f"{os.cpu_count()} CPUs, load average now {os.getloadavg()[0]:.2f}")
    for mode, r in results.items():
        print(f"  {mode:9s} {r['median']:6.2f} Gbit/s")
    base = results.get("plain") or results.get("mixed")
    if "fast" in results and base:
        for other in ("mixed", "plain"):
            if other in results and results[other]["median"]:
                print(f"  fast / {other}: {results['fast']['median'] / results[other]['median']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
