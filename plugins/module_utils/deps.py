"""The engine's third-party imports, in one place.

Modules report a missing package with missing_required_lib instead of an ImportError
traceback, so nothing else in the engine imports these packages directly.
"""

from __future__ import annotations

from typing import Any

MISSING: dict[str, str] = {}  # pip package name -> import error

try:
    import netaddr  # pylint: disable=unused-import
except ImportError as exc:
    netaddr: Any = None  # type: ignore[no-redef]
    MISSING["netaddr"] = str(exc)

try:
    import etcd3  # pylint: disable=unused-import
    import etcd3.exceptions  # pylint: disable=unused-import
    import grpc  # pylint: disable=unused-import
except ImportError as exc:
    etcd3: Any = None  # type: ignore[no-redef]
    grpc: Any = None  # type: ignore[no-redef]
    MISSING["python3-etcd3"] = str(exc)

try:
    import pyroute2  # pylint: disable=unused-import
    import pyroute2.netlink.generic.wireguard  # pylint: disable=unused-import  # the kernel's wireguard (genl)
except ImportError as exc:
    pyroute2: Any = None  # type: ignore[no-redef]
    MISSING["pyroute2"] = str(exc)


def missing(*packages: str) -> list[str]:
    """Which of the named pip packages cannot be imported here."""
    return [name for name in packages if name in MISSING]
