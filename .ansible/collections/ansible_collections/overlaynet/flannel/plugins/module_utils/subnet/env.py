"""/run/flannel/subnet.env: written atomically (0644), read tolerantly, as flannel does."""

from __future__ import annotations

from dataclasses import dataclass

from ..deps import netaddr
from ..files import read_text, write_file_atomic


@dataclass(frozen=True)
class SubnetEnv:
    network: netaddr.IPNetwork
    subnet: netaddr.IPNetwork  # first host address of the lease, with the lease's prefix length
    mtu: int
    ip_masq: bool
    ipv6_network: netaddr.IPNetwork | None = None
    ipv6_subnet: netaddr.IPNetwork | None = None

    @classmethod
    def for_lease(cls, network: netaddr.IPNetwork, lease_subnet: netaddr.IPNetwork, mtu: int, ip_masq: bool,
                  ipv6_network: netaddr.IPNetwork | None = None,
                  ipv6_lease_subnet: netaddr.IPNetwork | None = None) -> SubnetEnv:
        v6 = _first_host(ipv6_lease_subnet) if ipv6_lease_subnet is not None else None
        return cls(network, _first_host(lease_subnet), mtu, ip_masq, ipv6_network, v6)

    @property
    def lease_subnet(self) -> netaddr.IPNetwork:
        return self.subnet.cidr

    def render(self) -> str:
        lines = [
            f"FLANNEL_NETWORK={self.network}",
            f"FLANNEL_SUBNET={self.subnet}",
        ]
        if self.ipv6_network is not None:
            lines.append(f"FLANNEL_IPV6_NETWORK={self.ipv6_network}")
        if self.ipv6_subnet is not None:
            lines.append(f"FLANNEL_IPV6_SUBNET={self.ipv6_subnet}")
        lines += [f"FLANNEL_MTU={self.mtu}", f"FLANNEL_IPMASQ={'true' if self.ip_masq else 'false'}"]
        return "\n".join(lines) + "\n"


def _first_host(subnet: netaddr.IPNetwork) -> netaddr.IPNetwork:
    return netaddr.IPNetwork((int(subnet.network) + 1, subnet.prefixlen), version=subnet.version)


def parse_env_text(text: str) -> dict[str, str]:
    """KEY=VALUE lines; comments, blanks, `export ` and quotes tolerated."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, _sep, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def read_subnet_env(path: str) -> SubnetEnv | None:
    """The file's values, or None when it is missing, unreadable or holds no usable lease."""
    try:
        text = read_text(path)
    except (OSError, UnicodeDecodeError):
        return None
    return None if text is None else parse_subnet_env(text)


def parse_subnet_env(text: str) -> SubnetEnv | None:
    """The values of a subnet.env text, or None when it does not hold a usable lease."""
    values = parse_env_text(text)
    try:
        network = netaddr.IPNetwork(values["FLANNEL_NETWORK"])
        subnet = netaddr.IPNetwork(values["FLANNEL_SUBNET"])
        mtu = int(values.get("FLANNEL_MTU", "1500"))
        v6net = netaddr.IPNetwork(values["FLANNEL_IPV6_NETWORK"]) if values.get("FLANNEL_IPV6_NETWORK") else None
        v6sub = netaddr.IPNetwork(values["FLANNEL_IPV6_SUBNET"]) if values.get("FLANNEL_IPV6_SUBNET") else None
    except (KeyError, ValueError, netaddr.AddrFormatError):
        return None
    return SubnetEnv(network, subnet, mtu, values.get("FLANNEL_IPMASQ", "false").lower() == "true", v6net, v6sub)


def write_subnet_env(path: str, env: SubnetEnv) -> bool:
    return write_file_atomic(path, env.render())
