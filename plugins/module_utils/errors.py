"""Errors the engine raises; every message names the value and the fix."""

from __future__ import annotations


class FlannelError(Exception):
    """Base of every error a user can cause; str() is the whole message."""


class ConfigError(FlannelError):
    """The network config (given or stored) is invalid."""


class LeaseError(FlannelError):
    """A lease cannot be acquired, kept or read."""


class NetworkFullError(LeaseError):
    """Every subnet between SubnetMin and SubnetMax is taken."""


class EtcdUnavailableError(FlannelError):
    """No etcd endpoint answered within the timeout."""


class EtcdSetupError(FlannelError):
    """The etcd connection settings are unusable (TLS files, endpoints)."""


class HostNetworkError(FlannelError):
    """Host networking (interfaces, addresses, devices) is not as required."""
