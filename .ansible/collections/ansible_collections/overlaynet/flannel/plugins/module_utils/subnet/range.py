"""One address family's part of the config: Network, SubnetLen, SubnetMin, SubnetMax.

flannel's rules, the same for both families (bits = 32 or 128):
- a network longer than bits-4 (/28 for IPv4) is too small;
- default SubnetLen: 24 (IPv6: 64) when that leaves at least four subnets, else prefix+2;
- an explicit SubnetLen above bits-2 (/30) or below prefix+2 (fewer than four subnets) fails;
- SubnetMin defaults to the second subnet (the first is skipped), SubnetMax to the last;
  both must lie in the network and be aligned to SubnetLen.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..deps import netaddr
from ..errors import ConfigError, shown

_DEFAULT_LEN = {4: 24, 6: 64}


@dataclass(frozen=True)
class SubnetRange:
    network: netaddr.IPNetwork
    subnet_len: int
    subnet_min: netaddr.IPAddress
    subnet_max: netaddr.IPAddress

    @property
    def step(self) -> int:
        return 1 << ((32 if self.network.version == 4 else 128) - self.subnet_len)

    @property
    def count(self) -> int:
        """How many subnets lie between SubnetMin and SubnetMax, inclusive."""
        return (int(self.subnet_max) - int(self.subnet_min)) // self.step + 1

    def subnet_at(self, index: int) -> netaddr.IPNetwork:
        """The index-th subnet from SubnetMin."""
        first = int(self.subnet_min) + index * self.step
        return netaddr.IPNetwork((first, self.subnet_len), version=self.network.version)

    def subnets(self) -> Iterator[netaddr.IPNetwork]:
        for index in range(self.count):
            yield self.subnet_at(index)

    def fits(self, subnet: netaddr.IPNetwork) -> bool:
        """True when subnet is one this config could hand out."""
        return (
            subnet.version == self.network.version
            and subnet.prefixlen == self.subnet_len
            and subnet.ip == subnet.network
            and int(self.subnet_min) <= int(subnet.network) <= int(self.subnet_max)
        )

    def as_dict(self, key_prefix: str) -> dict[str, Any]:
        return {
            f"{key_prefix}Network": str(self.network),
            f"{key_prefix}SubnetLen": self.subnet_len,
            f"{key_prefix}SubnetMin": str(self.subnet_min),
            f"{key_prefix}SubnetMax": str(self.subnet_max),
        }


def subnet_range(version: int, network: Any, subnet_len: Any, subnet_min: Any, subnet_max: Any,
                 key_prefix: str) -> SubnetRange:
    """Validate one family's values and apply flannel's defaults."""
    bits = 32 if version == 4 else 128
    net = _parse_network(version, network, f"{key_prefix}Network")
    ones = net.prefixlen
    name = f"{key_prefix}SubnetLen"
    if subnet_len is not None and (isinstance(subnet_len, bool) or not isinstance(subnet_len, int)):
        raise ConfigError(f"{name} {shown(subnet_len)} must be a whole number")
    if subnet_len in (None, 0):  # 0 is flannel's "unset"
        if ones > bits - 4:
            raise ConfigError(
                f"{key_prefix}Network {network} is too small: the smallest useful network is /{bits - 4}"
                f" (it must hold four subnets of /{bits - 2})"
            )
        length = _DEFAULT_LEN[version] if ones <= _DEFAULT_LEN[version] - 2 else ones + 2
    else:
        if subnet_len > bits - 2:
            raise ConfigError(f"{name} {subnet_len} is too long: use /{bits - 2} or shorter")
        if subnet_len < ones + 2:
            raise ConfigError(
                f"{name} {subnet_len} leaves fewer than four subnets in {network}: use {ones + 2} or longer"
            )
        length = subnet_len
    step = 1 << (bits - length)
    low = _parse_bound(version, subnet_min, net, f"{key_prefix}SubnetMin", length)
    high = _parse_bound(version, subnet_max, net, f"{key_prefix}SubnetMax", length)
    if low is None:
        low = netaddr.IPAddress(int(net.network) + step, version=version)
    if high is None:
        high = netaddr.IPAddress(int(net.broadcast if version == 4 else net.last) + 1 - step, version=version)
    if int(low) > int(high):
        raise ConfigError(
            f"{key_prefix}SubnetMin {low} is above {key_prefix}SubnetMax {high}; swap or widen them"
        )
    return SubnetRange(net, length, low, high)


def _parse_network(version: int, value: Any, name: str) -> netaddr.IPNetwork:
    if not isinstance(value, str):
        raise ConfigError(f"{name} {shown(value)} must be a CIDR string such as \"10.5.0.0/16\"")
    try:
        addr, _slash, length = value.partition("/")
        if not re.fullmatch(r"[0-9]{1,3}", length):  # no signs, spaces or non-ASCII digits
            raise ValueError(value)
        ip = netaddr.IPAddress(addr, version=version, flags=netaddr.INET_PTON)
        net = netaddr.IPNetwork(f"{ip}/{int(length)}", version=version)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        example = "10.5.0.0/16" if version == 4 else "fd00:5::/48"
        raise ConfigError(f"{name} {shown(value)} is not a valid IPv{version} CIDR, e.g. \"{example}\"") from None
    if net.ip != net.network:
        raise ConfigError(f"{name} {shown(value)} has host bits set; did you mean {net.cidr}?")
    return net


def _parse_bound(version: int, value: Any, net: netaddr.IPNetwork, name: str, length: int) -> netaddr.IPAddress | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{name} {shown(value)} must be an IPv{version} address string")
    try:
        addr = netaddr.IPAddress(value, version=version, flags=netaddr.INET_PTON)
    except (netaddr.AddrFormatError, ValueError):
        raise ConfigError(f"{name} {shown(value)} is not a valid IPv{version} address") from None
    if addr not in net:
        raise ConfigError(f"{name} {value} is outside the network {net}; pick an address inside it")
    aligned = netaddr.IPNetwork(f"{addr}/{length}", version=version).network
    if aligned != addr:
        raise ConfigError(f"{name} {value} is not on a /{length} boundary; did you mean {aligned}?")
    return addr
