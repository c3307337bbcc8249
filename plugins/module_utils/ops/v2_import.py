"""Moving a cluster set up the classic way (flannel up to v0.17: ``etcdctl set``, the etcd v2
API) onto the v3 keyspace: its config, and every host's lease with its subnet.

The leases are copied before any host of ours acquires one, so each host finds its own (by
PublicIP) and keeps its subnet and docker0; a lease copied keeps the time it had left (a
reservation, no TTL, stays one), and the agent that takes the host over renews it. Nothing
is deleted from v2: upstream agents still running there keep working until replaced.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..defaults import STORED_DEFAULT_BACKEND
from ..deps import netaddr
from ..errors import ConfigError, named
from ..etcd.registry import LeaseRegistry
from ..etcd.v2_keyspace import V2Keyspace
from ..subnet.config import NetworkConfig
from ..subnet.lease import Malformed, parse_kv
from .network_config import ConfigOutcome, ensure_network_config


@dataclass
class V2LeaseImport:
    imported: list[str] = field(default_factory=list)  # lease keys created in v3
    kept: list[str] = field(default_factory=list)  # already in v3, held by the same PublicIP
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"key", "reason"}: not copied, why

    @property
    def changed(self) -> bool:
        return bool(self.imported)

    def to_dict(self) -> dict[str, Any]:
        return {"imported": self.imported, "kept": self.kept, "skipped": self.skipped}


def v2_config_document(v2: V2Keyspace) -> dict[str, Any]:
    """The config at ``<prefix>/config`` in v2, checked as flannel's config: the document as
    stored, with the Backend the old cluster ran made explicit (none meant udp, and the
    config we write always names it)."""
    raw = v2.get("config")
    where = f"v2 key {v2.prefix}/config"
    if raw is None:
        raise ConfigError(f"there is no {where}: nothing to import (is the prefix right?)")
    NetworkConfig.from_json(raw, where=where)  # refuses what flannel would refuse
    document: dict[str, Any] = json.loads(raw)
    document.setdefault("Backend", {"Type": STORED_DEFAULT_BACKEND})
    return document


def import_v2_leases(registry: LeaseRegistry, v2: V2Keyspace, config: NetworkConfig,
                     dry_run: bool) -> V2LeaseImport:
    """Copy every valid v2 lease inside *config*'s range whose subnet is free in v3."""
    done = V2LeaseImport()
    held = {lease.key: lease for lease in registry.list_leases().leases}
    for node in v2.list_dir("subnets"):
        parsed = parse_kv(node.name, node.value)
        if isinstance(parsed, Malformed):
            done.skipped.append({"key": named(node.name), "reason": parsed.reason})
            continue
        if not config.network_range.fits(parsed.subnet):
            done.skipped.append({"key": parsed.key, "reason": f"outside the network {config.network}"})
            continue
        holder = held.get(parsed.key)
        if holder is not None:
            if holder.attrs.public_ip == parsed.attrs.public_ip:
                done.kept.append(parsed.key)
            else:
                done.skipped.append({"key": parsed.key,
                                     "reason": f"held in v3 by {holder.attrs.public_ip}, not {parsed.attrs.public_ip}"})
            continue
        if node.ttl is not None and node.ttl <= 0:
            done.skipped.append({"key": parsed.key, "reason": "expired in v2"})
            continue
        if not dry_run and registry.create(parsed.subnet, parsed.attrs, node.ttl or 0,
                                           reservation=node.ttl is None) is None:
            done.skipped.append({"key": parsed.key, "reason": "taken in v3 by another host during the import"})
            continue
        done.imported.append(parsed.key)
    return done


def import_v2(registry: LeaseRegistry, v2: V2Keyspace, force: bool,
              dry_run: bool) -> tuple[ConfigOutcome, V2LeaseImport]:
    """The etcd_network_config module's import_v2: the v2 config made the v3 one (as any
    config is: compared semantically, refused if it strands v3 leases unless *force*), then
    the v2 leases copied that fit it."""
    document = v2_config_document(v2)
    outcome = ensure_network_config(registry, "present", document, force, dry_run)
    config = NetworkConfig.from_dict(document, where=f"v2 key {v2.prefix}/config")
    leases = import_v2_leases(registry, v2, config, dry_run)
    outcome.changed = outcome.changed or leases.changed
    return outcome, leases


def v2_own_subnet(v2: V2Keyspace, public_ip: str) -> netaddr.IPNetwork | None:
    """The subnet of this host's lease in v2 (the valid one holding *public_ip*, unexpired),
    or None: flannel_lease's import_v2 asks for it when v3 holds nothing for the host."""
    for node in v2.list_dir("subnets"):
        parsed = parse_kv(node.name, node.value)
        if isinstance(parsed, Malformed) or parsed.attrs.public_ip != public_ip:
            continue
        if node.ttl is None or node.ttl > 0:
            return parsed.subnet
    return None
