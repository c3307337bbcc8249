"""What the docker_bridge_subnet module does: point docker at the leased subnet."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..deps import netaddr
from ..errors import HostNetworkError
from ..files import read_text, write_file_atomic
from ..host.bridge import bridge_ipv4, ensure_bridge_address
from ..host.docker_options import DockerBridgeOptions, merge_daemon_json, render_docker_opts
from ..subnet.env import read_subnet_env


@dataclass
class FileChange:
    path: str
    before: str | None
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after


@dataclass
class BridgeOutcome:
    bip: str
    mtu: int
    ip_masq: bool  # docker's --ip-masq value
    changed: bool = False
    restart_required: bool = False
    bridge_changed: bool = False
    files: list[FileChange] = field(default_factory=list)


def bridge_options(subnet_file: str | None, subnet: str | None, mtu: int | None,
                   ip_masq: bool | None) -> DockerBridgeOptions:
    """Explicit values win; anything not given comes from the subnet file."""
    env = read_subnet_env(subnet_file) if subnet_file else None
    if subnet is not None:
        bip = _bridge_address(subnet)
    elif env is not None:
        bip = env.subnet
    else:
        raise HostNetworkError(
            f"subnet file {subnet_file!r} is missing or holds no lease; run flannel_lease first or give subnet"
        )
    the_mtu = mtu if mtu is not None else (env.mtu if env is not None else 1500)
    flannel_masq = ip_masq if ip_masq is not None else (env.ip_masq if env is not None else False)
    return DockerBridgeOptions.from_flannel(str(bip), the_mtu, flannel_masq)


def _bridge_address(subnet: str) -> netaddr.IPNetwork:
    """An explicit subnet: the bridge's address in it (a network address means its first host)."""
    try:
        bip = netaddr.IPNetwork(subnet, version=4)
    except (netaddr.AddrFormatError, ValueError):
        raise HostNetworkError(f"subnet {subnet!r} is not an IPv4 CIDR such as 10.5.72.1/24") from None
    if bip.ip == bip.network:  # a network was given: docker wants the gateway address
        bip = netaddr.IPNetwork((int(bip.network) + 1, bip.prefixlen), version=4)
    return bip


@dataclass(frozen=True)
class DockerOptsFile:
    """An env file like mk-docker-opts.sh writes (its -d, -k, -i/-c and -m flags)."""

    path: str
    key: str = "DOCKER_OPTS"
    mode: str = "both"
    ip_masq: bool = True  # False: leave --ip-masq out (-m)


def ensure_docker_bridge(opts: DockerBridgeOptions, *, bridge: str, daemon_json: str | None,
                         docker_opts: DockerOptsFile | None, configure_bridge: bool, dry_run: bool) -> BridgeOutcome:
    outcome = BridgeOutcome(opts.bip, opts.mtu, opts.docker_ip_masq)
    if daemon_json:
        before = read_text(daemon_json)
        text = merge_daemon_json(before, opts, daemon_json)[1]
        outcome.files.append(FileChange(daemon_json, before, text))
    if docker_opts is not None:
        text = render_docker_opts(opts, docker_opts.key, docker_opts.mode, docker_opts.ip_masq)
        outcome.files.append(FileChange(docker_opts.path, read_text(docker_opts.path), text))
    for change in outcome.files:
        if change.changed and not dry_run:
            write_file_atomic(change.path, change.after)
    files_changed = any(change.changed for change in outcome.files)
    bip = netaddr.IPNetwork(opts.bip)
    live = bridge_ipv4(bridge)
    if configure_bridge:
        outcome.bridge_changed = ensure_bridge_address(bridge, bip, dry_run=dry_run)
    # docker reads bip/mtu/ip-masq only when it starts: a changed file, or a running
    # docker0 that carries another address, means docker must restart.
    outcome.restart_required = files_changed or (live is not None and live != [(str(bip.ip), bip.prefixlen)])
    outcome.changed = files_changed or outcome.bridge_changed
    return outcome
