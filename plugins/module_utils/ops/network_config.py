"""What the etcd_network_config module does: make <prefix>/config what was asked, safely."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..defaults import DEFAULT_BACKEND
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
    secrets: list[str] = field(default_factory=list)  # values never to be shown (a PSK, stored or wanted)
    digest: str | None = None  # NetworkConfig.digest() of the config after the run (None when absent)


def desired_document(network: str, subnet_len: int | None = None, subnet_min: str | None = None,
                     subnet_max: str | None = None, backend: dict[str, Any] | None = None) -> dict[str, Any]:
    """flannel's config JSON from module-style options; Backend always explicit (vxlan by default)."""
    backend = backend or {}
    doc: dict[str, Any] = {"Network": network}
    for key, value in (("SubnetLen", subnet_len), ("SubnetMin", subnet_min), ("SubnetMax", subnet_max)):
        if value is not None:
            doc[key] = value
    section: dict[str, Any] = {"Type": backend.get("type") or DEFAULT_BACKEND}
    for option, key in (("vni", "VNI"), ("port", "Port"), ("direct_routing", "DirectRouting"),
                        ("listen_port", "ListenPort"), ("psk", "PSK"),
                        ("persistent_keepalive_interval", "PersistentKeepaliveInterval"), ("mode", "Mode")):
        if backend.get(option) is not None:
            section[key] = backend[option]
    doc["Backend"] = section
    return doc


@dataclass(frozen=True)
class _Stored:
    raw: bytes | None  # the stored bytes (None: no config)
    mod_revision: int
    config: NetworkConfig | None  # None when absent, or malformed and force is set

    @property
    def text(self) -> str | None:
        return self.raw.decode("utf-8", "replace") if self.raw is not None else None


def ensure_network_config(registry: LeaseRegistry, state: str, desired: dict[str, Any] | None, force: bool,
                          dry_run: bool) -> ConfigOutcome:
    stored = _read_stored(registry, force)
    if state == "absent":
        return _ensure_absent(registry, stored, force, dry_run)
    if desired is None:
        raise ConfigError("network is required when state is present")
    wanted = NetworkConfig.from_dict(desired, where="requested config", default_backend=DEFAULT_BACKEND)
    secrets = _secrets(stored.config, wanted)
    if stored.config is not None and stored.config.effective() == wanted.effective():
        return ConfigOutcome(False, stored.text, stored.text, json.loads(stored.raw or b"null"),
                             stored.config.effective(), secrets=secrets, digest=stored.config.digest())
    stranded = _stranded(registry, wanted, force)
    if not dry_run and not registry.put_config(wanted, stored.mod_revision):
        raise FlannelError(f"{registry.config_key} was changed by someone else during this run; run again")
    return ConfigOutcome(True, stored.text, wanted.to_json(), wanted.to_dict(), wanted.effective(), stranded,
                         secrets, wanted.digest())


def _secrets(*configs: NetworkConfig | None) -> list[str]:
    """The values of the configs' secret Backend fields (the module hides them in its output)."""
    found = set()
    for config in configs:
        if config is not None:
            for name in config.backend.spec.secrets():
                value = config.backend.get(name)
                if isinstance(value, str) and value:
                    found.add(value)
    return sorted(found)


def _read_stored(registry: LeaseRegistry, force: bool) -> _Stored:
    raw, mod_revision = registry.read_config_raw()
    if raw is None:
        return _Stored(None, mod_revision, None)
    try:
        return _Stored(raw, mod_revision, NetworkConfig.from_json(raw, where=f"stored config at {registry.config_key}"))
    except ConfigError as exc:
        if not force:
            raise ConfigError(f"{exc}; set force: true to overwrite it") from None
        return _Stored(raw, mod_revision, None)


def _ensure_absent(registry: LeaseRegistry, stored: _Stored, force: bool, dry_run: bool) -> ConfigOutcome:
    if stored.raw is None:
        return ConfigOutcome(False, None, None, None, None)
    leases = registry.list_leases().leases
    if leases and not force:
        raise ConfigError(
            f"{len(leases)} subnet lease(s) still exist under {registry.subnets_prefix}; removing the config "
            "would strand them. Release them first or set force: true"
        )
    if not dry_run:
        registry.delete_config()
    return ConfigOutcome(True, stored.text, None, None, None, [lease.key for lease in leases],
                         _secrets(stored.config))


def _stranded(registry: LeaseRegistry, wanted: NetworkConfig, force: bool) -> list[str]:
    """Keys of the leases the new config would leave outside its range (refused without force)."""
    leases = registry.list_leases().leases
    stranded = [lease.key for lease in leases if not wanted.network_range.fits(lease.subnet)]
    if stranded and not force:
        raise ConfigError(
            f"the new config would strand {len(stranded)} existing lease(s) ({', '.join(sorted(stranded)[:5])}"
            f"{', ...' if len(stranded) > 5 else ''}) outside {wanted.network} /{wanted.subnet_len} "
            f"{wanted.subnet_min}..{wanted.subnet_max}; keep the old range or set force: true"
        )
    return stranded
