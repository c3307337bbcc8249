"""The control plane at 2,000 hosts (issue 10): simulated hosts acquiring leases at once
against one real etcd through the engine's acquire path, the same hosts renewing, and
flannel_lease through ansible-playbook on many local hosts.

    .venv/bin/python -m bench.lease_race --hosts 2000 --runs 3 [--workers 4] [--capacity 200] \
        [--playbook-hosts 200 --forks 50] [--renew-hosts 50 --renew-cycles 3] [--json F]

Figures (medians over the runs; every run uses a fresh prefix on one etcd on 127.0.0.1):
  race        N hosts (distinct PublicIPs and host ids), in --workers processes of threads
              released by one barrier, in a network far larger than N (10.0.0.0/8, /24s):
              total time (first start -> last lease), p50/p99 per acquisition, lost races
              retried (AcquireResult.races_lost, summed), duplicates (read back from etcd:
              any PublicIP under two keys, overlapping subnets, a key nobody reported, a host
              whose key holds another PublicIP) -- target 0 duplicates, total < 60 s
  full        N hosts racing for a network of --capacity subnets (a /16 of /24s with
              SubnetMax lowered): exactly capacity leases, the others the engine's "network
              full" error; any other error fails the bench
  playbook    flannel_lease through ansible-playbook on --playbook-hosts local hosts with
              --forks (bench/lease_playbook.py): wall time, 0 duplicates
  renew       --renew-hosts of the agent's lease keepers renewing in scaled time
              (bench/lease_renew.py): etcd requests per host and day at the default TTL and
              margin, next to flanneld's one renewal a day, and per second at --hosts hosts
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
from collections.abc import Callable
from typing import Any

from lab.engine import link_collection

link_collection()

from ansible_collections.overlaynet.flannel.plugins.module_utils.etcd.connection import (  # noqa: E402
    EtcdConnection,
    EtcdSettings,
)
from ansible_collections.overlaynet.flannel.plugins.module_utils.etcd.registry import LeaseRegistry  # noqa: E402
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.config import NetworkConfig  # noqa: E402
from bench.lease_check import check_store, stored_leases  # noqa: E402
from bench.lease_playbook import playbook_ok, run_playbook_hosts  # noqa: E402
from bench.lease_renew import renew_cost, renew_ok, renew_table  # noqa: E402
from bench.measure import log  # noqa: E402
from bench.race_hosts import attrs_of, run_worker  # noqa: E402
from lab.etcd import Cluster  # noqa: E402

TARGET_TOTAL_S = 60.0
BIG = {"Network": "10.0.0.0/8", "SubnetLen": 24, "Backend": {"Type": "vxlan"}}


def small_network(capacity: int) -> dict[str, Any]:
    """A /16 of /24s holding exactly *capacity* subnets (SubnetMin 10.0.1.0, the default)."""
    if not 1 <= capacity <= 255:
        raise SystemExit(f"--capacity {capacity}: a /16 of /24s holds 1 to 255 subnets")
    return {"Network": "10.0.0.0/16", "SubnetLen": 24, "SubnetMax": f"10.0.{capacity}.0", "Backend": {"Type": "vxlan"}}


def write_config(endpoint: str, prefix: str, doc: dict[str, Any]) -> int:
    """The network config, written through the engine; its capacity (subnets it holds)."""
    registry = LeaseRegistry(EtcdConnection(EtcdSettings(endpoints=(endpoint,))), prefix)
    try:
        config = NetworkConfig.from_dict(doc)
        if not registry.put_config(config, 0):
            raise SystemExit(f"{prefix}/config exists already; every run needs a fresh prefix")
        return config.network_range.count
    finally:
        registry.conn.close()


def race(endpoint: str, prefix: str, hosts: int, workers: int) -> list[dict[str, Any]]:
    """Every host's outcome: *hosts* hosts in *workers* spawned processes, one barrier."""
    ctx = multiprocessing.get_context("spawn")  # gRPC channels do not survive fork
    barrier = ctx.Barrier(workers)
    results = ctx.Queue()
    procs = [ctx.Process(target=run_worker, args=(endpoint, prefix, list(range(w, hosts, workers)), barrier, results))
             for w in range(workers)]
    for proc in procs:
        proc.start()
    outcomes: list[dict[str, Any]] = []
    try:
        for _ in procs:
            outcomes += results.get(timeout=600)
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()  # our own child, by its handle (PID)
    return outcomes


