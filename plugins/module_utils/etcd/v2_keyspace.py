"""flannel's keys in etcd's v2 keyspace, read over etcd's v2 HTTP API (``/v2/keys/...``).

Clusters set up the classic way (flannel up to v0.17, ``etcdctl set <prefix>/config``) keep
their config and leases there; etcd 3.x serves it only when started with ``--enable-v2``, on
the same client URLs. We only read it: the v3 keyspace is where the collection and upstream
flanneld v0.18+ keep theirs, and an import copies into it (ops/v2_import.py).

What comes back is untrusted like anything else in etcd: the body is size-capped, must be
the JSON etcd writes, and values are handed on as bytes for the one parser of each format.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from ..errors import EtcdSetupError, EtcdUnavailableError, shown
from .connection import EtcdSettings

BODY_MAX = 32 << 20  # bytes: 5,000 leases are ~1.5 MB; a hostile body is refused, not read
V2_KEY_NOT_FOUND = 100  # etcd's v2 errorCode


@dataclass(frozen=True)
class V2Node:
    """One key of a v2 directory listing: its name below the directory, raw value and TTL."""

    name: str
    value: bytes
    ttl: int | None  # seconds left; None: the key has no TTL


class V2Keyspace:
    """The v2 keys under *prefix* (``/coreos.com/network`` by default) on the endpoints of
    *settings* (tried in order; TLS, client certificate and basic auth as given)."""

    def __init__(self, settings: EtcdSettings, prefix: str) -> None:
        self.settings = settings
        self.endpoints = settings.parsed_endpoints()
        self.prefix = "/" + prefix.strip("/")
        self._ssl = self._ssl_context() if any(e.secure for e in self.endpoints) else None

    def _ssl_context(self) -> ssl.SSLContext:
        try:
            context = ssl.create_default_context(cafile=self.settings.ca_file)
            if self.settings.cert_file:
                context.load_cert_chain(self.settings.cert_file, self.settings.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise EtcdSetupError(f"the etcd TLS files cannot be used for the v2 API: {exc}") from None
        return context

    def url_of(self, key: str) -> str:
        return f"/v2/keys{quote(self.prefix + '/' + key.strip('/'))}"

    def get(self, key: str) -> bytes | None:
        """The value of ``<prefix>/<key>`` (None when there is no such key)."""
        node = self._node(key)
        if node is None:
            return None
        if node.get("dir"):
            raise EtcdSetupError(f"v2 key {self.prefix}/{key} is a directory, not a value")
        return _value(node, f"{self.prefix}/{key}")

    def list_dir(self, key: str) -> list[V2Node]:
        """The keys directly below ``<prefix>/<key>`` (empty when there is no such directory)."""
        node = self._node(key)
        if node is None:
            return []
        where = f"{self.prefix}/{key}"
        if not node.get("dir"):
            raise EtcdSetupError(f"v2 key {where} is a value, not a directory")
        found = []
        for child in node.get("nodes") or []:
            if not isinstance(child, dict) or child.get("dir") or not isinstance(child.get("key"), str):
                continue  # a sub-directory or junk: not one of flannel's keys
            ttl = child.get("ttl")
            found.append(V2Node(child["key"].rsplit("/", 1)[-1], _value(child, child["key"]),
                                ttl if isinstance(ttl, int) and not isinstance(ttl, bool) else None))
        return found

    def _node(self, key: str) -> dict[str, Any] | None:
        path = self.url_of(key)
        last: str = "no endpoint"
        for endpoint in self.endpoints:
            url = endpoint.url.rstrip("/") + path
            try:
                status, body = self._fetch(url)
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                last = f"{endpoint.url}: {getattr(exc, 'reason', exc)}"
                continue
            return _node_of(status, body, endpoint.url, f"{self.prefix}/{key}")
        raise EtcdUnavailableError(f"no etcd endpoint answered on the v2 API ({last})")

    def _fetch(self, url: str) -> tuple[int, bytes]:
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        if self.settings.username:
            token = f"{self.settings.username}:{self.settings.password or ''}".encode()
            request.add_header("Authorization", "Basic " + base64.b64encode(token).decode())
        try:
            with urllib.request.urlopen(request, timeout=self.settings.timeout, context=self._ssl) as response:
                return response.status, _capped(response)
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, _capped(exc)


def _capped(response: Any) -> bytes:
    body: bytes = response.read(BODY_MAX + 1)
    if len(body) > BODY_MAX:
        raise EtcdSetupError(f"the v2 API's answer is larger than {BODY_MAX >> 20} MiB; refused")
    return body


def _node_of(status: int, body: bytes, endpoint: str, where: str) -> dict[str, Any] | None:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested to exhaust the stack
        doc = None
    if not isinstance(doc, dict):
        if status == 404:  # etcd 3.x without --enable-v2 answers its router's plain "404 page not found"
            raise EtcdSetupError(f"etcd at {endpoint} does not serve the v2 API (started without --enable-v2?)")
        raise EtcdSetupError(f"etcd at {endpoint} answered {status} for v2 key {where} with no v2 JSON: "
                             f"{shown(body[:200].decode('utf-8', 'replace'))}")
    if status == 404 and doc.get("errorCode") == V2_KEY_NOT_FOUND:
        return None
    if status != 200 or not isinstance(doc.get("node"), dict):
        message = doc.get("message") if isinstance(doc.get("message"), str) else "no node"
        raise EtcdSetupError(f"etcd at {endpoint} refused v2 key {where} ({status}: {shown(message)})")
    node: dict[str, Any] = doc["node"]
    return node


def _value(node: dict[str, Any], where: str) -> bytes:
    value = node.get("value")
    if not isinstance(value, str):
        raise EtcdSetupError(f"v2 key {shown(where)} holds no string value")
    return value.encode("utf-8", "surrogateescape")
