"""module_defaults for the action group group/overlaynet.flannel.etcd (meta/runtime.yml), against a real etcd.

The playbook gives the etcd connection only once, to the group: without the group in
meta/runtime.yml the modules fall back to http://127.0.0.1:2379 and the test's etcd sees nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ansible_collections.overlaynet.flannel.plugins.module_utils.identity import host_id
from lab.etcd import Cluster
from support.ansible_run import run_playbook

PLAYBOOKS = Path(__file__).parent / "playbooks"

PASSWORD = "ofl-group-secret-4d1f"  # only ever in extra vars, so only a leak can print it


def test_group_module_defaults_reach_the_etcd_modules(etcd_server: Cluster, etcd_prefix: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANSIBLE_VERBOSITY", "3")  # module invocations are printed from -vvv on
    proc = run_playbook(PLAYBOOKS / "module_defaults.yml", {
        "endpoint": etcd_server.endpoint, "prefix": etcd_prefix, "workdir": str(tmp_path), "password": PASSWORD,
    })

    config = json.loads(etcd_server.etcdctl("get", f"{etcd_prefix}/config", "--print-value-only"))
    assert config == {"Network": "10.6.0.0/16", "Backend": {"Type": "host-gw"}}
    leases = etcd_server.etcdctl("get", "--prefix", f"{etcd_prefix}/subnets/").splitlines()
    assert len(leases) == 2, leases  # one key, one value
    assert json.loads(leases[1]) == {"PublicIP": "192.168.81.21", "PublicIPv6": None, "BackendType": "host-gw",
                                     "BackendData": {"Overlaynet": {"Host": host_id()}}}
    subnet = leases[0].rsplit("/", 1)[1]  # 10.6.X.0-24
    net, plen = subnet.split("-")
    bip = f"{net.rsplit('.', 1)[0]}.1/{plen}"
    assert f"FLANNEL_SUBNET={bip}\n" in (tmp_path / "subnet.env").read_text()
    assert json.loads((tmp_path / "daemon.json").read_text())["bip"] == bip
    assert "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" in proc.stdout  # the invocation was printed, masked
    assert PASSWORD not in proc.stdout + proc.stderr
