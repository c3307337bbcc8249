"""What the etcd_network_config module does: make <prefix>/config what was asked, safely."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, FlannelError
from ..etcd.registry import LeaseRegistry
from ..subnet.config import NetworkConfig


@dataclass
class ConfigOutcome:
    changed: bool
    before: str | None  # stored JSON text before (None when absent)
    after: str | None  # stored JSON text after (None when absent)
    config: dict[str, Any] | None  # the stored document after the run
    effective: dict[str, Any] | None  # the same with every default applied
    stranded: list[str] = field(default_factory=list)  # lease keys outside the new config


def desired_document(network: str, subnet_len: int | None = None, subnet_min: str | None = None,
                     subnet_max: str | None = None, backend: dict[str, Any] | None = None) -> dict[str, Any]:
    """flannel's config JSON from module-style options; Backend always explicit (vxlan by default)."""
    backend = backend or {}
    doc: dict[str, Any] = {"Network": network}
    for key, value in (("SubnetLen", subnet_len), ("SubnetMin", subnet_min), ("SubnetMax", subnet_max)):
        if value is not None:
            doc[key] = value
    section: dict[str, Any] = {"Type": backend.get("type") or "vxlan"}
    for option, key in (("vni", "VNI"), ("port", "Port"), ("direct_routing", "DirectRouting")):
        if backend.get(option) is not None:
            section[key] = backend[option]
    doc["Backend"] = section
    return doc


def ensure_network_config(registry: LeaseRegistry, state: str, desired: dict[str, Any] | None, force: bool,
                          dry_run: bool) -> ConfigOutcome:
    raw, mod_revision = registry.read_config_raw()
    before_text = raw.decode("utf-8", "replace") if raw is not None else None
    current: NetworkConfig | None = None
    if raw is not None:
        try:
            current = NetworkConfig.from_json(raw, where=f"stored config at {registry.config_key}")
        except ConfigError as exc:
            if not force:
                raise ConfigError(f"{exc}; set force: true to overwrite it") from None

    if state == "absent":
        if raw is None:
            return ConfigOutcome(False, None, None, None, None)
        leases = registry.list_leases(strict=False)[0]
        if leases and not force:
            raise ConfigError(
                f"{len(leases)} subnet lease(s) still exist under {registry.subnets_prefix}; removing the config "
                "would strand them. Release them first or set force: true"
            )
        if not dry_run:
            registry.delete_config()
        return ConfigOutcome(True, before_text, None, None, None, [lease.key for lease in leases])

    if desired is None:
        raise ConfigError("network is required when state is present")
    wanted = NetworkConfig.from_dict(desired, where="requested config", default_backend="vxlan")
    if current is not None and current.effective() == wanted.effective():
        return ConfigOutcome(False, before_text, before_text, json.loads(raw), current.effective())

    leases = registry.list_leases(strict=False)[0]
    stranded = [lease.key for lease in leases if not wanted.network_range.fits(lease.subnet)]
    if stranded and not force:
        raise ConfigError(
            f"the new config would strand {len(stranded)} existing lease(s) ({', '.join(sorted(stranded)[:5])}"
            f"{', ...' if len(stranded) > 5 else ''}) outside {wanted.network} /{wanted.subnet_len} "
            f"{wanted.subnet_min}..{wanted.subnet_max}; keep the old range or set force: true"
        )
    after_text = wanted.to_json()
    if not dry_run and not registry.put_config(wanted, mod_revision):
        raise FlannelError(f"{registry.config_key} was changed by someone else during this run; run again")
    return ConfigOutcome(True, before_text, after_text, wanted.to_dict(), wanted.effective(), stranded)
