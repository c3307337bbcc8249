"""Pick the backend named by the network config."""

from __future__ import annotations

from ..errors import ConfigError
from ..netconfig import NetworkConfig
from .base import Backend, LocalHost


def make_backend(config: NetworkConfig, host: LocalHost) -> Backend:
    """The backend for config.backend.type, bound to this host (nothing is set up yet)."""
    kind = config.backend.type
    if kind == "vxlan":
        from .vxlan import VxlanBackend

        return VxlanBackend(config, host)
    if kind == "host-gw":
        from .hostgw import HostGwBackend

        return HostGwBackend(config, host)
    if kind == "udp":
        # Imported lazily: the udp forwarder (TUN, sockets, threads) is only loaded when used.
        from .udp import UdpBackend

        return UdpBackend(config, host)
    raise ConfigError(f"backend type {kind!r} is not supported; use vxlan, host-gw or udp")
