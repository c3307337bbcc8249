"""The stable VTEP MAC: deterministic, unicast, locally administered, and distinct per input."""

from __future__ import annotations

import hashlib
import re

import pytest

from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.vxlan.mac import vtep_mac
from ansible_collections.overlaynet.flannel.plugins.module_utils.identity import host_id, read_machine_id

MACHINE_ID = "3d1219c7c4c5404aaa1f6d2a48adfda4"


@pytest.fixture
def machine_id(tmp_path):
    path = tmp_path / "machine-id"
    path.write_text(MACHINE_ID + "\n")
    return (str(path),)


def test_same_inputs_give_the_same_mac(machine_id):
    assert vtep_mac(1, "192.168.81.11", machine_id) == vtep_mac(1, "192.168.81.11", machine_id)


def test_known_value_does_not_drift(machine_id):
    # Pinned: a change here would give every host a new MAC at upgrade (stale FDB on peers).
    assert vtep_mac(1, "192.168.81.11", machine_id) == _expected(f"machine-id:{MACHINE_ID}", 1, "192.168.81.11")


@pytest.mark.parametrize("vni,ip", [(1, "192.168.81.11"), (2, "192.168.81.11"), (1, "192.168.81.12"),
                                    (16777215, "10.0.0.1")])
def test_mac_is_unicast_and_locally_administered(machine_id, vni, ip):
    mac = vtep_mac(vni, ip, machine_id)
    assert re.fullmatch(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", mac)
    first = int(mac[:2], 16)
    assert first & 0x02 and not first & 0x01


def test_vni_public_ip_and_machine_id_each_change_the_mac(machine_id, tmp_path):
    base = vtep_mac(1, "192.168.81.11", machine_id)
    assert vtep_mac(2, "192.168.81.11", machine_id) != base
    assert vtep_mac(1, "192.168.81.12", machine_id) != base
    other = tmp_path / "other-id"
    other.write_text("0" * 31 + "1\n")
    assert vtep_mac(1, "192.168.81.11", (str(other),)) != base


def test_many_hosts_sharing_a_cloned_machine_id_do_not_collide(machine_id):
    macs = {vtep_mac(1, f"10.0.{i // 256}.{i % 256}", machine_id) for i in range(5000)}
    assert len(macs) == 5000


def test_hostname_is_ignored_when_the_machine_id_is_readable(machine_id):
    assert vtep_mac(1, "192.168.81.11", machine_id, hostname="a") == vtep_mac(1, "192.168.81.11", machine_id,
                                                                              hostname="b")


@pytest.mark.parametrize("content", [None, "", "uninitialized\n", "not-an-id\n"])
def test_falls_back_to_hostname_without_a_usable_machine_id(tmp_path, content):
    path = tmp_path / "machine-id"
    if content is not None:
        path.write_text(content)
    paths = (str(path),)
    assert read_machine_id(paths) is None
    mac = vtep_mac(1, "192.168.81.11", paths, hostname="node-a")
    assert mac == _expected("hostname:node-a", 1, "192.168.81.11")
    assert vtep_mac(1, "192.168.81.11", paths, hostname="node-b") != mac
    assert vtep_mac(1, "192.168.81.11", paths, hostname="node-a") == mac


def test_second_path_is_used_when_the_first_is_missing(tmp_path, machine_id):
    assert read_machine_id((str(tmp_path / "missing"), machine_id[0])) == MACHINE_ID


def test_uppercase_machine_id_is_the_same_id(tmp_path, machine_id):
    upper = tmp_path / "upper"
    upper.write_text(MACHINE_ID.upper())
    assert vtep_mac(1, "192.168.81.11", (str(upper),)) == vtep_mac(1, "192.168.81.11", machine_id)


def _expected(source: str, vni: int, ip: str) -> str:
    """The documented derivation, written out independently."""
    digest = hashlib.sha256(f"overlaynet.flannel/vtep-mac/v1\0{source}\0{vni}\0{ip}".encode()).digest()
    first = (digest[0] & 0xFC) | 0x02
    return ":".join(f"{b:02x}" for b in bytes([first]) + digest[1:6])


def test_the_host_id_is_stable_per_machine_and_reveals_neither_the_id_nor_the_mac(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.write_text(MACHINE_ID + "\n")
    second.write_text("1" * 32 + "\n")
    one = host_id((str(first),))
    assert one == host_id((str(first),)) and len(one) == 16 and int(one, 16) >= 0
    assert one != host_id((str(second),))
    assert MACHINE_ID[:16] not in one and one not in vtep_mac(1, "10.0.0.1", (str(first),)).replace(":", "")
    assert host_id((str(tmp_path / "none"),), hostname="h1") != host_id((str(tmp_path / "none"),), hostname="h2")
