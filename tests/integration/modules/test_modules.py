"""Each module against a real etcd: check mode -> run -> run again -> check mode again."""

from __future__ import annotations

from pathlib import Path

from support.ansible_run import run_playbook

PLAYBOOKS = Path(__file__).parent / "playbooks"


def test_etcd_network_config(etcd_server, etcd_prefix):
    run_playbook(PLAYBOOKS / "etcd_network_config.yml", {"endpoint": etcd_server.endpoint, "prefix": etcd_prefix})
    assert etcd_server.etcdctl("get", "--prefix", etcd_prefix) == ""


def test_flannel_lease(etcd_server, etcd_prefix, tmp_path):
    run_playbook(PLAYBOOKS / "flannel_lease.yml",
                 {"endpoint": etcd_server.endpoint, "prefix": etcd_prefix, "workdir": str(tmp_path)})
    stored = etcd_server.etcdctl("get", f"{etcd_prefix}/subnets/10.5.200.0-24", "--print-value-only")
    assert stored.strip() == '{"PublicIP":"192.168.81.11","PublicIPv6":null,"BackendType":"vxlan"}'
