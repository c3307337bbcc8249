"""The v2 keyspace reader against answers etcd would not give: a real HTTP server on
loopback serves each hostile or broken body (the real etcd's answers are in
tests/integration/modules/test_v2_import.py)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ansible_collections.overlaynet.flannel.plugins.module_utils.errors import EtcdSetupError, EtcdUnavailableError
from ansible_collections.overlaynet.flannel.plugins.module_utils.etcd import v2_keyspace
from ansible_collections.overlaynet.flannel.plugins.module_utils.etcd.connection import EtcdSettings
from ansible_collections.overlaynet.flannel.plugins.module_utils.etcd.v2_keyspace import V2Keyspace

ANSWERS: dict[str, tuple[int, bytes]] = {}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        status, body = ANSWERS.get(self.path, (404, b'{"errorCode":100,"message":"Key not found"}'))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def keyspace(endpoint: str) -> V2Keyspace:
    return V2Keyspace(EtcdSettings(endpoints=(endpoint,), timeout=5), "/coreos.com/network")


def answer(key: str, status: int, body: object) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    ANSWERS[f"/v2/keys/coreos.com/network/{key}"] = (status, raw)


def test_values_and_listings_as_etcd_writes_them(server: str) -> None:
    answer("config", 200, {"action": "get", "node": {"key": "/coreos.com/network/config", "value": '{"Network":"x"}'}})
    answer("subnets", 200, {"action": "get", "node": {"dir": True, "nodes": [
        {"key": "/coreos.com/network/subnets/10.5.1.0-24", "value": "{}", "ttl": 30},
        {"key": "/coreos.com/network/subnets/10.5.2.0-24", "value": "{}"},
        {"key": "/coreos.com/network/subnets/deeper", "dir": True},  # not a lease: left out
        "junk", {"key": 5, "value": "{}"}, {"key": "/x/10.5.3.0-24", "value": "{}", "ttl": True}]}})
    v2 = keyspace(server)
    assert v2.get("config") == b'{"Network":"x"}'
    assert [(n.name, n.ttl) for n in v2.list_dir("subnets")] == [
        ("10.5.1.0-24", 30), ("10.5.2.0-24", None), ("10.5.3.0-24", None)]
    assert v2.get("nothing-here") is None and v2.list_dir("nothing-here") == []


@pytest.mark.parametrize(("status", "body", "says"), [
    (404, b"404 page not found\n", "does not serve the v2 API (started without --enable-v2?)"),
    (200, b"<html>a proxy</html>", "answered 200 for v2 key /coreos.com/network/broken with no v2 JSON"),
    (200, b"[" * 100000 + b"]" * 100000, "with no v2 JSON"),  # nested past the stack
    (200, b"\xff\xfe{}", "with no v2 JSON"),
    (401, {"errorCode": 110, "message": "The request requires user authentication"}, "refused v2 key"),
    (200, {"action": "get"}, "refused v2 key"),
    (200, {"action": "get", "node": {"key": "/k", "value": 7}}, "holds no string value"),
    (200, {"action": "get", "node": {"key": "/k", "dir": True}}, "is a directory, not a value"),
])
def test_what_etcd_would_not_answer_is_a_clear_error(server: str, status: int, body: object, says: str) -> None:
    answer("broken", status, body)
    with pytest.raises(EtcdSetupError, match=says.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        keyspace(server).get("broken")


def test_a_body_past_the_cap_is_refused_unread(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(v2_keyspace, "BODY_MAX", 1000)
    answer("huge", 200, {"action": "get", "node": {"key": "/k", "value": "x" * 5000}})
    with pytest.raises(EtcdSetupError, match="larger than"):
        keyspace(server).get("huge")


def test_no_endpoint_answering_is_an_outage() -> None:
    with pytest.raises(EtcdUnavailableError, match="no etcd endpoint answered on the v2 API"):
        keyspace("http://127.0.0.1:9").get("config")
