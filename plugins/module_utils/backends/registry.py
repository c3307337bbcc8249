"""The backends, by Type: their facts (SPEC) at once, their implementation on demand.

Adding a backend: a package backends/<name>/ whose __init__.py defines SPEC (see spec.py)
and whose implementation class follows base.Backend, plus one entry in _PACKAGES.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from . import hostgw, udp, vxlan, wireguard
from .spec import BackendRuntime, BackendSpec

if TYPE_CHECKING:
    from ..subnet.config import NetworkConfig
    from .base import Backend, LocalHost

_PACKAGES = (vxlan, hostgw, udp, wireguard)
SPECS: dict[str, BackendSpec] = {package.SPEC.type: package.SPEC for package in _PACKAGES}
BACKEND_TYPES: tuple[str, ...] = tuple(SPECS)


def spec_for(backend_type: Any) -> BackendSpec:
    """The SPEC of a config's Backend.Type; ConfigError naming the known types otherwise."""
    spec = SPECS.get(backend_type) if isinstance(backend_type, str) else None
    if spec is None:
        raise ConfigError(f"backend type {backend_type!r} is not supported; use one of {', '.join(BACKEND_TYPES)}")
    return spec


def type_of_lease(lease_backend_type: str) -> str:
    """The backend a lease's BackendType names. flannel's udp leases carry none (""), ours
    may say "udp"; an unknown type is returned as it is (such a lease is nobody's peer)."""
    for spec in SPECS.values():
        if lease_backend_type in (spec.type, spec.lease_type):
            return spec.type
    return lease_backend_type


def same_backend(lease_type_a: str, lease_type_b: str) -> bool:
    """Whether two leases' BackendTypes name the same backend ("" and "udp" do)."""
    return type_of_lease(lease_type_a) == type_of_lease(lease_type_b)


def make_backend(config: NetworkConfig, host: LocalHost, runtime: BackendRuntime | None = None) -> Backend:
    """The backend for config.backend.type, bound to this host (nothing is set up yet)."""
    spec = spec_for(config.backend.type)
    package = next(p for p in _PACKAGES if p.SPEC is spec)
    module_name, _sep, class_name = spec.implementation.partition(":")
    # A dynamic import: only the chosen backend's code (and, for udp, its threads) is loaded.
    module = importlib.import_module(f"{package.__name__}.{module_name}")
    factory = getattr(module, class_name)
    return factory.create(config, host, runtime or BackendRuntime())
