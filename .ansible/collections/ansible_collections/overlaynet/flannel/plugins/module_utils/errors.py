"""Errors the engine raises; every message names the value and the fix."""

from __future__ import annotations


class FlannelError(Exception):
    """Base of every error a user can cause; str() is the whole message."""


class ConfigError(FlannelError):
    """The network config (given or stored) is invalid."""


class LeaseError(FlannelError):
    """A lease cannot be acquired, kept or read."""


class HostConflictError(LeaseError):
    """Another host holds the lease of this host's PublicIP: two hosts claim one address."""


class NetworkFullError(LeaseError):
    """Every subnet between SubnetMin and SubnetMax is taken."""


class EtcdUnavailableError(FlannelError):
    """No etcd endpoint answered within the timeout."""


class EtcdSetupError(FlannelError):
    """The etcd connection settings are unusable (TLS files, endpoints)."""


class HostNetworkError(FlannelError):
    """Host networking (interfaces, addresses, devices) is not as required."""


QUOTE_LIMIT = 200  # characters of an outside value a message or log line quotes


def named(text: str) -> str:
    """A name from outside (a key) in a message: as it is when short and printable, else shown()."""
    return text if text.isprintable() and len(text) <= QUOTE_LIMIT else shown(text)


def shown(value: object, limit: int = QUOTE_LIMIT) -> str:
    """How a value from outside (etcd, a file, the command line) appears in a message: its
    repr, cut to `limit` characters with the full length said, so a 64 KiB value never
    floods a log line."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = len(value) if isinstance(value, (str, bytes, bytearray, list, dict)) else len(text)
    return f"{text[:limit]}... ({size} {'bytes' if isinstance(value, (bytes, bytearray)) else 'long'})"
