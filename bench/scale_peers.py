"""The agent at thousands of peers (issue 10): N peer leases written straight into etcd,
one agent started in a namespace, each figure next to its target.

    sudo .venv/bin/python -m bench.scale_peers --peers 5000 --runs 3 [--backend vxlan,host-gw,udp]

Figures (medians over the runs; every run builds its own rig):
  start -> all routed    agent start until every peer's route (+ neighbour + FDB for vxlan)
                         is in the kernel; also as a ratio to `ip -batch`/`bridge -batch`
                         writing the same objects in a fresh namespace, in the same run.
                         udp: until every peer is in the forwarder's peer table (the kernel
                         has one route for the network; no `ip -batch` reference)
  RSS                    the agent's resident memory with every peer programmed
  CPU at rest            the agent's CPU share with nothing changing, in % of one core, over
                         --rest-seconds (default two FULL_ROUND_EVERY windows: a check every
                         2 s, the default interval, which is a full repair round only when
                         the kernel notified a change or FULL_ROUND_EVERY has passed)
  route deleted -> back  one peer route deleted by hand until the repair puts it back (udp:
                         the network's route via flannel0)
  500 deleted -> gone    500 leases deleted (5 etcd txns) until their objects are all gone
  50 added -> routed     50 leases added one after the other; per lease, put -> route (the
                         route is written last, after neighbour and FDB; udp: put -> in the
                         peer table); p99
"""

from __future__ import annotations

import argparse
import io
import json
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from lab.engine import link_collection

link_collection()

from ansible_collections.overlaynet.flannel.plugins.module_utils.host import rtnl  # noqa: E402
from ansible_collections.overlaynet.flannel.plugins.module_utils.host.kernel_changes import FULL_ROUND_EVERY  # noqa: E402
from bench.measure import log  # noqa: E402
from bench.scale_lab import AGENT_OFFSET, NETWORK, RouteWatch, ScaleLab, TableWatch, mac_of, peer  # noqa: E402
from lab import netns  # noqa: E402

REST_S = 2 * FULL_ROUND_EVERY  # seconds: the CPU at rest includes the full rounds that run unnotified
TARGETS = {"start_s": 10.0, "start_ratio": 3.0, "rss_mb": 150.0, "cpu_pct": 5.0, "repair_s": 10.0,
           "delete_s": 5.0, "add_p99_ms": 250.0}
