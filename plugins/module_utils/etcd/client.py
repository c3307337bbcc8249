"""What the engine uses of an etcd3 client, as Protocols (python3-etcd3 and Debian's
python3-etcd3 ship no type information). Only these calls are made, so any client that
offers them works; they are the etcd3 API's own names and shapes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol


class KeyMeta(Protocol):
    """etcd3.client.KVMetadata: what comes with a value."""

    mod_revision: int
    lease_id: int


class KeyValue(Protocol):
    """One entry of a range response (the raw protobuf mvccpb.KeyValue)."""

    key: bytes
    value: bytes
    lease: int
    mod_revision: int
    create_revision: int


class ResponseHeader(Protocol):
    revision: int


class RangeResponse(Protocol):
    kvs: Sequence[KeyValue]
    header: ResponseHeader


class GrantedLease(Protocol):
    id: int


class LeaseInfo(Protocol):
    TTL: int  # seconds left; -1 when the lease is gone
    grantedTTL: int  # noqa: N815 - etcd's own field name


class Comparison(Protocol):
    def __eq__(self, other: object) -> Any: ...  # builds a compare, not a bool


class Transactions(Protocol):
    """The client's `transactions` namespace: compare targets and operations."""

    def mod(self, key: str) -> Comparison: ...

    def version(self, key: str) -> Comparison: ...

    def put(self, key: str, value: str | bytes, lease: int | None = None) -> Any: ...

    def delete(self, key: str) -> Any: ...


class EtcdClient(Protocol):
    transactions: Transactions
    channel: Any  # the grpc channel, for our own watch stream
    call_credentials: Any  # auth: gRPC call credentials (python3-etcd3) ...
    metadata: Any  # ... or per-call metadata (Debian's 0.12); either may be absent

    def get(self, key: str) -> tuple[bytes | None, KeyMeta | None]: ...

    def get_prefix_response(self, prefix: str, min_mod_revision: int | None = None) -> RangeResponse:
        """min_mod_revision: only keys written at or after it (etcd filters; only they come over
        the wire). Not its min_create_revision: python3-etcd3 0.13 sends that as min_mod_revision."""

    def transaction(self, compare: Sequence[Any], success: Sequence[Any], failure: Sequence[Any]) -> tuple[bool, Any]:
        ...

    def delete(self, key: str) -> bool: ...

    def lease(self, ttl: int) -> GrantedLease: ...

    def revoke_lease(self, lease_id: int) -> Any: ...

    def refresh_lease(self, lease_id: int) -> Iterable[Any]: ...

    def get_lease_info(self, lease_id: int) -> LeaseInfo: ...

    def close(self) -> None: ...


class WatchEvent(Protocol):
    """etcd3.events.PutEvent / DeleteEvent (told apart by class name, as etcd3 does)."""

    key: bytes
    value: bytes
    lease: int
    mod_revision: int
    create_revision: int
