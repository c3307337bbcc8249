"""One etcd connection over the `etcd3` API, with failover between endpoints.

Only `etcd3.client(...)` is used (no MultiEndpointEtcd3Client), so the code runs with
Debian's python3-etcd3 (0.12) as with the maintained fork on PyPI. Every failure a user
can cause ends in an EtcdUnavailableError / EtcdSetupError naming the endpoint and the fix
(failures.py reads the gRPC errors).

Authentication is ours, not the client's: etcd3 given user/password sends the token as
gRPC call credentials, which gRPC refuses on an http:// (insecure) channel. We call
etcd's Auth.Authenticate on the client's channel and put the token in the client's
per-call `metadata` (both etcd3 versions send it on every KV and Lease call; our watch
sends it too), so auth works over http:// and https:// alike. A token etcd has dropped
(--auth-token-ttl) is renewed once per call, and the call run again.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from ..defaults import DEFAULT_ENDPOINTS, DEFAULT_ETCD_TIMEOUT
from ..deps import MISSING, etcd3
from ..errors import EtcdSetupError, EtcdUnavailableError
from . import failures
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
        if settings.password is not None and not settings.username:
            raise EtcdSetupError("etcd_password is set but etcd_username is not; set both, or neither")
        self._current = 0
        self._client: EtcdClient | None = None
        # For the agent's metrics: requests an endpoint failed (each failover step counts),
        # and clients opened again after one was dropped.
        self.errors = 0
        self.reconnects = 0
        self._connected = False

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
        client: EtcdClient = etcd3.client(**kwargs)  # no user/password: see the module docstring
        try:
            self._use_token(client)
        except BaseException:
            client.close()
            raise
        return client

    def auth_metadata(self, channel: Any) -> tuple[tuple[str, str], ...] | None:
        """A fresh token as per-call metadata, from etcd's Authenticate on *channel*; None
        without a user. Only reads the settings, so any thread may call it (the watch does)."""
        if not self.settings.username:
            return None
        request = etcd3.etcdrpc.AuthenticateRequest(name=self.settings.username,
                                                    password=self.settings.password or "")
        token = etcd3.etcdrpc.AuthStub(channel).Authenticate(request, self.settings.timeout).token
        return (("token", token),)

    def _use_token(self, client: EtcdClient) -> None:
        client.metadata = self.auth_metadata(client.channel)
        client.call_credentials = None  # what gRPC refuses on http://; the metadata carries the token

    def call(self, operation: Callable[[EtcdClient], T]) -> T:
        """Run operation(client); fail over through every endpoint once before giving up."""
        lines: list[str] = []
        blamed = 0  # endpoints whose failure a setting explains
        for _attempt in range(len(self.endpoints)):
            ep = self.endpoint
            try:
                return self._run(ep, operation)
            except EtcdSetupError:
                raise
            except Exception as exc:  # noqa: BLE001 - classified below, re-raised when not an outage
                self.errors += 1
                if not failures.is_outage(exc):
                    raise failures.translate(exc, ep.url, self.settings.username, self.settings.cert_file) from None
                line, is_setting = failures.outage_line(exc, ep.url, self.settings.cert_file)
                lines.append(line)
                blamed += is_setting
                self._drop_client()
                self._current = (self._current + 1) % len(self.endpoints)
        advice = "" if blamed == len(lines) else (
            "; check etcd_endpoints, that etcd is running and reachable, and the TLS settings")
        raise EtcdUnavailableError(
            f"no etcd endpoint answered within {self.settings.timeout:g}s ({'; '.join(lines)}){advice}")

    def _run(self, ep: Endpoint, operation: Callable[[EtcdClient], T]) -> T:
        """operation on ep's client; when etcd has dropped our token, once more with a new one
        (a call refused for its token did nothing, so running it again is safe)."""
        if self._client is None:
            self._client = self._connect(ep)
            self.reconnects += int(self._connected)
            self._connected = True
        try:
            return operation(self._client)
        except Exception as exc:  # noqa: BLE001 - only an expired token is handled here
            if not (self.settings.username and failures.is_invalid_token(exc)):
                raise
        self._use_token(self._client)
        return operation(self._client)

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
