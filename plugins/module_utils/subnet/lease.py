"""Subnet leases: the value stored under <prefix>/subnets/<key>, byte-compatible with flannel.

flannel writes `{"PublicIP":..,"PublicIPv6":null,"BackendType":..,"BackendData":..}` with
Go's encoding/json: field order fixed, no spaces, PublicIPv6 always present, the
backend fields left out when empty.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field, replace
from typing import Any

from ..deps import netaddr
from ..errors import LeaseError, named, shown
from .json_doc import load_json
from .key import decode_subnet_key, encode_subnet_key

OURS_KEY = "Overlaynet"  # our own fields inside BackendData


@dataclass(frozen=True)
class LeaseAttrs:
    """What a host publishes about itself in its lease."""

    public_ip: str
    public_ipv6: str | None = None
    backend_type: str = ""
    backend_data: dict[str, Any] | None = field(default=None, compare=True, hash=False)

    @property
    def host_id(self) -> str | None:
        """The identity of the host that wrote the lease (ours carry one; upstream's do not)."""
        ours = (self.backend_data or {}).get(OURS_KEY)
        host = ours.get("Host") if isinstance(ours, dict) else None
        return host if isinstance(host, str) else None

    def with_host(self, host_id: str | None) -> LeaseAttrs:
        """The same attrs, carrying host_id in BackendData "Overlaynet" (which upstream
        flanneld ignores, as it ignores the udp fast-path advertisement there)."""
        if host_id is None:
            return self
        data = dict(self.backend_data or {})
        ours = data.get(OURS_KEY)
        data[OURS_KEY] = {**(ours if isinstance(ours, dict) else {}), "Host": host_id}
        return replace(self, backend_data=data)

    def to_json(self) -> str:
        doc: dict[str, Any] = {"PublicIP": self.public_ip, "PublicIPv6": self.public_ipv6}
        if self.backend_type:
            doc["BackendType"] = self.backend_type
        if self.backend_data:
            doc["BackendData"] = self.backend_data
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes | str, where: str = "lease") -> LeaseAttrs:
        doc = load_json(raw, LeaseError, f"{where}: stored value",
                        "delete or rewrite the key with a flannel lease JSON document")
        if not isinstance(doc, dict):
            raise LeaseError(f"{where}: stored value must be a JSON object, got {shown(raw)}")
        # Go's encoding/json matches field names case-insensitively; so do we.
        lowered = {str(k).lower(): v for k, v in doc.items()}
        public_ip = lowered.get("publicip")
        if not isinstance(public_ip, str) or not _is_ip(public_ip, 4):
            raise LeaseError(
                f"{where}: PublicIP {shown(public_ip)} is not an IPv4 address; "
                "rewrite the lease with a valid PublicIP"
            )
        public_ipv6 = lowered.get("publicipv6")
        if public_ipv6 is not None and not (isinstance(public_ipv6, str) and _is_ip(public_ipv6, 6)):
            raise LeaseError(f"{where}: PublicIPv6 {shown(public_ipv6)} must be an IPv6 address or null")
        backend_type = lowered.get("backendtype")
        if backend_type is None:
            backend_type = ""
        if not isinstance(backend_type, str):
            raise LeaseError(f"{where}: BackendType {shown(backend_type)} must be a string")
        backend_data = lowered.get("backenddata")
        if backend_data is not None and not isinstance(backend_data, dict):
            raise LeaseError(f"{where}: BackendData {shown(backend_data)} must be a JSON object")
        return cls(public_ip, public_ipv6, backend_type, backend_data or None)


def _is_ip(text: str, version: int) -> bool:
    try:
        return netaddr.IPAddress(text, version=version, flags=netaddr.INET_PTON).version == version
    except (netaddr.AddrFormatError, ValueError, TypeError):
        return False


