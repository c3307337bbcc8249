"""Simulated hosts racing for leases: one worker process runs many hosts, one thread each,
every host with its own etcd connection (as real hosts have), all released at once.

A host is an index: its PublicIP and host id follow from it (distinct for every index),
its lease is taken through the engine's own acquire path (subnet/acquire.py over
etcd/registry.py, as the flannel_lease module and the agent take theirs). Worker processes
are spawned (gRPC does not survive fork) and wait on one multiprocessing barrier, so every
host of every worker starts within a few milliseconds: with 2 cores, processes give real
concurrency against etcd, threads give the numbers (they wait on etcd most of the time).
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from multiprocessing.synchronize import Barrier
from typing import Any

from lab.engine import link_collection

link_collection()

from ansible_collections.overlaynet.flannel.plugins.module_utils.errors import NetworkFullError  # noqa: E402
from ansible_collections.overlaynet.flannel.plugins.module_utils.etcd.connection import (  # noqa: E402
    EtcdConnection,
    EtcdSettings,
)
from ansible_collections.overlaynet.flannel.plugins.module_utils.etcd.registry import LeaseRegistry  # noqa: E402
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.acquire import (  # noqa: E402
    AcquireRequest,
    acquire,
)
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.lease import LeaseAttrs  # noqa: E402

ETCD_TIMEOUT = 30.0  # seconds per call: 2,000 hosts at once queue up in etcd


def public_ip(index: int) -> str:
    """Host *index*'s PublicIP, in 198.18.0.0/15 (RFC 2544, benchmarking): only ever data
    in etcd here, never an address anything is sent to."""
    return f"198.{18 + index // 65024}.{index // 254 % 256}.{index % 254 + 1}"


def host_id(index: int) -> str:
    return f"{index + 1:016x}"


def attrs_of(index: int) -> LeaseAttrs:
    mac = f"0e:00:{index >> 24 & 255:02x}:{index >> 16 & 255:02x}:{index >> 8 & 255:02x}:{index & 255:02x}"
    return LeaseAttrs(public_ip(index), None, "vxlan", {"VNI": 1, "VtepMAC": mac}).with_host(host_id(index))


@dataclass
class Outcome:
    """What one host got: a lease key, "full" (the engine's NetworkFullError) or an error."""

    index: int
    t0: float  # CLOCK_MONOTONIC, shared by every process of the box
    t1: float
    key: str | None = None
    races_lost: int = 0
    full: str | None = None
    error: str | None = None


def _one_host(index: int, registry: LeaseRegistry, go: threading.Event, out: list[Outcome]) -> None:
    go.wait()
    t0 = time.monotonic()
    try:
        result = acquire(registry, AcquireRequest(attrs_of(index)))
        out.append(Outcome(index, t0, time.monotonic(), key=result.lease.key, races_lost=result.races_lost))
    except NetworkFullError as exc:
        out.append(Outcome(index, t0, time.monotonic(), full=str(exc)))
    except Exception as exc:  # noqa: BLE001 - any other failure is counted, and fails the bench
        out.append(Outcome(index, t0, time.monotonic(), error=f"{type(exc).__name__}: {exc}"))


def run_worker(endpoint: str, prefix: str, indices: list[int], barrier: Barrier, results: Any) -> None:
    """The worker process: connect every host, wait for all workers, race, report."""
    registries = [LeaseRegistry(EtcdConnection(EtcdSettings(endpoints=(endpoint,), timeout=ETCD_TIMEOUT)),
                                prefix) for _ in indices]
    for registry in registries:
        registry.read_config_raw()  # the channel is up before the start
    go = threading.Event()
    out: list[Outcome] = []
    threads = [threading.Thread(target=_one_host, args=(index, registry, go, out), daemon=True)
               for index, registry in zip(indices, registries, strict=True)]
    for thread in threads:
        thread.start()
    barrier.wait()
    go.set()
    for thread in threads:
        thread.join()
    for registry in registries:
        registry.conn.close()
    results.put([asdict(outcome) for outcome in out])
