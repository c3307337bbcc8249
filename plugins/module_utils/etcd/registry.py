"""The network config and the subnet leases in etcd, in flannel's layout: keys, values,
transactions, listing and watching. Which lease a host gets is decided elsewhere
(subnet/acquire.py); this is the store it decides over.

<prefix>/config            the network config JSON
<prefix>/subnets/<key>     one lease per host, attached to an etcd lease with a TTL;
                           a key with no etcd lease is a reservation
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from ..defaults import DEFAULT_LEASE_TTL, DEFAULT_PREFIX
from ..deps import netaddr
from ..errors import ConfigError, LeaseError
from ..subnet.config import NetworkConfig
from ..subnet.key import encode_subnet_key
from ..subnet.lease import Lease, LeaseAttrs, Listing, Malformed, parse_kv
from .client import EtcdClient, KeyMeta, WatchEvent
from .connection import EtcdConnection
from .watch import WatchBatch, watch_prefix


@dataclass(frozen=True)
class SubnetEvent:
    """A change under <prefix>/subnets/: lease is None for a delete; the key is always set."""

    kind: str  # "put" or "delete"
    key: str
    lease: Lease | None
    revision: int
    error: str | None = None  # a malformed key or value, reported, not fatal


def _mod_revision(client: EtcdClient, key: str) -> int:
    """The key's mod revision, read right after this client wrote it."""
    meta = client.get(key)[1]
    if meta is None:
        raise LeaseError(f"{key} vanished right after it was written; is something deleting keys in a loop?")
    return meta.mod_revision


def _holding(client: EtcdClient, key: str, attrs: LeaseAttrs) -> KeyMeta | None:
    """The key's metadata when it holds exactly `attrs` (None otherwise).

    EtcdConnection.call() runs an operation again on the next endpoint when the first
    one's answer was lost, so a write may already have happened when it is re-run; each
    write below asks this when its compare fails, so doing it twice does it once."""
    value, meta = client.get(key)
    if value is None or meta is None:
        return None
    try:
        return meta if LeaseAttrs.from_json(value) == attrs else None
    except LeaseError:
        return None


