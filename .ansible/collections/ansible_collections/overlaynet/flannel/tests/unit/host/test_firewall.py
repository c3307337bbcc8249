"""flannel's iptables rules: generation, and applied for real inside a network namespace."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from ansible_collections.overlaynet.flannel.plugins.module_utils.host import firewall

REPO = Path(__file__).resolve().parents[3]
NETWORK, SUBNET = "10.5.0.0/16", "10.5.72.0/24"


def test_masquerade_rules_are_flannels():
    chain = firewall.masquerade_chain(NETWORK, SUBNET)
    assert (chain.table, chain.name, chain.jump_from) == ("nat", "FLANNEL-POSTRTG", "POSTROUTING")
    tag = ("-m", "comment", "--comment", "flanneld masq")
    assert chain.rules == (
        ("-s", NETWORK, "-d", NETWORK, *tag, "-j", "RETURN"),
        ("-s", NETWORK, "!", "-d", "224.0.0.0/4", *tag, "-j", "MASQUERADE", "--random-fully"),
        ("!", "-s", NETWORK, "-d", SUBNET, *tag, "-j", "RETURN"),
        ("!", "-s", NETWORK, "-d", NETWORK, *tag, "-j", "MASQUERADE", "--random-fully"),
    )
    assert chain.jump == ("-m", "comment", "--comment", "flanneld masq", "-j", "FLANNEL-POSTRTG")
    plain = firewall.masquerade_chain(NETWORK, SUBNET, random_fully=False)
    assert all("--random-fully" not in rule for rule in plain.rules)


def test_forward_rules_accept_the_network_both_ways():
    chain = firewall.forward_chain(NETWORK)
    assert (chain.table, chain.name, chain.jump_from) == ("filter", "FLANNEL-FWD", "FORWARD")
    tag = ("-m", "comment", "--comment", "flanneld forward")
    assert chain.rules == (("-s", NETWORK, *tag, "-j", "ACCEPT"), ("-d", NETWORK, *tag, "-j", "ACCEPT"))


def test_restore_text_declares_and_fills_only_our_chain():
    text = firewall.forward_chain(NETWORK).restore_text()
    assert text == (
        "*filter\n"
        ":FLANNEL-FWD - [0:0]\n"
        '-A FLANNEL-FWD -s 10.5.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT\n'
        '-A FLANNEL-FWD -d 10.5.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT\n'
        "COMMIT\n"
    )


def test_a_missing_iptables_is_a_clear_error():
    fw = firewall.Firewall(iptables="/nonexistent/iptables", iptables_restore="/nonexistent/iptables-restore")
    with pytest.raises(firewall.HostNetworkError, match="install the iptables package"):
        fw.ensure_forward(NETWORK)


# --- applied for real, in a namespace of our own -------------------------------------------

_SNIPPET = """
import json, sys
sys.path.insert(0, {collections!r})
from ansible_collections.overlaynet.flannel.plugins.module_utils.host.firewall import Firewall
fw = Firewall()
print(json.dumps([fw.ensure_forward({network!r}), fw.ensure_masquerade({network!r}, {subnet!r})]))
"""

needs_lab = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("iptables") or not shutil.which("ip"),
                               reason="needs root, ip and iptables")


@pytest.fixture
def netns():
    name = f"oflag-fw-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def ensure_in(ns: str) -> list[bool]:
    code = _SNIPPET.format(collections=str(REPO / "build" / "collections"), network=NETWORK, subnet=SUBNET)
    out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def ipt(ns: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, "iptables", "-w", "5", *args],
                          capture_output=True, text=True, check=False)


def rules_of(ns: str, table: str, chain: str) -> list[str]:
    return [line for line in ipt(ns, "-t", table, "-S", chain).stdout.splitlines() if line.startswith("-A")]


@pytest.mark.lab
@needs_lab
def test_rules_applied_in_a_namespace_are_idempotent_and_repaired(netns):
    assert ensure_in(netns) == [True, True]
    assert rules_of(netns, "nat", "FLANNEL-POSTRTG") == [
        '-A FLANNEL-POSTRTG -s 10.5.0.0/16 -d 10.5.0.0/16 -m comment --comment "flanneld masq" -j RETURN',
        '-A FLANNEL-POSTRTG -s 10.5.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" '
        '-j MASQUERADE --random-fully',
        '-A FLANNEL-POSTRTG ! -s 10.5.0.0/16 -d 10.5.72.0/24 -m comment --comment "flanneld masq" -j RETURN',
        '-A FLANNEL-POSTRTG ! -s 10.5.0.0/16 -d 10.5.0.0/16 -m comment --comment "flanneld masq" '
        '-j MASQUERADE --random-fully',
    ]
    assert rules_of(netns, "nat", "POSTROUTING") == [
        '-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG']
    assert rules_of(netns, "filter", "FLANNEL-FWD") == [
        '-A FLANNEL-FWD -s 10.5.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT',
        '-A FLANNEL-FWD -d 10.5.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT',
    ]
    assert rules_of(netns, "filter", "FORWARD") == [
        '-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD']

    # A second run changes nothing and duplicates nothing.
    assert ensure_in(netns) == [False, False]
    assert len(rules_of(netns, "nat", "POSTROUTING")) == 1
    assert len(rules_of(netns, "nat", "FLANNEL-POSTRTG")) == 4

    # Drift: a deleted rule, a foreign rule in our chain and a deleted jump all come back right.
    assert ipt(netns, "-t", "nat", "-D", "FLANNEL-POSTRTG", "1").returncode == 0
    assert ipt(netns, "-A", "FLANNEL-FWD", "-s", "10.99.0.0/16", "-j", "ACCEPT").returncode == 0
    assert ipt(netns, "-D", "FORWARD", "-m", "comment", "--comment", "flanneld forward",
               "-j", "FLANNEL-FWD").returncode == 0
    assert ensure_in(netns) == [True, True]
    assert len(rules_of(netns, "nat", "FLANNEL-POSTRTG")) == 4
    assert len(rules_of(netns, "filter", "FLANNEL-FWD")) == 2
    assert len(rules_of(netns, "filter", "FORWARD")) == 1
    assert ensure_in(netns) == [False, False]


@pytest.mark.lab
@needs_lab
def test_other_rules_in_the_builtin_chains_are_left_alone(netns):
    assert ipt(netns, "-A", "FORWARD", "-s", "192.0.2.0/24", "-j", "DROP").returncode == 0
    assert ipt(netns, "-t", "nat", "-A", "POSTROUTING", "-s", "172.17.0.0/16", "-j", "MASQUERADE").returncode == 0
    assert ensure_in(netns) == [True, True]
    assert rules_of(netns, "filter", "FORWARD")[0] == "-A FORWARD -s 192.0.2.0/24 -j DROP"
    assert rules_of(netns, "nat", "POSTROUTING")[0] == "-A POSTROUTING -s 172.17.0.0/16 -j MASQUERADE"
    assert len(rules_of(netns, "filter", "FORWARD")) == 2
