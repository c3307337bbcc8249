"""Pick the backend named by the network config."""

from __future__ import annotations

from ..errors import ConfigError
from ..subnet.config import NetworkConfig
from .base import Backend, LocalHost


def make_backend(config: NetworkConfig, host: LocalHost, *, udp_fast_path: bool = True,
                 udp_state_file: str | None = None) -> Backend:
    """The backend for config.backend.type, bound to this host (nothing is set up yet).

    udp_fast_path: carry GSO super-packets between our agents (False: only flannel's
    per-packet format, as upstream flanneld). udp_state_file: where the udp forwarder keeps
    its peer table, so a restarted agent forwards again before etcd answers."""
    kind = config.backend.type
    if kind == "vxlan":
        from .vxlan.backend import VxlanBackend

        return VxlanBackend(config, host)
    if kind == "host-gw":
        from .hostgw.backend import HostGwBackend

        return HostGwBackend(config, host)
    if kind == "udp":
        # Imported lazily: the udp forwarder (TUN, sockets, threads) is only loaded when used.
        from .udp.backend import UdpBackend

        return UdpBackend(config, host, gso=udp_fast_path, state_file=udp_state_file)
    raise ConfigError(f"backend type {kind!r} is not supported; use vxlan, host-gw or udp")
