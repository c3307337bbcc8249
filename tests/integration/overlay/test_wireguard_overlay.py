"""The wireguard backend with the real agent: 2 light hosts (prefix oflw-), wireguard-go
serving flannel-wg on each (no kernel module here), a container on each.

Needs root (network namespaces). Checked: the ping matrix over wireguard, the device path
the agent took (log line and /stats), the key file, secrets (private key, PSK) nowhere in
etcd, logs or /stats, and a restarted agent keeping its key, device and peers.
"""

from __future__ import annotations

import base64
import os
import signal
import stat
import time

import pytest

from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.config import NetworkConfig
from lab import Lab
from lab.overlay import PREFIX, Overlay
from lab.wait import wait_for

pytestmark = [
    pytest.mark.lab,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

PSK = base64.b64encode(bytes(range(100, 132))).decode()
BACKEND = {"Type": "wireguard", "PSK": PSK}


@pytest.fixture(scope="module")
def overlay(tmp_path_factory):
    state = tmp_path_factory.mktemp("lab-wireguard")
    with Lab.up(hosts=2, etcd_members=1, state_dir=state / "lab", prefix="oflw-") as lab:
        with Overlay.running(lab, BACKEND, state) as ov:
            yield ov


def wg_dump(overlay: Overlay, host: str) -> str:
    """`wg show flannel-wg dump` on the host: its key, port and peers (handshake times dropped)."""
    out = overlay.lab.run(host, ["wg", "show", "flannel-wg", "dump"], capture_output=True, text=True).stdout
    return "\n".join("\t".join(line.split("\t")[:5]) for line in out.splitlines())


def private_key(overlay: Overlay, host: str) -> str:
    path = overlay.lab.host_run_dir(host) / "flannel" / "wgkey"
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode == 0o600, f"key file {path} has mode {mode:o}"
    return path.read_text().strip()


def wireguard_go_pid(overlay: Overlay, host: str) -> int:
    out = overlay.lab.run(host, ["ps", "-o", "pid=,comm=", "-e"], capture_output=True, text=True).stdout
    pids = [int(line.split()[0]) for line in out.splitlines() if line.split()[1:] == ["wireguard-go"]]
    assert len(pids) == 1, out
    return pids[0]


def test_containers_ping_over_wireguard_go_and_the_agent_says_which_path(overlay):
    wait_for(lambda: not overlay.ping_all(), 15, interval=0.2, what="full ping matrix")
    assert overlay.ping_all() == []
    for host in overlay.lab.hosts:
        stats = overlay.stats(host)
        assert stats["wireguard"]["path"] == "wireguard-go" and stats["wireguard"]["peers"] == 1
        assert stats["config"]["Backend"]["PSK"] == "(secret)"
        stored = overlay.lab.etcdctl("get", f"{PREFIX}/config", "--print-value-only").strip()
        assert stats["config_digest"] == NetworkConfig.from_json(stored).digest()  # what the role compares
        log = (overlay.logs / f"agent-{host}.log").read_text()
        assert "flannel-wg is served by wireguard-go" in log
    for lease in overlay.leases().values():
        # upstream's PublicKey, our Port (and the agent's host id, beside every backend's data)
        assert lease["BackendType"] == "wireguard" and {"PublicKey", "Port"} <= set(lease["BackendData"])
        assert lease["BackendData"]["Port"] == 51820
    dump = wg_dump(overlay, "h1")
    assert overlay.leases()[overlay.lease_of("h2")[0]]["BackendData"]["PublicKey"] in dump
    assert "10.5." in dump and ":51820" in dump


def test_secrets_are_in_no_lease_log_or_stats(overlay):
    everything_in_etcd = overlay.lab.etcdctl("get", "--prefix", "")
    for host in overlay.lab.hosts:
        secret = private_key(overlay, host)
        log = (overlay.logs / f"agent-{host}.log").read_text()
        stats = str(overlay.stats(host))
        assert secret not in everything_in_etcd and secret not in log and secret not in stats
        assert PSK not in log and PSK not in stats
    assert PSK in everything_in_etcd  # upstream's place for it: the network config


def test_a_restarted_agent_keeps_its_key_and_nobody_is_rewritten(overlay):
    key_before = private_key(overlay, "h1")
    lease_before = overlay.lease_of("h1")
    dumps_before = {host: wg_dump(overlay, host) for host in overlay.lab.hosts}
    pid_before = wireguard_go_pid(overlay, "h1")
    stream = overlay.start_ping_stream("c2", overlay.containers["c1"], seconds=5)
    time.sleep(1)
    overlay.kill_agent("h1", signal.SIGKILL)
    overlay.start_agent("h1")
    lost = overlay.lost(stream, timeout=30)
    assert private_key(overlay, "h1") == key_before
    assert overlay.lease_of("h1")[1]["BackendData"] == lease_before[1]["BackendData"]
    assert wireguard_go_pid(overlay, "h1") == pid_before  # the device and its sessions stayed
    assert {host: wg_dump(overlay, host) for host in overlay.lab.hosts} == dumps_before
    assert "reusing the key in" in (overlay.logs / "agent-h1.log").read_text()
    assert lost <= 1, f"{lost} packets lost across the restart"