@dataclass(frozen=True)
class Lease:
    """One subnet lease as read from etcd."""

    subnet: netaddr.IPNetwork
    attrs: LeaseAttrs
    etcd_lease_id: int = 0  # 0: a reservation (key without TTL)
    mod_revision: int = 0
    ipv6_subnet: netaddr.IPNetwork | None = None
    create_revision: int = 0  # when the key was created: of two conflicting leases the older wins

    @property
    def key(self) -> str:
        return encode_subnet_key(self.subnet, self.ipv6_subnet)

    @property
    def is_reservation(self) -> bool:
        return self.etcd_lease_id == 0

    @classmethod
    def from_kv(cls, key_tail: str, value: bytes, etcd_lease_id: int = 0, mod_revision: int = 0,
                create_revision: int = 0) -> Lease:
        subnet, ipv6_subnet = decode_subnet_key(key_tail)
        attrs = LeaseAttrs.from_json(value, where=f"lease {named(key_tail)}")
        return cls(subnet, attrs, etcd_lease_id, mod_revision, ipv6_subnet, create_revision)


@dataclass(frozen=True)
class Malformed:
    """A key under <prefix>/subnets/ that holds no usable lease: reported, never fatal."""

    key: str  # the key's tail as read (bytes that are not UTF-8 escaped)
    reason: str
    subnet: netaddr.IPNetwork | None = None  # the key itself names a subnet: it counts as taken


# Every acquisition and every resync lists all leases again, and nearly all of them are the
# ones parsed last time: parsing (JSON, addresses, the key) costs ~80 us a lease, a memo hit
# ~1 us. The result depends only on the arguments, and Lease/Malformed are frozen (nothing
# changes a lease's subnet or BackendData in place), so a memo can hand out the same object.
# Only values of a real lease's size are kept: hostile megabyte values cannot fill memory.
PARSED_MEMO = 8192
MEMO_VALUE_MAX = 1024  # bytes; a flannel lease is ~200


def parse_kv(key_tail: str, value: bytes, etcd_lease_id: int = 0, mod_revision: int = 0,
             create_revision: int = 0) -> Lease | Malformed:
    """One key and value as read: the lease, or why there is none (never an exception)."""
    if len(value) <= MEMO_VALUE_MAX and len(key_tail) <= MEMO_VALUE_MAX:
        return _parse_kv_memo(key_tail, bytes(value), etcd_lease_id, mod_revision, create_revision)
    return _parse_kv(key_tail, value, etcd_lease_id, mod_revision, create_revision)


def _parse_kv(key_tail: str, value: bytes, etcd_lease_id: int, mod_revision: int,
              create_revision: int) -> Lease | Malformed:
    try:
        return Lease.from_kv(key_tail, value, etcd_lease_id, mod_revision, create_revision)
    except LeaseError as exc:
        try:
            subnet: netaddr.IPNetwork | None = decode_subnet_key(key_tail)[0]
        except LeaseError:
            subnet = None
        return Malformed(key_tail, str(exc), subnet)


_parse_kv_memo = functools.lru_cache(maxsize=PARSED_MEMO)(_parse_kv)


@dataclass(frozen=True)
class Listing:
    """Every key under <prefix>/subnets/ at one revision."""

    leases: list[Lease]
    revision: int
    malformed: list[Malformed] = field(default_factory=list)
    prefix: str = ""  # <prefix>/subnets/, for messages that name a key in full

    @property
    def taken(self) -> list[netaddr.IPNetwork]:
        """Subnets nobody else may pick: every lease's and every malformed key's that names one."""
        return [lease.subnet for lease in self.leases] + [m.subnet for m in self.malformed if m.subnet is not None]

    def merged(self, changed: Listing) -> Listing:
        """This listing brought up to date with `changed`: the keys written after it, as read
        at changed.revision. A key deleted in between is not in `changed` and stays here, so
        its subnet still counts as taken: a pick made on the result can only be more careful
        than one made on a full listing, never a duplicate."""
        written = {entry.key for entry in changed.leases} | {entry.key for entry in changed.malformed}
        return Listing([lease for lease in self.leases if lease.key not in written] + changed.leases,
                       changed.revision,
                       [bad for bad in self.malformed if bad.key not in written] + changed.malformed,
                       self.prefix)