DELETED, ADDED = 500, 50


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> float:
    """Monotonic time when check() first held."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout:.0f} s")
        time.sleep(interval)
    return time.monotonic()


def reference_s(lab: ScaleLab, peers: int) -> float | None:
    """`ip -batch` (+ `bridge -batch` for vxlan) writing the same objects in a fresh namespace;
    None for udp, whose peers are no kernel objects."""
    if lab.backend == "udp":
        return None
    ns = lab.rig.namespace("ref")
    netns.ip(ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
    netns.ip(ns, "addr", "add", f"{lab.rig.address(AGENT_OFFSET)}/16", "dev", "eth0")
    for dev in ("eth0", "eth0p"):
        netns.ip(ns, "link", "set", dev, "up")
    ip_lines, bridge_lines = [], []
    if lab.backend == "vxlan":
        netns.ip(ns, "link", "add", "flannel.1", "type", "vxlan", "id", "1", "local", lab.rig.address(AGENT_OFFSET),
                 "dev", "eth0", "dstport", "8472", "nolearning")
        netns.ip(ns, "link", "set", "flannel.1", "up")
    for i in range(1, peers + 1):
        subnet, public_ip, _value = peer(i, lab.backend)
        gateway = subnet.split("/")[0]
        if lab.backend == "vxlan":
            ip_lines.append(f"neigh replace {gateway} lladdr {mac_of(i)} dev flannel.1 nud permanent")
            bridge_lines.append(f"fdb replace {mac_of(i)} dev flannel.1 dst {public_ip} self permanent")
            ip_lines.append(f"route replace {subnet} via {gateway} dev flannel.1 onlink proto 70")
        else:
            ip_lines.append(f"route replace {subnet} via {public_ip} dev eth0 proto 70")
    t0 = time.monotonic()
    if bridge_lines:
        netns.run_argv(["bridge", "-n", ns, "-batch", "-"], stdin="\n".join(bridge_lines) + "\n", timeout=300)
    netns.run_argv(["ip", "-n", ns, "-batch", "-"], stdin="\n".join(ip_lines) + "\n", timeout=300)
    return time.monotonic() - t0


def one_run(lab: ScaleLab, peers: int, run: dict[str, float], rest_s: float = REST_S) -> None:
    """The figures of one run into `run` (what was measured stays there when one fails)."""
    every = range(1, peers + 1)
    ref = reference_s(lab, peers)
    if ref is not None:
        run["ref_s"] = ref
    lab.put_config()
    lab.put_peers(every)
    t0 = lab.start_agent()
    done = wait_until(lambda: lab.programmed(every)[0] == peers, 600, f"{peers} peers programmed", 0.25)
    run["start_s"] = done - t0
    time.sleep(3)  # the last peer's log lines, the first repair rounds
    run["rss_mb"] = lab.rss_mb()
    cpu0, w0 = lab.cpu_seconds(), time.monotonic()
    time.sleep(rest_s)
    run["cpu_pct"] = (lab.cpu_seconds() - cpu0) / (time.monotonic() - w0) * 100
    victim = NETWORK if lab.backend == "udp" else peer(peers // 2, lab.backend)[0]
    lab.rt.run([rtnl.route_delete(victim)])
    gone = time.monotonic()
    run["repair_s"] = wait_until(lambda: victim in lab.rt.routes(), 30, "the deleted route back", 0.1) - gone
    doomed = range(1, min(DELETED, peers // 10) + 1)
    t_del, _ = lab.delete_peers(doomed)
    run["delete_s"] = wait_until(lambda: lab.programmed(doomed)[1] == 0, 60, f"{len(doomed)} peers gone", 0.1) - t_del
    run["add_p99_ms"], run["add_p50_ms"] = add_latency(lab, peers)


def add_latency(lab: ScaleLab, peers: int) -> tuple[float, float]:
    """p99 and p50 (ms) of put -> route for ADDED leases added one by one."""
    watch: TableWatch | RouteWatch = TableWatch(lab.udp_table_file) if lab.backend == "udp" else RouteWatch(lab.ns)
    times = []
    try:
        for i in range(peers + 1, peers + ADDED + 1):
            subnet = peer(i, lab.backend)[0]
            t0, _ = lab.put_peers(range(i, i + 1))
            wait_until(lambda s=subnet: s in watch.seen, 30, f"peer {i} routed", 0.005)
            times.append((watch.seen[subnet] - t0) * 1000)
    finally:
        watch.close()
    added = range(peers + 1, peers + ADDED + 1)
    if lab.programmed(added)[0] != ADDED:
        raise RuntimeError("the added peers' routes are there but not all their neighbours/FDB entries")
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], statistics.median(ordered)


ROWS = [  # figure, key, unit, target key, "<=" target
    ("start -> all routed", "start_s", "s", "start_s"),
    ("  ip -batch reference", "ref_s", "s", None),
    ("  start / reference", "start_ratio", "x", "start_ratio"),
    ("agent RSS", "rss_mb", "MB", "rss_mb"),
    ("agent CPU at rest (check every 2 s, full round every 30 s)", "cpu_pct", "% core", "cpu_pct"),
    ("route deleted -> back", "repair_s", "s", "repair_s"),
    (f"{DELETED} (at most a tenth) deleted -> gone", "delete_s", "s", "delete_s"),
    (f"{ADDED} added -> routed p99", "add_p99_ms", "ms", "add_p99_ms"),
    (f"{ADDED} added -> routed p50", "add_p50_ms", "ms", None),
]


def table(backend: str, peers: int, runs: list[dict[str, float]]) -> list[str]:
    for run in runs:
        if "ref_s" in run:
            run["start_ratio"] = run["start_s"] / run["ref_s"]
    lines = [f"{backend}, {peers} peers, {len(runs)} run(s): median [runs]"]
    for figure, key, unit, target in ROWS:
        if not all(key in run for run in runs):
            lines.append(f"  {figure:38s} {'-':>9s} {unit:7s} (no kernel reference for udp's peer table)")
            continue
        value = statistics.median(run[key] for run in runs)
        goal = f"<= {TARGETS[target]:g} {unit}" if target else "(info)"
        verdict = ("PASS" if value <= TARGETS[target] else "FAIL") + f" ({value / TARGETS[target]:.2f} of target)" \
            if target else ""
        each = " ".join(f"{run[key]:.2f}" for run in runs)
        lines.append(f"  {figure:38s} {value:9.2f} {unit:7s} {goal:16s} {verdict:26s} [{each}]")
    return lines


def print_profile(path: Path, top: int = 25) -> None:
    """The agent's functions by cumulative and by own time (main thread: where start-up runs)."""
    if not path.exists():
        log(f"no profile at {path} (the agent did not exit cleanly)")
        return
    for order in ("cumulative", "tottime"):
        out = io.StringIO()
        pstats.Stats(str(path), stream=out).sort_stats(order).print_stats(top)
        print(f"--- agent profile ({path.name}), by {order} ---\n{out.getvalue()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", type=int, default=100, help="peer leases (issue 10: 5000; default 100, CI size)")
    parser.add_argument("--runs", type=int, default=1, help="runs per backend (medians are reported)")
    parser.add_argument("--backend", default="vxlan,host-gw,udp", help="comma separated: vxlan, host-gw, udp")
    parser.add_argument("--prefix", default="oflz-sp-", help="namespace prefix")
    parser.add_argument("--rest-seconds", type=float, default=REST_S,
                        help="the CPU-at-rest window (default: two full-round windows)")
    parser.add_argument("--json", help="write the runs here as JSON")
    parser.add_argument("--profile", metavar="DIR",
                        help="run each backend's first agent under cProfile; <DIR>/<backend>.prof, and its top "
                             "functions printed (a profiled agent is slower: its figures are not the benchmark's)")
    args = parser.parse_args(argv)
    results: dict[str, list[dict[str, float]]] = {}
    out: list[str] = []
    for backend in args.backend.split(","):
        results[backend] = []
        for n in range(1, args.runs + 1):
            log(f"{backend}: run {n}/{args.runs} with {args.peers} peers")
            profile = Path(args.profile) / f"{backend}.prof" if args.profile and n == 1 else None
            lab = ScaleLab(args.prefix, backend, profile)
            run: dict[str, float] = {}
            try:
                one_run(lab, args.peers, run, args.rest_seconds)
                results[backend].append(run)
            except BaseException:
                log(f"measured so far: {run}; agent log (tail):\n{lab.agent_log() if lab.agent else '-'}")
                raise
            finally:
                lab.close()
            log(f"  {json.dumps({k: round(v, 3) for k, v in results[backend][-1].items()})}")
            if profile is not None:
                print_profile(profile)
        out += table(backend, args.peers, results[backend])
    print("\n".join(out))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    failed = any("FAIL" in line for line in out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
