"""The etcd connection options every module shares: one spec (plain data) and its reader.

The matching documentation is the doc fragment overlaynet.flannel.etcd.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..defaults import DEFAULT_ENDPOINTS, DEFAULT_ETCD_TIMEOUT, DEFAULT_PREFIX
from .connection import EtcdConnection, EtcdSettings
from .registry import LeaseRegistry

ETCD_ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "etcd_endpoints": {"type": "list", "elements": "str", "default": list(DEFAULT_ENDPOINTS)},
    "etcd_prefix": {"type": "str", "default": DEFAULT_PREFIX},
    "etcd_ca_file": {"type": "path"},
    "etcd_cert_file": {"type": "path"},
    "etcd_key_file": {"type": "path", "no_log": False},
    "etcd_username": {"type": "str"},
    "etcd_password": {"type": "str", "no_log": True},
    "etcd_timeout": {"type": "float", "default": DEFAULT_ETCD_TIMEOUT},
}


def etcd_settings(params: dict[str, Any]) -> EtcdSettings:
    return EtcdSettings(
        endpoints=tuple(params["etcd_endpoints"]),
        ca_file=params.get("etcd_ca_file"),
        cert_file=params.get("etcd_cert_file"),
        key_file=params.get("etcd_key_file"),
        username=params.get("etcd_username"),
        password=params.get("etcd_password"),
        timeout=float(params.get("etcd_timeout") or DEFAULT_ETCD_TIMEOUT),
    )


@contextmanager
def lease_registry(params: dict[str, Any]) -> Iterator[LeaseRegistry]:
    """The lease registry the module's etcd options point at; the connection closes afterwards."""
    conn = EtcdConnection(etcd_settings(params))
    try:
        yield LeaseRegistry(conn, params["etcd_prefix"])
    finally:
        conn.close()
