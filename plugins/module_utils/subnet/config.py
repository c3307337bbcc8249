"""The cluster network config stored at <prefix>/config, with flannel's defaults and rules.

Keys are matched case-insensitively (Go's encoding/json does the same). `to_dict()` gives
back what was given (canonical key names, unknown keys kept); `effective()` gives every
value with the defaults applied, which is what two configs are compared on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from ..backends.registry import spec_for
from ..backends.spec import SECRET_SHOWN, BackendSpec
from ..defaults import STORED_DEFAULT_BACKEND
from ..deps import netaddr
from ..errors import ConfigError, shown
from .json_doc import load_json
from .range import SubnetRange, subnet_range

# Top-level keys (canonical spelling) this model knows.
_KNOWN_KEYS = ("Network", "SubnetLen", "SubnetMin", "SubnetMax", "Backend", "EnableIPv4",
               "EnableIPv6", "IPv6Network", "IPv6SubnetLen", "IPv6SubnetMin", "IPv6SubnetMax")


def _fold(doc: dict[str, Any], known: tuple[str, ...], where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split doc into (known keys under canonical names, unknown keys as given)."""
    by_lower = {k.lower(): k for k in known}
    found: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in doc.items():
        canonical = by_lower.get(str(key).lower())
        if canonical is None:
            extra[key] = value
        elif canonical in found:
            raise ConfigError(f"{where}: key {canonical!r} is given twice (keys are case-insensitive)")
        else:
            found[canonical] = value
    return found, extra


@dataclass(frozen=True)
class BackendConfig:
    """The Backend section: a type plus that type's fields."""

    type: str
    fields: dict[str, Any] = field(default_factory=dict)  # as given, canonical names
    extra: dict[str, Any] = field(default_factory=dict)  # unknown keys, kept for round trips

    @classmethod
    def from_dict(cls, doc: Any, default_type: str) -> BackendConfig:
        if doc is None:
            doc = {}
        if not isinstance(doc, dict):
            raise ConfigError(f"Backend must be a JSON object, got {shown(doc)}")
        type_keys = [k for k in doc if str(k).lower() == "type"]
        if len(type_keys) > 1:
            raise ConfigError(f"Backend: key 'Type' is given twice ({', '.join(type_keys)}; keys are case-insensitive)")
        type_key = type_keys[0] if type_keys else None
        btype = doc.get(type_key, default_type) if type_key else default_type
        spec = spec_for(btype)
        rest = {k: v for k, v in doc.items() if k != type_key}
        found, extra = _fold(rest, tuple(spec.fields), f"Backend ({btype})")
        for name, value in found.items():
            spec.fields[name].check(name, value)
        return cls(btype, found, extra)

    @property
    def spec(self) -> BackendSpec:
        return spec_for(self.type)

    def get(self, name: str) -> Any:
        """A field's value, defaults applied."""
        return self.fields.get(name, self.spec.default(name))

    @property
    def vni(self) -> int:
        return int(self.get("VNI"))  # an explicit 0 is flannel.0, as in flannel

    @property
    def port(self) -> int:
        # flannel treats Port 0 as "the backend's default".
        return int(self.get("Port") or self.spec.default("Port") or 0)

    @property
    def direct_routing(self) -> bool:
        return bool(self.get("DirectRouting"))

    def to_dict(self) -> dict[str, Any]:
        return {"Type": self.type, **self.fields, **self.extra}

    def effective(self) -> dict[str, Any]:
        doc = {"Type": self.type, **self.spec.defaults(), **self.fields, **self.extra}
        if "Port" in doc:
            doc["Port"] = self.port  # Port 0 means the default port
        return doc

    def shown(self) -> dict[str, Any]:
        """effective(), with each secret field (wireguard's PSK) as a placeholder: for logs,
        /stats and task output."""
        return {k: SECRET_SHOWN if k in self.spec.secrets() else v for k, v in self.effective().items()}