def nearest_rank(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, -(-len(ordered) * pct // 100) - 1))] if ordered else 0.0


def summarize(outcomes: list[dict[str, Any]], stored: dict[str, str]) -> dict[str, Any]:
    """One run's figures; the store is checked against what every host reported."""
    got = [o for o in outcomes if o["key"] is not None]
    reported = {attrs_of(o["index"]).public_ip: o["key"] for o in got}
    check = check_store(stored, reported)
    times = [(o["t1"] - o["t0"]) * 1000 for o in got]
    return {
        "hosts": len(outcomes), "leases": check.leases, "duplicates": len(check.duplicates),
        "problems": check.duplicates[:10], "full": sum(o["full"] is not None for o in outcomes),
        "errors": [o["error"] for o in outcomes if o["error"] is not None][:10],
        "error_count": sum(o["error"] is not None for o in outcomes),
        "total_s": round(max(o["t1"] for o in outcomes) - min(o["t0"] for o in outcomes), 3),
        "p50_ms": round(nearest_rank(times, 50), 1), "p99_ms": round(nearest_rank(times, 99), 1),
        "races_lost": sum(o["races_lost"] for o in got),
        "max_races_lost": max((o["races_lost"] for o in got), default=0),
        "full_message": next((o["full"] for o in outcomes if o["full"] is not None), None),
    }


def one_run(server: Cluster, prefix: str, doc: dict[str, Any], hosts: int, workers: int) -> dict[str, Any]:
    capacity = write_config(server.endpoint, prefix, doc)
    run = summarize(race(server.endpoint, prefix, hosts, workers), stored_leases(server.endpoint, prefix))
    run["capacity"] = capacity
    return run


def race_ok(run: dict[str, Any]) -> bool:
    return (run["duplicates"] == 0 and run["error_count"] == 0 and run["leases"] == run["hosts"]
            and run["total_s"] < TARGET_TOTAL_S)


def full_ok(run: dict[str, Any]) -> bool:
    expected = min(run["capacity"], run["hosts"])
    return (run["duplicates"] == 0 and run["error_count"] == 0 and run["leases"] == expected
            and run["full"] == run["hosts"] - expected)


def median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(run[key] for run in runs))


def table(name: str, runs: list[dict[str, Any]], ok: Callable[[dict[str, Any]], bool]) -> list[str]:
    """The scenario's lines: the medians, every run, and PASS/FAIL per run."""
    verdict = "PASS" if all(ok(run) for run in runs) else "FAIL"
    lines = [f"{name}: {runs[0]['hosts']} hosts, capacity {runs[0]['capacity']} -- {verdict}"]
    for key, unit, target in (("total_s", "s", f"< {TARGET_TOTAL_S:g} s" if name == "race" else "info"),
                              ("p50_ms", "ms", "info"), ("p99_ms", "ms", "info"), ("races_lost", "", "info"),
                              ("max_races_lost", "", "info"), ("leases", "", "= hosts" if name == "race" else
                                                               "= capacity"),
                              ("full", "", "0" if name == "race" else "= hosts - capacity"),
                              ("duplicates", "", "0"), ("error_count", "", "0")):
        each = ", ".join(f"{run[key]:g}" for run in runs)
        lines.append(f"  {key:<15} median {median(runs, key):>9g} {unit:<2}  target {target:<20} runs: {each}")
    for run in runs:
        lines += [f"  problem: {p}" for p in run["problems"]] + [f"  error: {e}" for e in run["errors"]]
    if runs[0]["full_message"]:
        lines.append(f"  the hosts left out were told: {runs[0]['full_message']}")
    return lines


def scenarios(server: Cluster, args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {"race": [], "full": [], "playbook": [], "renew": []}
    for i in range(args.runs):
        log(f"run {i + 1}/{args.runs}: {args.hosts} hosts racing")
        found["race"].append(one_run(server, f"/oflcp/race{i}", BIG, args.hosts, args.workers))
        log(f"run {i + 1}/{args.runs}: {args.hosts} hosts for {args.capacity} subnets")
        found["full"].append(one_run(server, f"/oflcp/full{i}", small_network(args.capacity), args.hosts,
                                     args.workers))
        if args.playbook_hosts:
            log(f"run {i + 1}/{args.runs}: flannel_lease on {args.playbook_hosts} hosts, forks {args.forks}")
            prefix = f"/oflcp/play{i}"
            write_config(server.endpoint, prefix, BIG)
            found["playbook"].append(run_playbook_hosts(server.endpoint, prefix, args.playbook_hosts, args.forks))
        if args.renew_hosts:
            log(f"run {i + 1}/{args.runs}: {args.renew_hosts} lease keepers renewing for {args.renew_cycles} cycles")
            prefix = f"/oflcp/renew{i}"
            write_config(server.endpoint, prefix, BIG)
            found["renew"].append(renew_cost(server, prefix, args.renew_hosts, args.renew_cycles, args.hosts))
    return found


def playbook_table(runs: list[dict[str, Any]]) -> list[str]:
    if not runs:
        return []
    verdict = "PASS" if all(playbook_ok(run) for run in runs) else "FAIL"
    lines = [f"playbook: flannel_lease on {runs[0]['hosts']} local hosts, forks {runs[0]['forks']} -- {verdict}"]
    for key, target in (("wall_s", "info (s)"), ("leases", "= hosts"), ("duplicates", "0"),
                        ("missing_subnet_files", "0")):
        each = ", ".join(f"{run[key]:g}" for run in runs)
        lines.append(f"  {key:<20} median {median(runs, key):>9g}  target {target:<10} runs: {each}")
    for run in runs:
        lines += [f"  problem: {p}" for p in run["problems"]]
        if run["output_tail"]:
            lines.append(f"  ansible-playbook rc={run['rc']}:\n{run['output_tail']}")
    return lines


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.lease_race", description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4, help="processes the hosts are spread over")
    parser.add_argument("--capacity", type=int, default=200, help="subnets of the 'full' scenario's network")
    parser.add_argument("--playbook-hosts", type=int, default=200, help="0: skip the playbook scenario")
    parser.add_argument("--forks", type=int, default=50)
    parser.add_argument("--renew-hosts", type=int, default=50,
                        help="lease keepers of the 'renew' scenario, in one thread (200 miss the 2 s margin); 0: skip")
    parser.add_argument("--renew-cycles", type=int, default=3)
    parser.add_argument("--json", help="write every run's figures to this file")
    args = parser.parse_args(argv)
    if args.hosts < 1 or args.runs < 1 or args.workers < 1:
        parser.error("--hosts, --runs and --workers must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    server = Cluster.loopback().start()
    try:
        found = scenarios(server, args)
    finally:
        server.close()
    lines = (table("race", found["race"], race_ok) + table("full", found["full"], full_ok)
             + playbook_table(found["playbook"]) + renew_table(found["renew"]))
    print("\n".join(lines))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(found, handle, indent=1)
    return 0 if all_ok(found) else 1


def all_ok(found: dict[str, list[dict[str, Any]]]) -> bool:
    return (all(race_ok(r) for r in found["race"]) and all(full_ok(r) for r in found["full"])
            and all(playbook_ok(r) for r in found["playbook"]) and all(renew_ok(r) for r in found["renew"]))


if __name__ == "__main__":
    sys.exit(main())
