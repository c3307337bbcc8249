"""What the flannel_lease module does: hold (or release) this host's lease and write subnet.env."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..defaults import DEFAULT_LEASE_TTL
from ..deps import netaddr
from ..errors import LeaseError, named
from ..etcd.registry import LeaseRegistry
from ..etcd.v2_keyspace import V2Keyspace
from ..files import read_text
from ..host.underlay import UnderlayChoice, select_underlay
from ..identity import host_id
from ..subnet.acquire import AcquireRequest, acquire, release
from ..subnet.env import SubnetEnv, parse_subnet_env, write_subnet_env
from ..subnet.lease import LeaseAttrs
from .v2_import import v2_own_subnet


@dataclass
class LeaseOutcome:
    changed: bool
    action: str
    public_ip: str
    subnet: str | None = None
    bip: str | None = None  # FLANNEL_SUBNET: the first host address of the subnet
    network: str | None = None
    mtu: int | None = None
    ip_masq: bool = False
    lease_key: str | None = None
    reservation: bool = False
    released: list[str] = field(default_factory=list)
    subnet_file_before: str | None = None
    subnet_file_after: str | None = None
    warnings: list[str] = field(default_factory=list)  # keys under the prefix that hold no lease


@dataclass(frozen=True)
class LeaseParams:
    """The flannel_lease module's options, as the engine takes them."""

    state: str = "present"
    public_ip: str | None = None
    iface: str | tuple[str, ...] | None = None  # names or addresses, tried in order
    iface_regex: tuple[str, ...] = ()
    iface_can_reach: str | None = None
    public_ipv6: str | None = None
    subnet: str | None = None  # a specific subnet to hold
    reservation: bool = False
    ttl: int = DEFAULT_LEASE_TTL
    subnet_file: str | None = None
    ip_masq: bool = False
    mtu: int | None = None  # None: the backend's MTU for the underlay
    import_v2: bool = False  # ask for this host's subnet of the etcd v2 keyspace (a classic cluster)


def ensure_lease(registry: LeaseRegistry, params: LeaseParams, dry_run: bool,
                 v2: V2Keyspace | None = None) -> LeaseOutcome:
    """*v2*: where params.import_v2 reads this host's old lease (the same etcd's v2 API)."""
    requested = _parse_subnet(params.subnet) if params.subnet else None
    choice = UnderlayChoice.of(params.iface, params.iface_regex, params.iface_can_reach, params.public_ip,
                               params.public_ipv6)
    if params.state == "absent":
        ip = params.public_ip or select_underlay(choice).public_ip
        gone = release(registry, ip, requested, dry_run=dry_run, host=host_id())
        return LeaseOutcome(bool(gone), "released" if gone else "absent", ip, released=[g.key for g in gone])

    config = registry.get_config()
    underlay = select_underlay(choice)
    before = _read_subnet_file(params.subnet_file)
    previous_env = parse_subnet_env(before) if before is not None else None
    spec = config.backend.spec
    attrs = LeaseAttrs(underlay.public_ip, underlay.public_ipv6, spec.lease_type,
                       spec.module_lease_data(config.backend, underlay.public_ip)).with_host(host_id())
    previous = previous_env.lease_subnet if previous_env is not None else None
    if params.import_v2 and v2 is not None:
        # the subnet this host held under flannel <= v0.17 wins over a subnet.env (the lease is
        # what its peers route to); taken only if free in v3, as any previous subnet
        previous = v2_own_subnet(v2, underlay.public_ip) or previous
    result = acquire(registry, AcquireRequest(
        attrs, ttl=params.ttl, requested=requested,
        previous=previous,
        reservation=params.reservation, keep_backend_data=True, renew_below=params.ttl // 2, dry_run=dry_run,
    ))
    lease = result.lease
    mtu = params.mtu if params.mtu is not None else spec.overlay_mtu(config.backend, underlay.mtu)
    outcome = LeaseOutcome(
        changed=result.changed, action=result.action, public_ip=underlay.public_ip,
        subnet=str(lease.subnet), network=str(config.network), mtu=mtu, ip_masq=params.ip_masq,
        lease_key=registry.subnets_prefix + lease.key, reservation=lease.is_reservation,
    )
    outcome.warnings = [f"{registry.subnets_prefix}{named(bad.key)} holds no valid lease and was skipped: {bad.reason}"
                        for bad in result.malformed]
    env = SubnetEnv.for_lease(config.network, lease.subnet, mtu, params.ip_masq)
    outcome.bip = str(env.subnet)
    if params.subnet_file:
        _update_subnet_file(outcome, params.subnet_file, before, env, dry_run)
    return outcome


def _read_subnet_file(path: str | None) -> str | None:
    if not path:
        return None
    try:
        return read_text(path)
    except (OSError, UnicodeDecodeError):
        return None  # unreadable: treated as absent, and rewritten


def _update_subnet_file(outcome: LeaseOutcome, path: str, before: str | None, env: SubnetEnv,
                        dry_run: bool) -> None:
    outcome.subnet_file_before = before
    outcome.subnet_file_after = env.render()
    if outcome.subnet_file_before != outcome.subnet_file_after:
        outcome.changed = True
        if not dry_run:
            write_subnet_env(path, env)


def _parse_subnet(text: str) -> netaddr.IPNetwork:
    try:
        net = netaddr.IPNetwork(text, version=4)
    except (netaddr.AddrFormatError, ValueError):
        raise LeaseError(f"subnet {text!r} is not a valid IPv4 CIDR such as 10.5.72.0/24") from None
    if net.ip != net.network:
        raise LeaseError(f"subnet {text!r} has host bits set; did you mean {net.cidr}?")
    return net
