"""One etcd connection over the `etcd3` API, with failover between endpoints.

Only `etcd3.client(...)` is used (no MultiEndpointEtcd3Client), so the code runs with
Debian's python3-etcd3 (0.12) as with the maintained fork on PyPI. Every failure a user
can cause ends in an EtcdUnavailableError / EtcdSetupError naming the endpoint and the fix.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from ..defaults import DEFAULT_ENDPOINTS, DEFAULT_ETCD_TIMEOUT
from ..deps import MISSING, etcd3, grpc
from ..errors import EtcdSetupError, EtcdUnavailableError
from .client import EtcdClient

T = TypeVar("T")
_SYSTEM_CA = "/etc/ssl/certs/ca-certificates.crt"


@dataclass(frozen=True)
class Endpoint:
    url: str
    host: str
    port: int
    secure: bool


@dataclass(frozen=True)
class EtcdSettings:
    endpoints: tuple[str, ...] = DEFAULT_ENDPOINTS
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = DEFAULT_ETCD_TIMEOUT

    def parsed_endpoints(self) -> list[Endpoint]:
        if not self.endpoints:
            raise EtcdSetupError("etcd_endpoints is empty; give at least one, e.g. http://127.0.0.1:2379")
        return [parse_endpoint(url) for url in self.endpoints]


def parse_endpoint(url: str) -> Endpoint:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EtcdSetupError(
            f"etcd endpoint {url!r} is not a URL like http://10.0.0.1:2379 or https://etcd.example:2379"
        )
    try:
        port = parts.port or 2379
    except ValueError:
        raise EtcdSetupError(f"etcd endpoint {url!r} has an invalid port") from None
    return Endpoint(url, parts.hostname, port, parts.scheme == "https")


def _check_readable(option: str, path: str | None) -> None:
    if path is None:
        return
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise EtcdSetupError(
            f"{option} {path!r} cannot be read: {exc.strerror}; check the path and permissions"
        ) from None


class EtcdConnection:
    """Calls run against the current endpoint; on an outage the next endpoint is tried."""

    def __init__(self, settings: EtcdSettings) -> None:
        if etcd3 is None:
            missing = MISSING["python3-etcd3"]
            raise EtcdSetupError(f"the etcd3 package is missing ({missing}); pip install python3-etcd3")
        self.settings = settings
        self.endpoints = settings.parsed_endpoints()
        _check_readable("etcd_ca_file", settings.ca_file)
        _check_readable("etcd_cert_file", settings.cert_file)
        _check_readable("etcd_key_file", settings.key_file)
        if (settings.cert_file is None) != (settings.key_file is None):
            raise EtcdSetupError("etcd_cert_file and etcd_key_file must be given together")
        if settings.cert_file and not any(ep.secure for ep in self.endpoints):
            raise EtcdSetupError("a client certificate was given but no endpoint is https://")
        self._current = 0
        self._client: EtcdClient | None = None

    @property
    def endpoint(self) -> Endpoint:
        return self.endpoints[self._current]

    def _connect(self, ep: Endpoint) -> EtcdClient:
        kwargs: dict[str, Any] = {"host": ep.host, "port": ep.port, "timeout": self.settings.timeout}
        if ep.secure:
            ca = self.settings.ca_file or (_SYSTEM_CA if os.path.exists(_SYSTEM_CA) else None)
            if ca is None:
                raise EtcdSetupError(f"endpoint {ep.url} is https but no CA is known; set etcd_ca_file")
            kwargs.update(ca_cert=ca, cert_cert=self.settings.cert_file, cert_key=self.settings.key_file)
        if self.settings.username:
            kwargs.update(user=self.settings.username, password=self.settings.password or "")
        return etcd3.client(**kwargs)

    def call(self, operation: Callable[[EtcdClient], T]) -> T:
        """Run operation(client); fail over through every endpoint once before giving up."""
        errors: list[str] = []
        for _attempt in range(len(self.endpoints)):
            ep = self.endpoint
            try:
                if self._client is None:
                    self._client = self._connect(ep)
                return operation(self._client)
            except EtcdSetupError:
                raise
            except Exception as exc:  # noqa: BLE001 - classified below, re-raised when not an outage
                if not _is_outage(exc):
                    raise _translate(exc, ep) from None
                errors.append(f"{ep.url}: {_describe(exc)}")
                self._drop_client()
                self._current = (self._current + 1) % len(self.endpoints)
        raise EtcdUnavailableError(
            f"no etcd endpoint answered within {self.settings.timeout:g}s ({'; '.join(errors)}); "
            "check etcd_endpoints, that etcd is running and reachable, and the TLS settings"
        )

    def client(self) -> EtcdClient:
        """The live client (connecting if needed), for streams such as watches."""
        return self.call(lambda client: client)

    def _drop_client(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # noqa: BLE001 - closing a broken channel may fail; nothing to do
                pass
            self._client = None

    def close(self) -> None:
        self._drop_client()


def _is_outage(exc: Exception) -> bool:
    if isinstance(exc, (etcd3.exceptions.ConnectionFailedError, etcd3.exceptions.ConnectionTimeoutError)):
        return True
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        return exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    return False


def _describe(exc: Exception) -> str:
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "details"):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc) or type(exc).__name__


def _translate(exc: Exception, ep: Endpoint) -> Exception:
    """Errors that are not outages: authentication and permission, reported plainly."""
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        code = exc.code()
        if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
                    grpc.StatusCode.INVALID_ARGUMENT) and "auth" in (exc.details() or "").lower():
            return EtcdSetupError(
                f"etcd at {ep.url} rejected the credentials ({exc.details()}); check etcd_username/etcd_password"
            )
        return EtcdUnavailableError(f"etcd at {ep.url} failed: {code.name}: {exc.details()}")
    return exc
