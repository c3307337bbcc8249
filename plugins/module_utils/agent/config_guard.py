"""The agent runs the network config that is in etcd: a change it sees ends it, so that it
starts again on the new one (systemd's Restart=always, exit code EXIT_CONFIG_CHANGED) —
unless only fields its backend applies in place changed (``SPEC.live_fields``, e.g. vxlan's
DirectRouting): that config is handed back to the agent to apply, with no restart.

The config key is watched (every agent sees a change at the same moment, with or without
Ansible) and read at every etcd probe (daemon.py), which covers a broken or late watch.
Compared is what the config *means* (``NetworkConfig.effective()``: defaults applied, Port 0
= the default port), so a config rewritten with other spelling or key order changes nothing.
A config that is deleted or does not parse is not followed: the agent keeps the one it runs,
says so once per value, and picks up the next valid one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from ..backends.spec import SECRET_SHOWN
from ..errors import ConfigError, shown
from ..subnet.config import NetworkConfig

EXIT_CONFIG_CHANGED = 4
_UNSET = object()
log = logging.getLogger("flannel-agent")


class ConfigChanged(Exception):
    """The network config in etcd now means something else than the one this agent runs."""


def _flat(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def changed_settings(running: NetworkConfig, new: NetworkConfig) -> dict[str, str]:
    """{'Backend.Type': "'vxlan' -> 'udp'"}, one per setting whose effective value differs."""
    old_flat, new_flat = _flat(running.effective()), _flat(new.effective())
    secret = {f"Backend.{name}" for name in running.backend.spec.secrets() | new.backend.spec.secrets()}

    def value(doc: dict[str, Any], name: str) -> str:
        if name not in doc:
            return "unset"
        return SECRET_SHOWN if name in secret else shown(doc[name])  # a PSK change is told, not shown

    names = sorted(set(old_flat) | set(new_flat))
    return {name: f"{value(old_flat, name)} -> {value(new_flat, name)}"
            for name in names if old_flat.get(name, _UNSET) != new_flat.get(name, _UNSET)}


def _lines(changed: dict[str, str]) -> list[str]:
    return [f"{name} {change}" for name, change in changed.items()]


def differences(running: NetworkConfig, new: NetworkConfig) -> list[str]:
    """'Backend.Type vxlan -> udp', one per setting whose effective value differs."""
    return _lines(changed_settings(running, new))


def applies_live(running: NetworkConfig, changed: Iterable[str]) -> bool:
    """Whether the running backend can take every changed setting in place."""
    live = {f"Backend.{name}" for name in running.backend.spec.live_fields}
    names = set(changed)
    return bool(names) and names <= live


class ConfigGuard:
    """Checks each config value read from etcd against the config this agent runs."""

    def __init__(self, running: NetworkConfig, key: str) -> None:
        self.running = running
        self.key = key
        self._seen: bytes | None = running.to_json().encode()
        self._reported: bytes | None = None  # the last value we logged about (once per value)

    def check(self, raw: bytes | None) -> NetworkConfig | None:
        """Raise ConfigChanged when *raw* (the key's value; None: absent) means another network;
        return the new config when the backend applies the change in place (the caller does,
        then calls accept()); None when nothing is to be done."""
        if raw is not None and raw == self._seen:
            return None
        if raw is None:
            self._once(b"", "the network config at %s was deleted; running on with the one we started with",
                       self.key)
            return None
        try:
            new = NetworkConfig.from_json(raw, where=f"network config at {self.key}")
        except ConfigError as exc:
            self._once(raw, "ignoring the network config at %s: %s; running on with the one we started with",
                       self.key, exc)
            return None
        changed = changed_settings(self.running, new)
        if not changed:
            self._seen = raw  # the same network, written differently
            return None
        said = "; ".join(_lines(changed))
        if applies_live(self.running, changed):
            log.info("the network config at %s changed (%s); applying it in place", self.key, said)
            return new
        raise ConfigChanged(f"the network config at {self.key} changed ({said}); "
                            f"exiting with code {EXIT_CONFIG_CHANGED} to start again on it")

    def accept(self, applied: NetworkConfig) -> None:
        """The agent runs *applied* now (a change applied in place)."""
        self.running = applied
        self._seen = applied.to_json().encode()

    def _once(self, value: bytes, message: str, *args: Any) -> None:
        if value != self._reported:
            self._reported = value
            log.warning(message, *args)
