"""What the agent exports at /metrics: the facts it already keeps, as metric families.

The numbers are not kept twice: the peer cache and the programmer (peers, rounds,
repairs), the lease keeper (expiry), the etcd connection (errors, reconnects), the main
loop (watch restarts) and the udp forwarder's own stats (datagrams, drops) are read at
scrape time into AgentFacts, which render() turns into the exposition text (metrics.py).
Before start-up is done only what is known then is exported (build info, etcd counters).
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..version import VERSION
from .metrics import Registry

PEER_STATES = ("programmed", "rejected", "malformed")
# The udp forwarder's counters (backends/udp/forwarder.py) that count a packet dropped:
# counter -> (direction, reason).
UDP_DROPS = {
    "tx_no_route": ("tx", "no_route"),
    "tx_not_ipv4": ("tx", "not_ipv4"),
    "tx_bad_packets": ("tx", "bad_packet"),
    "tx_send_errors": ("tx", "send_error"),
    "dropped_not_peer": ("rx", "not_peer"),
    "rx_malformed": ("rx", "malformed"),
    "tun_write_errors": ("rx", "tun_write_error"),
}


@dataclass(frozen=True)
class RunningFacts:
    """What only a started agent knows."""

    subnet: str
    lease_expires_at: float  # unix seconds; +Inf for a reservation
    peers: Mapping[str, int]  # PEER_STATES -> how many leases
    reconcile_rounds: int
    repairs: int
    watch_restarts: int
    backend_stats: Mapping[str, Any] = field(default_factory=dict)  # the backend's /stats


@dataclass(frozen=True)
class AgentFacts:
    backend: str  # Backend.Type, "" until the network config was read
    etcd_errors: int
    etcd_reconnects: int
    running: RunningFacts | None = None


def render(facts: AgentFacts) -> str:
    registry = Registry()
    registry.gauge("flannel_build_info", "The agent's version, Python version and backend (value 1).").set(
        1, version=VERSION, python=platform.python_version(), backend=facts.backend)
    registry.counter("flannel_etcd_errors_total",
                     "etcd requests that failed on an endpoint (each failover step counts).").set(facts.etcd_errors)
    registry.counter("flannel_etcd_reconnects_total",
                     "etcd clients opened again after the previous one was dropped.").set(facts.etcd_reconnects)
    if facts.running is not None:
        _running(registry, facts.running)
    return registry.render()


def _running(registry: Registry, run: RunningFacts) -> None:
    registry.gauge("flannel_lease_expiry_timestamp_seconds",
                   "When this host's subnet lease runs out at the latest unless renewed (unix seconds; "
                   "+Inf: a reservation).").set(run.lease_expires_at, subnet=run.subnet)
    peers = registry.gauge("flannel_peers", "Other hosts' leases: programmed into the data plane, rejected by "
                                            "the peer rules, or malformed.")
    for state in PEER_STATES:
        peers.set(run.peers.get(state, 0), state=state)
    registry.counter("flannel_reconcile_rounds_total",
                     "Repair rounds over all peers (the timer's and those of a burst of changes).").set(
        run.reconcile_rounds)
    registry.counter("flannel_reconcile_repairs_total",
                     "Routes, neighbours, FDB entries and devices the timer's repair rounds found missing "
                     "or wrong and wrote back (drift).").set(run.repairs)
    registry.counter("flannel_watch_restarts_total",
                     "Times the lease watch was opened again after it broke.").set(run.watch_restarts)
    if "rx_datagrams" in run.backend_stats:
        _udp(registry, run.backend_stats)


def _udp(registry: Registry, stats: Mapping[str, Any]) -> None:
    """From the forwarder's stats; they start again at 0 when the forwarder is restarted
    (Prometheus reads that as a counter reset)."""
    peers = stats.get("peers", {}).values()
    datagrams = registry.counter("flannel_udp_datagrams_total", "UDP datagrams sent to and received from peers.")
    datagrams.set(sum(p.get("tx_fast", 0) + p.get("tx_plain", 0) for p in peers), direction="tx")
    datagrams.set(stats.get("rx_datagrams", 0), direction="rx")
    drops = registry.counter("flannel_udp_drops_total", "Packets and datagrams the udp forwarder dropped, by reason.")
    for counter, (direction, reason) in UDP_DROPS.items():
        drops.set(stats.get(counter, 0), direction=direction, reason=reason)
