"""etcd_network_config import_v2 against a real etcd serving the v2 API (``--enable-v2``), its
keys written as the classic set-up wrote them (``ETCDCTL_API=2 etcdctl set``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.etcd import Cluster
from support.ansible_run import run_playbook

PLAYBOOKS = Path(__file__).parent / "playbooks"
PREFIX = "/coreos.com/network"


@pytest.fixture(scope="module")
def v2_etcd() -> Iterator[Cluster]:
    server = Cluster.loopback(enable_v2=True).start()
    yield server
    server.close()


def classic_cluster(server: Cluster, prefix: str) -> None:
    """What a cluster set up by hand left in v2: the config of DESIGN §1 (no Backend: udp),
    two hosts' leases with upstream's 24 h TTL, a reservation, and keys an import must skip."""
    v2 = server.etcdctl_v2
    v2("set", f"{prefix}/config", '{"Network":"10.5.0.0/16"}')
    v2("set", "--ttl", "86400", f"{prefix}/subnets/10.5.7.0-24", '{"PublicIP":"192.168.81.11","BackendType":"udp"}')
    v2("set", "--ttl", "86400", f"{prefix}/subnets/10.5.9.0-24", '{"PublicIP":"192.168.81.12","BackendType":"udp"}')
    v2("set", f"{prefix}/subnets/10.5.12.0-24", '{"PublicIP":"192.168.81.13","BackendType":"udp"}')
    v2("set", "--ttl", "86400", f"{prefix}/subnets/10.5.13.0-24", "{PublicIP: not json")
    v2("set", "--ttl", "86400", f"{prefix}/subnets/10.6.1.0-24", '{"PublicIP":"192.168.81.14","BackendType":"udp"}')


def test_a_v2_cluster_is_imported_with_every_subnet_and_taken_over(v2_etcd, etcd_server, tmp_path):
    prefix = f"{PREFIX}-{tmp_path.name}"
    classic_cluster(v2_etcd, prefix)
    run_playbook(PLAYBOOKS / "v2_import.yml", {"endpoint": v2_etcd.endpoint, "prefix": prefix,
                                               "workdir": str(tmp_path), "v3_only_endpoint": etcd_server.endpoint})
    results = json.loads((tmp_path / "results.json").read_text())
    checked, first, again = results["checked"], results["first"], results["again"]
    imported = ["10.5.12.0-24", "10.5.7.0-24", "10.5.9.0-24"]
    assert checked["changed"] and sorted(checked["v2_import"]["imported"]) == imported
    assert first["changed"] and sorted(first["v2_import"]["imported"]) == imported
    assert first["config"] == {"Network": "10.5.0.0/16", "Backend": {"Type": "udp"}}  # what flannel ran it as
    skipped = {s["key"]: s["reason"] for s in first["v2_import"]["skipped"]}
    assert set(skipped) == {"10.5.13.0-24", "10.6.1.0-24"}
    assert "outside the network 10.5.0.0/16" in skipped["10.6.1.0-24"]
    assert not again["changed"] and not again["v2_import"]["imported"]
    assert sorted(again["v2_import"]["kept"]) == imported
    stored = json.loads(v2_etcd.etcdctl("get", f"{prefix}/subnets/10.5.7.0-24", "--print-value-only"))
    assert stored["PublicIP"] == "192.168.81.11" and stored["BackendType"] == "udp"
    # the TTL the v2 lease had left (upstream's 24 h), and a reservation stays one
    ttl = json.loads(v2_etcd.etcdctl("lease", "timetolive", format(
        v2_etcd.lease_of(f"{prefix}/subnets/10.5.7.0-24"), "x"), "-w", "json"))["ttl"]
    assert 86000 < ttl <= 86400
    assert v2_etcd.lease_of(f"{prefix}/subnets/10.5.12.0-24") == 0
    assert v2_etcd.lease_of(f"{prefix}/subnets/10.6.1.0-24") == -1
    # the host keeps its subnet: found by its PublicIP among the imported leases
    assert results["lease"]["subnet"] == "10.5.7.0/24" and results["lease"]["action"] != "created"
    assert "FLANNEL_SUBNET=10.5.7.1/24" in (tmp_path / "subnet.env").read_text()
    assert "mutually exclusive" in results["both"]["msg"]
    assert "does not serve the v2 API (started without --enable-v2?)" in results["no_v2"]["msg"]
    assert v2_etcd.etcdctl_v2("get", f"{prefix}/config").strip() == '{"Network":"10.5.0.0/16"}'  # v2 untouched


def test_an_import_without_a_v2_config_changes_nothing(v2_etcd, tmp_path):
    prefix = f"{PREFIX}-{tmp_path.name}"
    v2_etcd.etcdctl_v2("set", f"{prefix}/subnets/10.5.7.0-24", '{"PublicIP":"192.168.81.11"}')
    playbook = tmp_path / "play.yml"
    playbook.write_text(f"""---
- hosts: localhost
  gather_facts: false
  tasks:
    - overlaynet.flannel.etcd_network_config:
        import_v2: true
        etcd_endpoints: ["{v2_etcd.endpoint}"]
        etcd_prefix: "{prefix}"
      register: r
      failed_when: r is not failed or 'there is no v2 key {prefix}/config' not in r.msg
""")
    run_playbook(playbook, {})
    assert v2_etcd.etcdctl("get", "--prefix", prefix) == ""


def test_one_host_takes_its_v2_subnet_with_flannel_lease(v2_etcd, tmp_path):
    """No cluster-wide import: the host's own v2 lease is the subnet it asks for in v3."""
    prefix = f"{PREFIX}-{tmp_path.name}"
    v2_etcd.etcdctl_v2("set", f"{prefix}/config", '{"Network":"10.5.0.0/16"}')
    v2_etcd.etcdctl_v2("set", "--ttl", "86400", f"{prefix}/subnets/10.5.77.0-24",
                       '{"PublicIP":"192.168.81.21","BackendType":"udp"}')
    v2_etcd.etcdctl("put", f"{prefix}/config", '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}')
    playbook = tmp_path / "play.yml"
    playbook.write_text(f"""---
- hosts: localhost
  gather_facts: false
  tasks:
    - overlaynet.flannel.flannel_lease:
        import_v2: true
        etcd_endpoints: ["{v2_etcd.endpoint}"]
        etcd_prefix: "{prefix}"
        iface: lo
        public_ip: 192.168.81.21
        subnet_file: "{tmp_path}/subnet.env"
      register: r
      failed_when: r.subnet != "10.5.77.0/24" or r.action != "created"
""")
    run_playbook(playbook, {})
    stored = json.loads(v2_etcd.etcdctl("get", f"{prefix}/subnets/10.5.77.0-24", "--print-value-only"))
    assert stored["PublicIP"] == "192.168.81.21" and stored["BackendType"] == "vxlan"
