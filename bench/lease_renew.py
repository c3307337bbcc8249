"""What keeping leases costs etcd at steady state (issue 10): hosts' lease keepers (the
agent's own LeaseKeeper) run on their schedule against one real etcd, in scaled time.

A keeper looks at its lease's TTL when the renewal margin is reached and then renews it, so
its cost is a number of requests per cycle of TTL − margin, whatever the TTL. The bench runs
--hosts keepers with a TTL of a few seconds for --cycles cycles, reads etcd's own request
counter (grpc_server_msg_received_total) before and after, and scales the requests per host
and cycle to the defaults (--subnet-lease-ttl 24 h, --subnet-lease-renew-margin 60 min):
requests per host and day, and requests per second for --scale-to hosts.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from lab.engine import link_collection

link_collection()

from ansible_collections.overlaynet.flannel.plugins.module_utils.agent.lease_keeper import (  # noqa: E402
    RENEW_JOB,
    LeaseKeeper,
    LeaseLost,
)
from ansible_collections.overlaynet.flannel.plugins.module_utils.agent.scheduler import Scheduler  # noqa: E402
from ansible_collections.overlaynet.flannel.plugins.module_utils.defaults import (  # noqa: E402
    DEFAULT_LEASE_TTL,
    DEFAULT_RENEW_MARGIN_MINUTES,
)
from ansible_collections.overlaynet.flannel.plugins.module_utils.etcd.connection import (  # noqa: E402
    EtcdConnection,
    EtcdSettings,
)
from ansible_collections.overlaynet.flannel.plugins.module_utils.etcd.registry import LeaseRegistry  # noqa: E402
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.acquire import (  # noqa: E402
    AcquireRequest,
    acquire,
)
from bench.race_hosts import attrs_of  # noqa: E402
from lab.etcd import Cluster  # noqa: E402

TTL_S, MARGIN_S = 8, 2  # one cycle every 6 s
DEFAULT_CYCLE_S = DEFAULT_LEASE_TTL - DEFAULT_RENEW_MARGIN_MINUTES * 60  # the agent's defaults, as flanneld's
FLANNEL_PER_DAY = 1.0  # flanneld: one renewal per host and day, nothing in between


def renew_cost(server: Cluster, prefix: str, hosts: int, cycles: int, scale_to: int) -> dict[str, Any]:
    """Keepers of *hosts* leases (written through the engine's acquire) for *cycles* cycles."""
    registry = LeaseRegistry(EtcdConnection(EtcdSettings(endpoints=(server.endpoint,), timeout=10)), prefix)
    try:
        keepers: list[tuple[LeaseKeeper, Scheduler]] = []
        for index in range(hosts):
            attrs = attrs_of(index)
            # a long TTL while the others are set up; each keeper's first look renews it onto TTL_S
            own = acquire(registry, AcquireRequest(attrs, ttl=600)).lease
            scheduler = Scheduler()
            keeper = LeaseKeeper(registry, attrs, own, TTL_S, MARGIN_S, scheduler)
            scheduler.add(RENEW_JOB, keeper.renew, keeper.renew_every)
            keepers.append((keeper, scheduler))
        lost: list[str] = []
        keepers = run_keepers(keepers, lost)  # the first looks (onto TTL_S) are set-up, not steady state
        before, started = server.requests_received(), time.monotonic()
        while keepers and time.monotonic() - started < cycles * (TTL_S - MARGIN_S):
            keepers = run_keepers(keepers, lost)
            time.sleep(min((scheduler.wait(0.05) for _, scheduler in keepers), default=0))
        requests = server.requests_received() - before
        alive = sum(registry.lifetime(keeper.own)[0] > 0 for keeper, _ in keepers)
    finally:
        registry.conn.close()
    per_cycle = requests / hosts / cycles
    per_day = per_cycle * 86400 / DEFAULT_CYCLE_S
    return {"hosts": hosts, "cycles": cycles, "requests": requests, "per_host_cycle": round(per_cycle, 2),
            "per_host_day": round(per_day, 2), "scale_to": scale_to,
            "req_per_s_at_scale": round(per_day * scale_to / 86400, 4), "alive": alive,
            "lost": len(lost), "first_lost": lost[0] if lost else None}


def run_keepers(keepers: list[tuple[LeaseKeeper, Scheduler]], lost: list[str]) -> list[tuple[LeaseKeeper, Scheduler]]:
    """One pass of every keeper's due jobs; a keeper whose lease was lost (the agent would
    exit) is counted in *lost* with why, and left out of the next passes: the bench reports
    it instead of stopping."""
    running = []
    for keeper, scheduler in keepers:
        try:
            scheduler.run_due()
        except LeaseLost as exc:
            lost.append(str(exc))
            continue
        running.append((keeper, scheduler))
    return running


def renew_ok(run: dict[str, Any]) -> bool:
    return bool(run["alive"] == run["hosts"])


def renew_table(runs: list[dict[str, Any]]) -> list[str]:
    if not runs:
        return []
    first = runs[0]
    verdict = "PASS" if all(renew_ok(run) for run in runs) else "FAIL"
    per_day = statistics.median(run["per_host_day"] for run in runs)
    at_scale = statistics.median(run["req_per_s_at_scale"] for run in runs)

    def each(key: str) -> str:
        return ", ".join(f"{run[key]:g}" for run in runs)

    return [
        f"renew: {first['hosts']} lease keepers, {first['cycles']} cycles of TTL {TTL_S} s − margin {MARGIN_S} s, "
        f"scaled to the defaults ({DEFAULT_LEASE_TTL // 3600} h, {DEFAULT_RENEW_MARGIN_MINUTES} min) -- {verdict}",
        f"  requests per host and day  median {per_day:>8g}   flanneld {FLANNEL_PER_DAY:g} (ratio "
        f"{per_day / FLANNEL_PER_DAY:.1f})   runs: {each('per_host_day')}",
        f"  requests per second at {first['scale_to']} hosts  median {at_scale:g}   "
        f"runs: {each('req_per_s_at_scale')}",
        f"  leases alive at the end    {', '.join(str(run['alive']) + '/' + str(run['hosts']) for run in runs)}",
        *(f"  keepers that lost their lease: {run['lost']}, the first: {run['first_lost']}"
          for run in runs if run.get("lost")),
    ]
