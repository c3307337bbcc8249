"""Each module against a real etcd: check mode -> run -> run again -> check mode again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.vxlan.mac import vtep_mac
from ansible_collections.overlaynet.flannel.plugins.module_utils.identity import host_id
from lab.etcd import Auth, Cluster, free_port
from support.ansible_run import run_playbook

PLAYBOOKS = Path(__file__).parent / "playbooks"


def test_etcd_network_config(etcd_server, etcd_prefix):
    run_playbook(PLAYBOOKS / "etcd_network_config.yml", {"endpoint": etcd_server.endpoint, "prefix": etcd_prefix})
    assert etcd_server.etcdctl("get", "--prefix", etcd_prefix) == ""


def test_etcd_network_config_wireguard_never_shows_the_psk(etcd_server, etcd_prefix):
    psk = "oflwPSKoflwPSKoflwPSKoflwPSKoflwPSKoflwPSK0="
    proc = run_playbook(PLAYBOOKS / "wireguard_config.yml",
                        {"endpoint": etcd_server.endpoint, "prefix": etcd_prefix, "psk": psk})
    assert "All assertions passed" in proc.stdout and '"effective"' in proc.stdout  # the output was read
    assert psk not in proc.stdout + proc.stderr
    stored = json.loads(etcd_server.etcdctl("get", f"{etcd_prefix}/config", "--print-value-only"))
    assert stored["Backend"] == {"Type": "wireguard", "PSK": psk, "PersistentKeepaliveInterval": 25}


def test_flannel_lease(etcd_server, etcd_prefix, tmp_path):
    run_playbook(PLAYBOOKS / "flannel_lease.yml",
                 {"endpoint": etcd_server.endpoint, "prefix": etcd_prefix, "workdir": str(tmp_path)})
    stored = etcd_server.etcdctl("get", f"{etcd_prefix}/subnets/10.5.200.0-24", "--print-value-only")
    mac = vtep_mac(1, "192.168.81.11")  # what the agent on this host will advertise
    assert stored.strip() == (
        '{"PublicIP":"192.168.81.11","PublicIPv6":null,"BackendType":"vxlan",'
        f'"BackendData":{{"VNI":1,"VtepMAC":"{mac}","Overlaynet":{{"Host":"{host_id()}"}}}}}}'
    )


def test_bad_input_fails_clearly_and_changes_nothing(etcd_server, etcd_prefix, tmp_path):
    put = etcd_server.etcdctl
    put("put", f"{etcd_prefix}/ok/config", '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}')
    put("put", f"{etcd_prefix}/badconfig/config", '{"Network": "10.5.0.0/16",')
    put("put", f"{etcd_prefix}/badlease/config", '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}')
    put("put", f"{etcd_prefix}/badlease/subnets/10.5.3.0-24", "{PublicIP: nope")
    put("put", f"{etcd_prefix}/held/config", '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}')
    put("put", f"{etcd_prefix}/held/subnets/10.5.9.0-24", '{"PublicIP":"192.168.81.99","PublicIPv6":null}')
    put("put", f"{etcd_prefix}/full/config", '{"Network":"10.8.0.0/28","Backend":{"Type":"vxlan"}}')
    for i, subnet in enumerate(("10.8.0.4-30", "10.8.0.8-30", "10.8.0.12-30")):
        put("put", f"{etcd_prefix}/full/subnets/{subnet}", f'{{"PublicIP":"192.168.81.{50 + i}","PublicIPv6":null}}')
    put("put", f"{etcd_prefix}/shared/config", '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}')
    put("put", f"{etcd_prefix}/shared/subnets/10.5.44.0-24", json.dumps({
        "PublicIP": "192.168.81.11", "PublicIPv6": None, "BackendType": "vxlan",
        "BackendData": {"VNI": 1, "VtepMAC": "0e:00:00:00:00:44", "Overlaynet": {"Host": "0123456789abcdef"}}}))
    put("put", f"{etcd_prefix}/badvni/config", '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","VNI":"one"}}')
    put("put", f"{etcd_prefix}/hugeconfig/config", '{"Network":"10.5.0.0/16","Pad":"' + "x" * 70000 + '"}')
    (tmp_path / "daemon.json").write_text('{"log-driver": "journald"}\n')
    unreadable = tmp_path / "cert.pem"
    unreadable.write_text("not a cert")
    before_etcd = etcd_server.etcdctl("get", "--prefix", etcd_prefix)
    before_files = sorted((p.name, p.read_bytes()) for p in tmp_path.iterdir())

    run_playbook(PLAYBOOKS / "bad_input.yml", {
        "endpoint": etcd_server.endpoint, "prefix": etcd_prefix, "workdir": str(tmp_path),
        "dead_port": free_port(), "unreadable": str(unreadable),
    })

    assert etcd_server.etcdctl("get", "--prefix", etcd_prefix) == before_etcd
    assert sorted((p.name, p.read_bytes()) for p in tmp_path.iterdir()) == before_files


def test_malformed_and_oversized_leases_neither_block_nor_get_handed_out(etcd_server, etcd_prefix, tmp_path):
    put = etcd_server.etcdctl
    put("put", f"{etcd_prefix}/config", '{"Network":"10.8.0.0/28","Backend":{"Type":"vxlan"}}')
    put("put", f"{etcd_prefix}/subnets/10.8.0.4-30", "{PublicIP: nope")
    put("put", f"{etcd_prefix}/subnets/10.8.0.8-30", "[" * 1000 + "]" * 1000)  # RecursionError, once
    put("put", f"{etcd_prefix}/subnets/not-a-key", "x" * 70000)
    (tmp_path / "subnet.env").write_bytes(b"\xff\xfeFLANNEL_SUBNET=garbage\n")  # a broken file on disk
    run_playbook(PLAYBOOKS / "hostile_neighbours.yml",
                 {"endpoint": etcd_server.endpoint, "prefix": etcd_prefix, "workdir": str(tmp_path)})
    assert "FLANNEL_SUBNET=10.8.0.13/30" in (tmp_path / "subnet.env").read_text()


def test_docker_bridge_subnet(tmp_path, netns):
    (tmp_path / "subnet.env").write_text(
        "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.72.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n")
    (tmp_path / "daemon.json").write_text('{"log-driver": "journald"}\n')
    run_playbook(PLAYBOOKS / "docker_bridge_subnet.yml", {"workdir": str(tmp_path)}, netns=netns)
    daemon = json.loads((tmp_path / "daemon.json").read_text())
    assert daemon == {"log-driver": "journald", "bip": "10.5.72.1/24", "mtu": 1450, "ip-masq": True}


def test_modules_over_tls_with_client_certificates(tmp_path, etcd_prefix):
    server = Cluster.loopback(tls_mode="mtls").start()
    try:
        pki = server.pki.as_dict()
        run_playbook(PLAYBOOKS / "tls.yml", {"endpoint": server.endpoint, "prefix": etcd_prefix, "pki": pki})
        assert '"Network":"10.5.0.0/16"' in server.etcdctl("get", f"{etcd_prefix}/config")
    finally:
        server.close()


@pytest.mark.parametrize("tls_mode", ["plain", "mtls"], ids=["http+auth", "mtls+auth"])
def test_modules_as_a_user_with_a_password_over_http_and_mutual_tls(tmp_path, etcd_prefix, monkeypatch, tls_mode):
    """etcd auth on, tokens lasting 2 s; the password reaches the modules through the
    environment (not argv) and appears in no output."""
    server = Cluster.loopback(tls_mode=tls_mode, auth_token_ttl=2).start()
    try:
        auth = Auth.generate(prefix="/oflt/")
        server.set_up_auth(auth)
        monkeypatch.setenv("OFLT_ETCD_PASSWORD", auth.password)
        extra = {"endpoint": server.endpoint, "prefix": etcd_prefix, "user": auth.user}
        if server.pki is not None:
            extra["pki"] = server.pki.as_dict()
        proc = run_playbook(PLAYBOOKS / "auth.yml", extra)
        assert auth.password not in proc.stdout + proc.stderr
        assert '"Network":"10.5.0.0/16"' in server.etcdctl("get", f"{etcd_prefix}/config")
    finally:
        server.close()
