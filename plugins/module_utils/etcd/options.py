"""The etcd connection options every module shares: one spec (plain data) and its reader.

The matching documentation is the doc fragment overlaynet.flannel.etcd.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .connection import DEFAULT_ENDPOINTS, EtcdConnection, EtcdSettings
from .registry import DEFAULT_PREFIX, LeaseStore

ETCD_ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "etcd_endpoints": {"type": "list", "elements": "str", "default": list(DEFAULT_ENDPOINTS)},
    "etcd_prefix": {"type": "str", "default": DEFAULT_PREFIX},
    "etcd_ca_file": {"type": "path"},
    "etcd_cert_file": {"type": "path"},
    "etcd_key_file": {"type": "path", "no_log": False},
    "etcd_username": {"type": "str"},
    "etcd_password": {"type": "str", "no_log": True},
    "etcd_timeout": {"type": "float", "default": 5.0},
}


def etcd_settings(params: dict[str, Any]) -> EtcdSettings:
    return EtcdSettings(
        endpoints=tuple(params["etcd_endpoints"]),
        ca_file=params.get("etcd_ca_file"),
        cert_file=params.get("etcd_cert_file"),
        key_file=params.get("etcd_key_file"),
        username=params.get("etcd_username"),
        password=params.get("etcd_password"),
        timeout=float(params.get("etcd_timeout") or 5.0),
    )


@contextmanager
def lease_store(params: dict[str, Any]) -> Iterator[LeaseStore]:
    """The lease store the module's etcd options point at; the connection closes afterwards."""
    conn = EtcdConnection(etcd_settings(params))
    try:
        yield LeaseStore(conn, params["etcd_prefix"])
    finally:
        conn.close()
