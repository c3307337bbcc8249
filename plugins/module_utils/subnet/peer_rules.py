"""Which of the other hosts' leases may reach the data plane (DESIGN §4), in one place.

Anything with write access to the etcd prefix can put any value there, so a lease becomes
a peer only when:

- its subnet lies inside the Network and has the config's SubnetLen (leases outside
  SubnetMin..SubnetMax but inside the Network stay valid: operators reserve such subnets);
- it overlaps neither our own subnet nor an older accepted peer's (the lower create
  revision wins; when the older one goes, the newer one is accepted);
- its PublicIP is a unicast address that is not ours, not in 0/8, 127/8, 169.254/16, 224/4,
  240/4 or the broadcast address, and not inside the overlay network itself;
- it is of our backend, and its backend data is well-formed with identities no older
  accepted peer holds (the backend's SPEC says what that means: vxlan a unicast, non-zero
  VtepMAC of its own and our VNI).

``check`` judges one lease alone; ``select`` judges a whole set, older first.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..backends.registry import same_backend
from ..deps import netaddr
from .config import NetworkConfig
from .lease import Lease

# Addresses no peer can be reached at (RFC 1122, 3927, 5771, 1112); stdlib, so that the
# engine imports without netaddr (the modules then report it missing).
NOT_UNICAST = tuple(ipaddress.ip_network(net) for net in
                    ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4"))
BROADCAST = ipaddress.ip_address("255.255.255.255")


@dataclass(frozen=True)
class Selection:
    """The peers to program and the leases turned away, with why (keyed by lease key)."""

    accepted: dict[str, Lease] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)


class _Verdict(NamedTuple):
    """One lease judged alone: ours, or why not a peer (None: valid), and what it claims."""

    lease: Lease
    key: str
    own: bool
    reason: str | None
    claims: tuple[str, ...]


class PeerRules:
    def __init__(self, config: NetworkConfig, own_subnet: netaddr.IPNetwork | None, own_public_ip: str,
                 own_backend_type: str, own_backend_data: dict[str, Any] | None = None) -> None:
        self._inputs = (config, own_subnet, own_public_ip, own_backend_type, own_backend_data)
        self.config = config
        self.own_subnet = netaddr.IPNetwork(own_subnet).cidr if own_subnet is not None else None  # None: not yet
        self.own_public_ip = own_public_ip
        self.own_backend_type = own_backend_type  # the BackendType our leases carry
        self.spec = config.backend.spec
        # What our own lease claims (our VtepMAC): no peer may claim it too.
        self.own_identities = frozenset(self.spec.peer_identities(own_backend_data))
        self._verdicts: dict[int, _Verdict] = {}  # id(lease) -> its verdict (see select)

    def is_own(self, lease: Lease) -> bool:
        return self.own_subnet is not None and lease.subnet == self.own_subnet \
            and lease.attrs.public_ip == self.own_public_ip

    def check(self, lease: Lease) -> str | None:
        """Why this lease, judged alone, may not be a peer; None when it may."""
        return (self._check_backend(lease) or self._check_subnet(lease) or self._check_public_ip(lease)
                or self.spec.check_peer_data(lease.attrs.backend_data, self.config.backend)
                or self._check_identities(lease))

    def select(self, leases: Iterable[Lease]) -> Selection:
        """Every lease but our own judged; among valid ones the older keeps a contested subnet
        or backend identity (a VtepMAC), the newer is rejected until the older goes.

        A lease is judged alone once: the verdict is kept while the same lease object is
        given again (the peer cache hands the same ones every round), so re-selecting after
        one watch event costs a sort and a pass over the claims, not N checks."""
        selection = Selection()
        valid: list[_Verdict] = []
        verdicts: dict[int, _Verdict] = {}
        for lease in leases:
            verdict = self._verdicts.get(id(lease))
            if verdict is None or verdict.lease is not lease:
                verdict = self._judge(lease)
            verdicts[id(lease)] = verdict
            if verdict.own:
                continue
            if verdict.reason is None:
                valid.append(verdict)
            else:
                selection.rejected[verdict.key] = verdict.reason
        self._verdicts = verdicts  # only the current leases': the cache never outgrows them
        holders: dict[str, str] = {}  # "subnet 10.5.1.0/24", "VtepMAC 02:..." -> the key of the lease holding it
        for verdict in sorted(valid, key=lambda item: (item.lease.create_revision, item.key)):
            contested = next((claim for claim in verdict.claims if claim in holders), None)
            if contested is not None:
                selection.rejected[verdict.key] = f"the older lease {holders[contested]} has the same {contested}"
                continue
            selection.accepted[verdict.key] = verdict.lease
            holders.update(dict.fromkeys(verdict.claims, verdict.key))
        return selection

    def _judge(self, lease: Lease) -> _Verdict:
        own = self.is_own(lease)
        reason = None if own else self.check(lease)
        claims: tuple[str, ...] = ()
        if not own and reason is None:
            claims = (f"subnet {lease.subnet}", *self.spec.peer_identities(lease.attrs.backend_data))
        return _Verdict(lease, lease.key, own, reason, claims)

    @classmethod
    def cached(cls, previous: PeerRules | None, config: NetworkConfig, own_subnet: netaddr.IPNetwork | None,
               own_public_ip: str, own_backend_type: str, own_backend_data: dict[str, Any] | None = None) -> PeerRules:
        """previous when it was made from the same inputs, else new rules: a backend asks for
        every peer in every repair round, and the inputs change only with setup/activate."""
        inputs = (config, own_subnet, own_public_ip, own_backend_type, own_backend_data)
        if previous is not None and all(a is b or a == b for a, b in zip(inputs, previous._inputs, strict=True)):
            return previous
        return cls(*inputs)

    def _check_identities(self, lease: Lease) -> str | None:
        ours = self.own_identities.intersection(self.spec.peer_identities(lease.attrs.backend_data))
        if ours:
            return f"it has this host's own {', '.join(sorted(ours))}"
        return None

    def _check_backend(self, lease: Lease) -> str | None:
        theirs = lease.attrs.backend_type
        if not same_backend(theirs, self.own_backend_type):
            return f"it is a {theirs or 'udp'} lease and this host runs {self.spec.type}"
        return None

    def _check_subnet(self, lease: Lease) -> str | None:
        network, length = self.config.network, self.config.subnet_len
        subnet = lease.subnet
        if subnet.version != network.version or subnet not in network:
            return f"its subnet {subnet} lies outside the network {network}"
        if subnet.prefixlen != length:
            return f"its subnet {subnet} is not a /{length} (the network's SubnetLen)"
        own = self.own_subnet
        if own is not None and subnet.first <= own.last and own.first <= subnet.last:
            return f"its subnet {subnet} overlaps this host's own {own}"
        return None

    def _check_public_ip(self, lease: Lease) -> str | None:
        ip = ipaddress.ip_address(lease.attrs.public_ip)  # the lease codec made it an IPv4 address
        if str(ip) == self.own_public_ip:
            return f"its PublicIP {ip} is this host's own"
        if ip == BROADCAST or any(ip in net for net in NOT_UNICAST):
            return f"its PublicIP {ip} is not a unicast address a host can have"
        if netaddr.IPAddress(str(ip)) in self.config.network:
            return f"its PublicIP {ip} lies inside the overlay network {self.config.network}"
        return None
