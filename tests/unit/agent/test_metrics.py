"""/metrics: the exposition format written by hand (agent/metrics.py), the agent's families
(agent/exported.py) and the endpoint, each checked against prometheus_client's parser."""

from __future__ import annotations

import math
import platform
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ansible_collections.overlaynet.flannel.plugins.module_utils.agent import exported
from ansible_collections.overlaynet.flannel.plugins.module_utils.agent.healthz import Health, HealthServer
from ansible_collections.overlaynet.flannel.plugins.module_utils.agent.metrics import (
    CONTENT_TYPE,
    Registry,
    escape_help,
    escape_label_value,
    format_value,
)
from ansible_collections.overlaynet.flannel.plugins.module_utils.version import VERSION

HOSTILE = 'a\\b"c\nd'  # a backslash, a double quote and a line feed, as etcd may hand them over


def parsed(text: str) -> dict[str, tuple[str, str, list[tuple[str, dict[str, str], float]]]]:
    """family name -> (type, help, [(sample name, labels, value)]) as a real parser reads it."""
    return {f.name: (f.type, f.documentation, [(s.name, s.labels, s.value) for s in f.samples])
            for f in text_string_to_metric_families(text)}


def test_label_values_are_escaped_and_read_back_as_they_were():
    assert escape_label_value(HOSTILE) == 'a\\\\b\\"c\\nd'
    registry = Registry()
    registry.gauge("flannel_x", "x").set(1, who=HOSTILE)
    text = registry.render()
    assert text.count("\n") == 3  # HELP, TYPE, the sample: the line feed in the value stays escaped
    assert parsed(text)["flannel_x"][2] == [("flannel_x", {"who": HOSTILE}, 1.0)]


def test_help_and_type_lead_each_family_once_and_help_is_escaped():
    registry = Registry()
    registry.counter("flannel_a_total", "first\nline \\ two").set(3)
    registry.gauge("flannel_b", "b").set(1, state="x").set(2, state="y")
    lines = registry.render().splitlines()
    assert lines == ["# HELP flannel_a_total first\\nline \\\\ two", "# TYPE flannel_a_total counter",
                     "flannel_a_total 3", "# HELP flannel_b b", "# TYPE flannel_b gauge",
                     'flannel_b{state="x"} 1', 'flannel_b{state="y"} 2']
    assert escape_help("a\\b\nc") == "a\\\\b\\nc"
    families = parsed(registry.render())
    assert families["flannel_a"] == ("counter", "first\nline \\ two", [("flannel_a_total", {}, 3.0)])
    assert families["flannel_b"][0] == "gauge"


def test_the_text_ends_in_a_line_feed_and_an_empty_family_keeps_its_help():
    registry = Registry()
    registry.gauge("flannel_empty", "nothing yet")
    assert registry.render() == "# HELP flannel_empty nothing yet\n# TYPE flannel_empty gauge\n"


@pytest.mark.parametrize(("value", "text"), [(3, "3"), (2.5, "2.5"), (math.inf, "+Inf"), (-math.inf, "-Inf"),
                                             (math.nan, "NaN"), (1.7e9, "1700000000"), (1e300, "1e+300")])
def test_values(value, text):
    assert format_value(value) == text


def test_counters_end_in_total_and_names_follow_the_grammar():
    registry = Registry()
    with pytest.raises(ValueError, match="_total"):
        registry.counter("flannel_rounds", "no suffix")
    for bad in ("9lives", "flannel-x", "flannel x", ""):
        with pytest.raises(ValueError, match="metric name"):
            registry.gauge(bad, "bad")
    family = registry.gauge("flannel_ok", "ok")
    for bad_label in ("__reserved", "a-b"):
        with pytest.raises(ValueError, match="label name"):
            family.set(1, **{bad_label: "v"})
    with pytest.raises(ValueError, match="a counter cannot be"):
        registry.counter("flannel_neg_total", "n").set(-1)


def test_one_family_per_name_and_one_sample_per_label_set():
    registry = Registry()
    family = registry.gauge("flannel_x", "x").set(1, a="1")
    with pytest.raises(ValueError, match="added twice"):
        registry.gauge("flannel_x", "again")
    with pytest.raises(ValueError, match="given twice"):
        family.set(2, a="1")


UDP_STATS = {
    "rx_datagrams": 7, "dropped_not_peer": 2, "rx_malformed": 1, "tun_write_errors": 0,
    "tx_no_route": 4, "tx_not_ipv4": 0, "tx_bad_packets": 0, "tx_send_errors": 1,
    "peers": {"192.168.81.3": {"tx_fast": 5, "tx_plain": 1}, "192.168.81.4": {"tx_fast": 0, "tx_plain": 2}},
}