@dataclass(frozen=True)
class NetworkConfig:
    """A validated network config."""

    given: dict[str, Any]  # what was given, canonical key names, Backend as given
    ipv4: SubnetRange | None
    ipv6: SubnetRange | None
    backend: BackendConfig
    extra: dict[str, Any]

    @property
    def network(self) -> netaddr.IPNetwork:
        if self.ipv4 is None:
            raise ConfigError("this network config has EnableIPv4 false; IPv4-only code cannot use it")
        return self.ipv4.network

    @property
    def subnet_len(self) -> int:
        return self.network_range.subnet_len

    @property
    def subnet_min(self) -> netaddr.IPAddress:
        return self.network_range.subnet_min

    @property
    def subnet_max(self) -> netaddr.IPAddress:
        return self.network_range.subnet_max

    @property
    def network_range(self) -> SubnetRange:
        if self.ipv4 is None:
            raise ConfigError("this network config has EnableIPv4 false; IPv4-only code cannot use it")
        return self.ipv4

    @classmethod
    def from_json(cls, raw: bytes | str, where: str = "network config") -> NetworkConfig:
        doc = load_json(raw, ConfigError, where, "rewrite it (etcd_network_config with force: true)")
        return cls.from_dict(doc, where=where)

    @classmethod
    def from_dict(cls, doc: Any, where: str = "network config",
                  default_backend: str = STORED_DEFAULT_BACKEND) -> NetworkConfig:
        """Validate a config document. A missing Backend means udp, as in flannel."""
        if not isinstance(doc, dict):
            raise ConfigError(f"{where} must be a JSON object, got {shown(doc)}")
        found, extra = _fold(doc, _KNOWN_KEYS, where)
        enable_v4 = _bool(found, "EnableIPv4", True)
        enable_v6 = _bool(found, "EnableIPv6", False)
        if not enable_v4 and not enable_v6:
            raise ConfigError(f"{where}: EnableIPv4 and EnableIPv6 are both false; enable at least one")
        ipv4 = ipv6 = None
        if enable_v4:
            if found.get("Network") in (None, ""):
                raise ConfigError(f"{where}: Network is required, e.g. \"10.5.0.0/16\"")
            ipv4 = subnet_range(4, found.get("Network"), found.get("SubnetLen"),
                                found.get("SubnetMin"), found.get("SubnetMax"), "")
        if enable_v6:
            if found.get("IPv6Network") in (None, ""):
                raise ConfigError(f"{where}: EnableIPv6 is true but IPv6Network is missing")
            ipv6 = subnet_range(6, found.get("IPv6Network"), found.get("IPv6SubnetLen"),
                                found.get("IPv6SubnetMin"), found.get("IPv6SubnetMax"), "IPv6")
        backend = BackendConfig.from_dict(found.get("Backend"), default_backend)
        given = dict(found)
        if "Backend" in given or default_backend != STORED_DEFAULT_BACKEND:
            # Stored without a Backend, the config would read back as udp.
            given["Backend"] = backend.to_dict()
        config = cls(given, ipv4, ipv6, backend, extra)
        problem = backend.spec.config_problem(config)
        if problem is not None:
            raise ConfigError(f"{where}: {problem}")
        return config

    def to_dict(self) -> dict[str, Any]:
        """The config as given (canonical names), ready to store."""
        return {**self.given, **self.extra}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def effective(self) -> dict[str, Any]:
        """Every value with defaults applied; equal effective() means the same network."""
        doc: dict[str, Any] = {"EnableIPv4": self.ipv4 is not None, "EnableIPv6": self.ipv6 is not None}
        if self.ipv4 is not None:
            doc.update(self.ipv4.as_dict(""))
        if self.ipv6 is not None:
            doc.update(self.ipv6.as_dict("IPv6"))
        doc["Backend"] = self.backend.effective()
        doc.update(self.extra)
        return doc

    def shown(self) -> dict[str, Any]:
        """effective() with the Backend's secrets hidden (BackendConfig.shown)."""
        return {**self.effective(), "Backend": self.backend.shown()}

    def digest(self) -> str:
        """A SHA-256 of effective(), secrets included: equal digests mean the same network and the
        same secrets. shown() cannot tell two PSKs apart; the digest can, and reveals neither."""
        canonical = json.dumps(self.effective(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _bool(found: dict[str, Any], name: str, default: bool) -> bool:
    value = found.get(name, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{name} {shown(value)} must be true or false")
    return value
