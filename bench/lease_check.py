"""What etcd holds after a race, read back raw (no engine code): every key under the
prefix's subnets/ and the PublicIP in its value, checked against what the hosts reported."""

from __future__ import annotations

import ipaddress
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import etcd3


@dataclass
class StoreCheck:
    leases: int = 0
    duplicates: list[str] = field(default_factory=list)  # every problem found, one line each

    def add(self, problem: str) -> None:
        self.duplicates.append(problem)


def stored_leases(endpoint: str, prefix: str) -> dict[str, str]:
    """{key tail: PublicIP} of every key under <prefix>/subnets/, straight from etcd."""
    host, port = endpoint.split("://", 1)[-1].rsplit(":", 1)
    client = etcd3.client(host=host, port=int(port), timeout=30)
    try:
        subnets = f"{prefix}/subnets/"
        found: dict[str, str] = {}
        for value, meta in client.get_prefix(subnets):
            tail = meta.key.decode()[len(subnets):]
            try:
                found[tail] = str(json.loads(value)["PublicIP"])
            except (ValueError, KeyError, TypeError):
                found[tail] = f"<not a lease: {value[:60]!r}>"
        return found
    finally:
        client.close()


def _overlaps(keys: Iterable[str]) -> list[str]:
    """Keys whose subnets overlap another's (distinct keys may still name one address range)."""
    nets = sorted(ipaddress.ip_network(key.replace("-", "/")) for key in keys)
    return [f"{a} overlaps {b}" for a, b in zip(nets, nets[1:], strict=False) if a.overlaps(b)]


def check_store(stored: dict[str, str], reported: dict[str, str]) -> StoreCheck:
    """stored: {key: PublicIP} from etcd; reported: {PublicIP: key} the hosts said they got.
    Duplicates are any PublicIP under two keys, any overlap, any key nobody reported, any
    host whose key holds another PublicIP or is missing."""
    check = StoreCheck(leases=len(stored))
    for ip, count in Counter(stored.values()).items():
        if count > 1:
            check.add(f"PublicIP {ip} holds {count} leases")
    for problem in _overlaps(stored):
        check.add(problem)
    for ip, key in reported.items():
        if stored.get(key) != ip:
            check.add(f"{ip} was given {key}, which etcd holds for {stored.get(key)}")
    unclaimed = set(stored) - set(reported.values())
    for key in sorted(unclaimed):
        check.add(f"{key} ({stored[key]}) was reported by no host")
    return check