class LeaseRegistry:
    """One etcd prefix of flannel's layout (a LeaseBook for subnet/acquire.py)."""

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
        def txn(client: EtcdClient) -> bool:
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

    def key_tail(self, key: bytes) -> str:
        """A key below <prefix>/subnets/ without the prefix; bytes that are not UTF-8 are
        escaped (such a key names no subnet, and is reported as malformed)."""
        return key[len(self.subnets_prefix.encode()):].decode("utf-8", "backslashreplace")

    def list_leases(self) -> Listing:
        """Every key under <prefix>/subnets/: the leases, and the keys that hold none
        (malformed keys or values never make the listing fail)."""
        return self.conn.call(lambda client: self._fetch(client, None))

    def list_changed(self, after: int) -> Listing:
        """Only the keys written after revision `after` (etcd filters them: after a lost race
        or a create at thousands of leases, the few keys that changed come over the wire,
        not every lease again). Deletes are not in it."""
        return self.conn.call(lambda client: self._fetch(client, after + 1))

    def _fetch(self, client: EtcdClient, min_mod_revision: int | None) -> Listing:
        response = client.get_prefix_response(self.subnets_prefix, min_mod_revision=min_mod_revision)
        listing = Listing([], response.header.revision, [], self.subnets_prefix)
        for kv in response.kvs:
            found = parse_kv(self.key_tail(kv.key), kv.value, kv.lease, kv.mod_revision, kv.create_revision)
            if isinstance(found, Lease):
                listing.leases.append(found)
            else:
                listing.malformed.append(found)
        return listing

    def watch(self, start_revision: int) -> tuple[Iterator[WatchBatch], Callable[[], None]]:
        """Batches of events on <prefix>/subnets/ from start_revision, and a cancel function.

        The iterator raises EtcdUnavailableError when the stream breaks and
        WatchCompactedError when start_revision is gone (re-list, then watch again)."""
        return watch_prefix(self.conn.client(), self.subnets_prefix, start_revision, self.conn.auth_metadata)

    def decode_event(self, event: WatchEvent, revision: int) -> SubnetEvent:
        key_tail = self.key_tail(event.key)
        if type(event).__name__ == "DeleteEvent":
            return SubnetEvent("delete", key_tail, None, revision)
        found = parse_kv(key_tail, event.value, event.lease, event.mod_revision, event.create_revision)
        if isinstance(found, Malformed):
            return SubnetEvent("put", key_tail, None, revision, error=found.reason)
        return SubnetEvent("put", key_tail, found, revision)

    # --- creating, rewriting, renewing and deleting leases ------------------------------

    def create(self, subnet: netaddr.IPNetwork, attrs: LeaseAttrs, ttl: int, reservation: bool) -> Lease | None:
        """Create the key for subnet in a transaction that requires it not to exist; None when
        it exists (another host won the race). reservation: no etcd lease, so no TTL."""
        key = self.subnets_prefix + encode_subnet_key(subnet)

        def txn(client: EtcdClient) -> tuple[bool, int, int]:
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
                ours = _holding(client, key, attrs)  # an earlier run of this txn created it
                return (True, ours.lease_id, ours.mod_revision) if ours is not None else (False, 0, 0)
            return True, lease_id, _mod_revision(client, key)
        ok, lease_id, mod_rev = self.conn.call(txn)
        # just created (or found as our earlier attempt left it): created at its mod revision
        return Lease(subnet, attrs, lease_id, mod_rev, create_revision=mod_rev) if ok else None

    def update(self, lease: Lease, attrs: LeaseAttrs, etcd_lease_id: int) -> Lease:
        """Rewrite the lease's value, attached to etcd_lease_id (0: none, a reservation), if
        the key is still as read; LeaseError when it changed meanwhile."""
        key = self.subnets_prefix + lease.key

        def txn(client: EtcdClient) -> tuple[bool, int]:
            tx = client.transactions
            ok, _responses = client.transaction(
                compare=[tx.mod(key) == lease.mod_revision],
                success=[tx.put(key, attrs.to_json(), lease=etcd_lease_id or None)],
                failure=[],
            )
            if ok:
                return True, _mod_revision(client, key)
            ours = _holding(client, key, attrs)  # an earlier run of this txn wrote it
            return (True, ours.mod_revision) if ours is not None and ours.lease_id == etcd_lease_id else (False, 0)
        ok, mod_rev = self.conn.call(txn)
        if not ok:
            raise LeaseError(f"lease {key} changed while it was being updated; run again")
        return replace(lease, attrs=attrs, etcd_lease_id=etcd_lease_id, mod_revision=mod_rev)

    def refresh(self, lease: Lease) -> None:
        """A fresh TTL for the lease's etcd lease (same TTL as granted)."""
        self.conn.call(lambda c: list(c.refresh_lease(lease.etcd_lease_id)))

    def remaining(self, lease: Lease) -> int:
        """Seconds the lease's etcd lease has left (-1 when it is gone)."""
        return self.lifetime(lease)[0]

    def lifetime(self, lease: Lease) -> tuple[int, int]:
        """Seconds the lease's etcd lease has left (-1 when it is gone), and the TTL it was
        granted with (whoever holds the lease chose it: the agent's --subnet-lease-ttl)."""
        info = self.conn.call(lambda c: c.get_lease_info(lease.etcd_lease_id))
        return int(info.TTL), int(info.grantedTTL)

    def renew(self, lease: Lease, ttl: int = DEFAULT_LEASE_TTL) -> Lease:
        """Give an ordinary lease a fresh TTL; a reservation is left as it is.

        A lease deleted or taken over by someone else is reported (LeaseError), never
        silently re-created: the agent exits on it, as flanneld does."""
        if lease.is_reservation:
            return lease
        key = self.subnets_prefix + lease.key

        def op(client: EtcdClient) -> Lease | None:
            value, meta = client.get(key)
            if value is None or meta is None:
                return None
            if meta.lease_id != lease.etcd_lease_id:
                return _renewed_before(client, key, lease, ttl)
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
            return replace(lease, etcd_lease_id=new_id, mod_revision=_mod_revision(client, key))
        renewed = self.conn.call(op)
        if renewed is None:
            raise LeaseError(f"lease {key} is gone or no longer ours; it cannot be renewed")
        return renewed

    def lease_expires_in(self, lease: Lease) -> float | None:
        """Seconds until the etcd lease expires (None for a reservation, -1 when already gone)."""
        if lease.is_reservation:
            return None
        return float(self.remaining(lease))

    def delete(self, lease: Lease) -> None:
        """Delete the key if it is still as read, and revoke its etcd lease."""
        key = self.subnets_prefix + lease.key

        def txn(client: EtcdClient) -> None:
            tx = client.transactions
            client.transaction(compare=[tx.mod(key) == lease.mod_revision], success=[tx.delete(key)], failure=[])
            _revoke_quietly(client, lease.etcd_lease_id)
        self.conn.call(txn)

    def get_lease(self, subnet: netaddr.IPNetwork) -> Lease | None:
        key_tail = encode_subnet_key(subnet)
        value, meta = self.conn.call(lambda c: c.get(self.subnets_prefix + key_tail))
        if value is None or meta is None:
            return None
        return Lease.from_kv(key_tail, value, meta.lease_id, meta.mod_revision)


def _revoke_quietly(client: EtcdClient, lease_id: int) -> None:
    if lease_id:
        try:
            client.revoke_lease(lease_id)
        except Exception:  # noqa: BLE001 - the etcd lease may have lapsed already
            pass


def _renewed_before(client: EtcdClient, key: str, lease: Lease, ttl: int) -> Lease | None:
    """The key moved to another etcd lease: ours, by an earlier run of the same renewal
    (same value, an etcd lease granted `ttl`), or somebody else's (None)."""
    ours = _holding(client, key, lease.attrs)
    if ours is None or client.get_lease_info(ours.lease_id).grantedTTL != ttl:
        return None
    return replace(lease, etcd_lease_id=ours.lease_id, mod_revision=ours.mod_revision)
