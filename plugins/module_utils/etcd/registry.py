"""The network config and the subnet leases in etcd, in flannel's layout.

<prefix>/config            the network config JSON
<prefix>/subnets/<key>     one lease per host, attached to an etcd lease with a TTL;
                           a key with no etcd lease is a reservation
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from ..deps import netaddr
from ..errors import ConfigError, LeaseError
from ..subnet.allocator import is_free, pick_subnet
from ..subnet.config import NetworkConfig
from ..subnet.key import encode_subnet_key
from ..subnet.lease import Lease, LeaseAttrs
from .connection import EtcdConnection
from .watch import WatchBatch, watch_prefix

DEFAULT_PREFIX = "/coreos.com/network"
DEFAULT_TTL = 24 * 3600
# A lost creation race is retried with a new pick (upstream flannel makes it fatal).
_MAX_RACE_RETRIES = 50


@dataclass(frozen=True)
class AcquireResult:
    lease: Lease
    changed: bool
    action: str  # "kept", "updated", "renewed", "created", "moved"
    previous: Lease | None = None  # the lease before the change, if any


@dataclass(frozen=True)
class SubnetEvent:
    """A change under <prefix>/subnets/: lease is None for a delete; the key is always set."""

    kind: str  # "put" or "delete"
    key: str
    lease: Lease | None
    revision: int
    error: str | None = None  # a malformed key or value, reported, not fatal


class LeaseStore:
    def __init__(self, conn: EtcdConnection, prefix: str = DEFAULT_PREFIX) -> None:
        if not prefix.startswith("/"):
            raise ConfigError(f"etcd prefix {prefix!r} must start with '/', e.g. {DEFAULT_PREFIX}")
        self.conn = conn
        self.prefix = prefix.rstrip("/") or "/"
        self.config_key = f"{self.prefix}/config"
        self.subnets_prefix = f"{self.prefix}/subnets/"

    # --- the network config -------------------------------------------------------------

    def read_config_raw(self) -> tuple[bytes | None, int]:
        """The stored config bytes (None when absent) and its mod revision."""
        value, meta = self.conn.call(lambda c: c.get(self.config_key))
        return value, (meta.mod_revision if meta is not None else 0)

    def get_config(self) -> NetworkConfig:
        raw = self.read_config_raw()[0]
        if raw is None:
            raise ConfigError(
                f"no network config at {self.config_key}; create it with the etcd_network_config module"
            )
        return NetworkConfig.from_json(raw, where=f"network config at {self.config_key}")

    def put_config(self, config: NetworkConfig, expected_mod_revision: int) -> bool:
        """Store config if the key is still at expected_mod_revision (0: absent); False if it moved."""
        def txn(client: Any) -> bool:
            tx = client.transactions
            ok, _responses = client.transaction(
                compare=[tx.mod(self.config_key) == expected_mod_revision],
                success=[tx.put(self.config_key, config.to_json())],
                failure=[],
            )
            return ok
        return self.conn.call(txn)

    def delete_config(self) -> bool:
        return bool(self.conn.call(lambda c: c.delete(self.config_key)))

    # --- listing and watching leases ----------------------------------------------------

    def list_raw(self) -> tuple[list[tuple[str, bytes, int, int]], int]:
        """(key tail, value, etcd lease id, mod revision) for every subnet key, and the revision."""
        def fetch(client: Any) -> tuple[list[tuple[str, bytes, int, int]], int]:
            response = client.get_prefix_response(self.subnets_prefix)
            items = [
                (kv.key.decode()[len(self.subnets_prefix):], kv.value, kv.lease, kv.mod_revision)
                for kv in response.kvs
            ]
            return items, response.header.revision
        return self.conn.call(fetch)

    def list_leases(self, strict: bool = True) -> tuple[list[Lease], int, list[str]]:
        """Every lease and the listing's revision. strict: a malformed key or value raises
        LeaseError; otherwise it is skipped and described in the returned problems."""
        items, revision = self.list_raw()
        leases: list[Lease] = []
        problems: list[str] = []
        for key_tail, value, lease_id, mod_rev in items:
            try:
                leases.append(Lease.from_kv(key_tail, value, lease_id, mod_rev))
            except LeaseError as exc:
                if strict:
                    raise LeaseError(f"{exc} (key {self.subnets_prefix}{key_tail})") from None
                problems.append(str(exc))
        return leases, revision, problems

    def watch(self, start_revision: int) -> tuple[Iterator[WatchBatch], Any]:
        """Batches of events on <prefix>/subnets/ from start_revision, and a cancel function.

        The iterator raises EtcdUnavailableError when the stream breaks and
        WatchCompactedError when start_revision is gone (re-list, then watch again)."""
        return watch_prefix(self.conn.client(), self.subnets_prefix, start_revision)

    def decode_event(self, event: Any, revision: int) -> SubnetEvent:
        key_tail = event.key.decode()[len(self.subnets_prefix):]
        if type(event).__name__ == "DeleteEvent":
            return SubnetEvent("delete", key_tail, None, revision)
        try:
            lease = Lease.from_kv(key_tail, event.value, event.lease, event.mod_revision)
        except LeaseError as exc:
            return SubnetEvent("put", key_tail, None, revision, error=str(exc))
        return SubnetEvent("put", key_tail, lease, revision)

    # --- acquiring, renewing, releasing ------------------------------------------------

    def acquire(
        self,
        attrs: LeaseAttrs,
        ttl: int = DEFAULT_TTL,
        requested: netaddr.IPNetwork | None = None,
        previous: netaddr.IPNetwork | None = None,
        reservation: bool = False,
        keep_backend_data: bool = False,
        renew_below: int | None = None,
        dry_run: bool = False,
        rand: random.Random | None = None,
    ) -> AcquireResult:
        """Get this host (attrs.public_ip) a lease, flannel's way.

        Order: the requested subnet; else a lease already holding our PublicIP (if it still
        fits the config); else `previous` (from the old subnet.env) if free and fitting;
        else a random pick among the first 100 free subnets. A key is created in a
        transaction that requires it not to exist; a lost race re-lists and picks again.
        keep_backend_data: keep the stored BackendData (the module does not know the agent's
        VtepMAC). renew_below: refresh the TTL when fewer seconds than this remain.
        """
        config = self.get_config()
        rng = config.network_range
        if requested is not None and not rng.fits(requested):
            raise LeaseError(
                f"requested subnet {requested} is not a /{rng.subnet_len} between {rng.subnet_min} and "
                f"{rng.subnet_max} of network {rng.network}; pick one that is"
            )
        for _attempt in range(_MAX_RACE_RETRIES):
            leases = self.list_leases(strict=True)[0]
            mine = [lease for lease in leases if lease.attrs.public_ip == attrs.public_ip]
            if requested is not None:
                holder = next((lease for lease in leases if lease.subnet == requested), None)
                if holder is not None and holder.attrs.public_ip != attrs.public_ip:
                    raise LeaseError(
                        f"requested subnet {requested} is held by {holder.attrs.public_ip}; "
                        "release it there first or request another subnet"
                    )
                if holder is not None:
                    return self._keep(holder, attrs, ttl, reservation, keep_backend_data, renew_below, dry_run)
                result = self._create(requested, attrs, ttl, reservation, dry_run, moved_from=mine)
                if result is not None:
                    return result
                continue
            fitting = [lease for lease in mine if rng.fits(lease.subnet)]
            if fitting:
                return self._keep(fitting[0], attrs, ttl, reservation, keep_backend_data, renew_below, dry_run)
            taken = [lease.subnet for lease in leases]
            if previous is not None and rng.fits(previous) and is_free(previous, taken):
                choice = previous
            else:
                choice = pick_subnet(rng, taken, rand)
            result = self._create(choice, attrs, ttl, reservation, dry_run, moved_from=mine)
            if result is not None:
                return result
        raise LeaseError(
            f"could not create a lease after {_MAX_RACE_RETRIES} lost races; is something creating keys "
            f"under {self.subnets_prefix} in a loop?"
        )

    def _keep(self, lease: Lease, attrs: LeaseAttrs, ttl: int, reservation: bool, keep_backend_data: bool,
              renew_below: int | None, dry_run: bool) -> AcquireResult:
        wanted = attrs
        if keep_backend_data and _same_backend(lease.attrs.backend_type, attrs.backend_type):
            # The module cannot know what the agent advertises (VtepMAC, fast path): keep it.
            wanted = replace(attrs, backend_type=lease.attrs.backend_type, backend_data=lease.attrs.backend_data)
        key = self.subnets_prefix + lease.key
        if wanted == lease.attrs and (lease.is_reservation or not reservation):
            if lease.is_reservation or renew_below is None or self._remaining(lease) >= renew_below:
                return AcquireResult(lease, False, "kept")
            if not dry_run:
                self.conn.call(lambda c: list(c.refresh_lease(lease.etcd_lease_id)))
            return AcquireResult(lease, True, "renewed", lease)
        # Data changed, or an ordinary lease becomes a reservation. A reservation stays one.
        to_reservation = reservation or lease.is_reservation
        lease_id = 0 if to_reservation else lease.etcd_lease_id  # keep the expiry when only data changes
        if dry_run:
            return AcquireResult(replace(lease, attrs=wanted, etcd_lease_id=lease_id), True, "updated", lease)

        def txn(client: Any) -> tuple[bool, int, int]:
            tx = client.transactions
            ok, _responses = client.transaction(
                compare=[tx.mod(key) == lease.mod_revision],
                success=[tx.put(key, wanted.to_json(), lease=lease_id or None)],
                failure=[],
            )
            if not ok:
                return False, 0, 0
            return True, lease_id, client.get(key)[1].mod_revision
        ok, lease_id, mod_rev = self.conn.call(txn)
        if not ok:
            raise LeaseError(f"lease {key} changed while it was being updated; run again")
        updated = replace(lease, attrs=wanted, etcd_lease_id=lease_id, mod_revision=mod_rev)
        return AcquireResult(updated, True, "updated", lease)

    def _remaining(self, lease: Lease) -> int:
        info = self.conn.call(lambda c: c.get_lease_info(lease.etcd_lease_id))
        return int(info.TTL)

    def _create(self, subnet: netaddr.IPNetwork, attrs: LeaseAttrs, ttl: int, reservation: bool,
                dry_run: bool, moved_from: list[Lease]) -> AcquireResult | None:
        """Create the key if it does not exist; None when another host won the race."""
        key = self.subnets_prefix + encode_subnet_key(subnet)
        new = Lease(subnet, attrs)
        action = "moved" if moved_from else "created"
        previous = moved_from[0] if moved_from else None
        if dry_run:
            return AcquireResult(new, True, action, previous)

        def txn(client: Any) -> tuple[bool, int, int]:
            lease_id = 0 if reservation else client.lease(ttl).id
            tx = client.transactions
            ok, _responses = client.transaction(
                compare=[tx.version(key) == 0],
                success=[tx.put(key, attrs.to_json(), lease=lease_id or None)],
                failure=[],
            )
            if not ok:
                if lease_id:
                    client.revoke_lease(lease_id)
                return False, 0, 0
            return True, lease_id, client.get(key)[1].mod_revision
        ok, lease_id, mod_rev = self.conn.call(txn)
        if not ok:
            return None
        # Asking for a specific subnet moves this host: its old leases go.
        for old in moved_from:
            self._delete(old)
        return AcquireResult(replace(new, etcd_lease_id=lease_id, mod_revision=mod_rev), True, action, previous)

    def renew(self, lease: Lease, ttl: int = DEFAULT_TTL) -> Lease:
        """Give an ordinary lease a fresh TTL; a reservation is left as it is.

        A lease deleted or taken over by someone else is reported (LeaseError), never
        silently re-created: the agent exits on it, as flanneld does."""
        if lease.is_reservation:
            return lease
        key = self.subnets_prefix + lease.key

        def op(client: Any) -> Lease | None:
            value, meta = client.get(key)
            if value is None or meta.lease_id != lease.etcd_lease_id:
                return None
            info = client.get_lease_info(lease.etcd_lease_id)
            if info.grantedTTL == ttl and info.TTL > 0:
                list(client.refresh_lease(lease.etcd_lease_id))
                return replace(lease, mod_revision=meta.mod_revision)
            new_id = client.lease(ttl).id  # a different TTL needs a new etcd lease
            tx = client.transactions
            ok, _responses = client.transaction(
                compare=[tx.mod(key) == meta.mod_revision], success=[tx.put(key, value, lease=new_id)], failure=[]
            )
            if not ok:
                client.revoke_lease(new_id)
                return None
            new_meta = client.get(key)[1]
            return replace(lease, etcd_lease_id=new_id, mod_revision=new_meta.mod_revision)
        renewed = self.conn.call(op)
        if renewed is None:
            raise LeaseError(f"lease {key} is gone or no longer ours; it cannot be renewed")
        return renewed

    def lease_expires_in(self, lease: Lease) -> float | None:
        """Seconds until the etcd lease expires (None for a reservation, -1 when already gone)."""
        if lease.is_reservation:
            return None
        ttl = self._remaining(lease)
        return float(ttl)

    def release(self, public_ip: str, subnet: netaddr.IPNetwork | None = None, dry_run: bool = False) -> list[Lease]:
        """Delete this host's leases (or just `subnet`, when it is ours); return what went."""
        leases = self.list_leases(strict=False)[0]
        gone = [
            lease for lease in leases
            if lease.attrs.public_ip == public_ip and (subnet is None or lease.subnet == subnet)
        ]
        if not dry_run:
            for lease in gone:
                self._delete(lease)
        return gone

    def _delete(self, lease: Lease) -> None:
        key = self.subnets_prefix + lease.key

        def txn(client: Any) -> None:
            tx = client.transactions
            client.transaction(compare=[tx.mod(key) == lease.mod_revision], success=[tx.delete(key)], failure=[])
            if lease.etcd_lease_id:
                try:
                    client.revoke_lease(lease.etcd_lease_id)
                except Exception:  # noqa: BLE001 - the etcd lease may have lapsed already
                    pass
        self.conn.call(txn)

    def get_lease(self, subnet: netaddr.IPNetwork) -> Lease | None:
        key_tail = encode_subnet_key(subnet)
        value, meta = self.conn.call(lambda c: c.get(self.subnets_prefix + key_tail))
        if value is None:
            return None
        return Lease.from_kv(key_tail, value, meta.lease_id, meta.mod_revision)


def _same_backend(stored: str, wanted: str) -> bool:
    # flannel's udp leases carry no BackendType; ours may say "udp".
    return (stored or "udp") == (wanted or "udp")