def running(**overrides) -> exported.RunningFacts:
    facts = {"subnet": "10.5.3.0/24", "lease_expires_at": 1.7e9, "peers": {"programmed": 2, "rejected": 1},
             "reconcile_rounds": 9, "repairs": 3, "watch_restarts": 1, "backend_stats": {}}
    return exported.RunningFacts(**{**facts, **overrides})


def test_the_agents_families_with_every_fact_in_place():
    text = exported.render(exported.AgentFacts("udp", 4, 2, running(backend_stats=UDP_STATS)))
    families = parsed(text)
    samples = {(name, tuple(sorted(labels.items()))): value
               for _t, _h, found in families.values() for name, labels, value in found}
    assert samples[("flannel_build_info", (("backend", "udp"), ("python", platform.python_version()),
                                           ("version", VERSION)))] == 1
    assert samples[("flannel_etcd_errors_total", ())] == 4
    assert samples[("flannel_etcd_reconnects_total", ())] == 2
    assert samples[("flannel_lease_expiry_timestamp_seconds", (("subnet", "10.5.3.0/24"),))] == 1.7e9
    assert [samples[("flannel_peers", (("state", s),))] for s in exported.PEER_STATES] == [2, 1, 0]
    assert samples[("flannel_reconcile_rounds_total", ())] == 9
    assert samples[("flannel_reconcile_repairs_total", ())] == 3
    assert samples[("flannel_watch_restarts_total", ())] == 1
    assert samples[("flannel_udp_datagrams_total", (("direction", "tx"),))] == 8
    assert samples[("flannel_udp_datagrams_total", (("direction", "rx"),))] == 7
    drops = {labels: v for (name, labels), v in samples.items() if name == "flannel_udp_drops_total"}
    assert len(drops) == len(exported.UDP_DROPS)
    assert drops[(("direction", "tx"), ("reason", "no_route"))] == 4
    assert drops[(("direction", "rx"), ("reason", "not_peer"))] == 2
    assert drops[(("direction", "tx"), ("reason", "send_error"))] == 1
    counters = {name for name, (kind, _h, _s) in families.items() if kind == "counter"}
    assert counters == {"flannel_etcd_errors", "flannel_etcd_reconnects", "flannel_reconcile_rounds",
                        "flannel_reconcile_repairs", "flannel_watch_restarts", "flannel_udp_datagrams",
                        "flannel_udp_drops"}


def test_before_start_up_only_build_info_and_etcd_counters_and_no_udp_without_its_forwarder():
    early = parsed(exported.render(exported.AgentFacts("", 5, 0)))
    assert set(early) == {"flannel_build_info", "flannel_etcd_errors", "flannel_etcd_reconnects"}
    assert early["flannel_etcd_errors"][2] == [("flannel_etcd_errors_total", {}, 5.0)]
    host_gw = parsed(exported.render(exported.AgentFacts("host-gw", 0, 0, running(backend_stats={"mtu": 1472}))))
    assert "flannel_udp_datagrams" not in host_gw and "flannel_peers" in host_gw


def test_a_reservation_never_expires():
    text = exported.render(exported.AgentFacts("vxlan", 0, 0, running(lease_expires_at=math.inf)))
    assert 'flannel_lease_expiry_timestamp_seconds{subnet="10.5.3.0/24"} +Inf\n' in text
    assert parsed(text)["flannel_lease_expiry_timestamp_seconds"][2][0][2] == math.inf


def get(port: int, path: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def test_the_endpoint_serves_the_text_with_its_content_type_and_survives_a_failing_page():
    health = Health()
    server = HealthServer(health, "127.0.0.1", 0).start()
    try:
        assert get(server.port, "/metrics")[0] == 404  # nothing to export yet
        health.metrics = lambda: exported.render(exported.AgentFacts("vxlan", 1, 0))
        code, content_type, body = get(server.port, "/metrics")
        assert (code, content_type) == (200, CONTENT_TYPE)
        assert content_type == "text/plain; version=0.0.4; charset=utf-8"
        assert "flannel_etcd_errors_total 1\n" in body and body.endswith("\n")

        def broken() -> str:
            raise RuntimeError("a bug")

        health.metrics = broken
        assert get(server.port, "/metrics")[:2] == (500, "text/plain")
        assert get(server.port, "/healthz")[0] == 200
    finally:
        server.close()
