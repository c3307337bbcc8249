"""udp backend for real: TUN flannel0 + UDP 8285 between namespace hosts.

Each host's backend runs in its own process inside the host namespace (udp_driver.py, leases
built by hand, no etcd). Hosts 1 and 2 are our agents (GSO fast path); host 3 runs in plain
mode without BackendData, as upstream flanneld does, so it must be reached in flannel's
per-packet format in both directions while 1 <-> 2 keep the fast path. Counters come from
the forwarder (`stats`). Namespaces are oflu-<tag>-*, deleted afterwards even on failure;
processes are stopped by PID.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from udp_lab import Drivers, build, container_ip, ping, set_gso_ipv4_max_size, subnet, underlay_ip

from lab.rig import Rig

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces and TUN devices"),
    pytest.mark.skipif(not os.path.exists("/dev/net/tun"), reason="needs /dev/net/tun"),
]

MAX_UDP_PAYLOAD = 65507


@pytest.fixture
def make_lab() -> Iterator:
    """make(hosts, underlay_mtu) -> (rig, its drivers); every rig is removed afterwards."""
    rigs: list[Rig] = []

    def make(hosts: int = 3, underlay_mtu: int = 1500) -> tuple[Rig, Drivers]:
        rig = Rig(f"oflu-{os.getpid() % 100000}{secrets.token_hex(2)}-", mtu=underlay_mtu)
        rigs.append(rig)
        return build(rig, hosts), Drivers(rig)

    try:
        yield make
    finally:
        for rig in rigs:
            rig.close()


def mesh(agents: Drivers, plain: frozenset[int] | set[int] = frozenset({3}), state_dir: Path | None = None) -> None:
    """Start an agent per host and tell each about the others (fast unless plain)."""
    for i in range(1, len(agents.rig.hosts) + 1):
        state = str(state_dir / f"h{i}.json") if state_dir else None
        agents.start(i, plain=i in plain, state_file=state)
    for i, agent in agents.items():
        peers = [agent.peer(j, j not in plain) for j in agents if j != i]
        agent.command("reconcile", peers=peers)


def peer_stats(agents: Drivers, i: int, j: int) -> dict[str, int]:
    return agents[i].stats()["peers"].get(underlay_ip(j), {})


def icmp_in_echos(lab: Rig, i: int) -> int:
    lines = [ln.split() for ln in lab.run(lab.ns(f"c{i}"), "cat", "/proc/net/snmp").stdout.splitlines()
             if ln.startswith("Icmp:")]
    return int(lines[1][lines[0].index("InEchos")])


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_request(src: str, dst: str, ident: int) -> bytes:
    icmp = bytearray(struct.pack("!BBHHH", 8, 0, 0, ident, 1) + b"oflu-probe" * 4)
    struct.pack_into("!H", icmp, 2, csum(bytes(icmp)))
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), ident, 0x4000, 64, 1, 0,
                               socket.inet_aton(src), socket.inet_aton(dst)))
    struct.pack_into("!H", ip, 10, csum(bytes(ip)))
    return bytes(ip + icmp)


def send_datagrams(lab: Rig, ns: str, payload: bytes, dst: str, count: int, port: int = 8285) -> None:
    code = (f"import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"for _ in range({count}): s.sendto(bytes.fromhex({payload.hex()!r}), ({dst!r}, {port}))\n")
    lab.run(ns, sys.executable, "-c", code)


def iperf(lab: Rig, src: int, dst: int, nbytes: str, port: int = 5201, timeout: float = 90) -> dict:
    """iperf3 -n nbytes from container src to container dst; the JSON result."""
    server = lab.popen(lab.ns(f"c{dst}"), "iperf3", "-s", "-1", "-p", str(port), stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    try:
        for _attempt in range(50):
            out = lab.run(lab.ns(f"c{src}"), "iperf3", "-c", container_ip(dst), "-p", str(port), "-n", nbytes, "-J",
                          check=False, timeout=timeout)
            if "unable to connect" not in out.stdout:
                break
            time.sleep(0.1)
        result = json.loads(out.stdout)
        assert "error" not in result, result.get("error")
        return result
    finally:
        if server.poll() is None:
            server.kill()
        server.wait(5)


def completed(result: dict, nbytes: int) -> bool:
    """The whole -n amount was sent, and received but for what was in flight when the client
    stopped counting (socket buffers: a few MB, a large share of a short transfer)."""
    end = result["end"]
    return end["sum_sent"]["bytes"] >= nbytes and end["sum_received"]["bytes"] >= 0.8 * nbytes


def gbits(result: dict) -> float:
    return result["end"]["sum_received"]["bits_per_second"] / 1e9


# --- tests -------------------------------------------------------------------------------


def test_three_hosts_fast_path_and_flannel_format(make_lab) -> None:
    lab, agents = make_lab(3)
    mesh(agents)
    a1, a3 = agents[1], agents[3]
    assert a1.setup == {"backend_type": "", "backend_data": {"Overlaynet": {"GSO": 1}}, "mtu": 1472}
    assert a3.setup["backend_data"] is None  # like flanneld: nothing advertised

    # flannel's layout: <lease network>/32 on a persistent flannel0, the Network via flannel0
    link = lab.run(lab.ns("h1"), "ip", "-d", "-j", "addr", "show", "flannel0").stdout
    info = json.loads(link)[0]
    assert info["mtu"] == 1472 and "UP" in info["flags"]
    assert [(a["local"], a["prefixlen"]) for a in info["addr_info"] if a["family"] == "inet"] == [("10.7.1.0", 32)]
    assert info["linkinfo"]["info_kind"] == "tun"
    details = lab.run(lab.ns("h1"), "ip", "-d", "link", "show", "flannel0").stdout
    assert "persist on" in details and "vnet_hdr on" in details and "pi off" in details
    assert "vnet_hdr off" in lab.run(lab.ns("h3"), "ip", "-d", "link", "show", "flannel0").stdout
    route = json.loads(lab.run(lab.ns("h1"), "ip", "-j", "route", "show", "10.7.0.0/16").stdout)
    assert route and route[0]["dev"] == "flannel0"

    for src in (1, 2, 3):
        for dst in (1, 2, 3):
            if src != dst:
                assert ping(lab, src, container_ip(dst)), f"container {src} cannot reach container {dst}"

    # 1 <-> 2: only our format; 1,2 <-> 3: only flannel's, both ways
    for i, j in ((1, 2), (2, 1)):
        s = peer_stats(agents, i, j)
        assert s["tx_fast"] >= 6 and s["rx_fast"] >= 6 and s["tx_plain"] == s["rx_plain"] == 0, s
    for i in (1, 2):
        s = peer_stats(agents, i, 3)
        assert s["tx_plain"] >= 6 and s["rx_plain"] >= 6 and s["tx_fast"] == s["rx_fast"] == 0, s
        s = peer_stats(agents, 3, i)
        assert s["rx_plain"] >= 6 and s["rx_fast"] == 0, s
    assert agents[3].stats()["rx_converted"] == 0
    formats = {ip: p["format"] for ip, p in a1.stats()["peers"].items()}
    assert formats == {underlay_ip(2): "gso", underlay_ip(3): "flannel"}
    assert {p["format"] for p in a3.stats()["peers"].values()} == {"flannel"}

    # a destination outside every lease: ICMP net unreachable from flannel0, like flanneld
    proc = lab.run(lab.ns("c1"), "ping", "-c", "1", "-W", "2", "10.7.99.9", check=False)
    assert proc.returncode != 0 and "Unreachable" in proc.stdout, proc.stdout
    assert a1.stats()["tx_no_route"] >= 1


def test_datagrams_from_non_peers_never_reach_a_container(make_lab) -> None:
    lab, agents = make_lab(2)
    mesh(agents, plain=set())
    probe = echo_request(container_ip(2), container_ip(1), 0x4242)
    before_echos = icmp_in_echos(lab, 1)
    before = agents[1].stats()

    send_datagrams(lab, lab.ns("x"), probe, underlay_ip(1), 20)  # outsider on the underlay
    time.sleep(0.5)
    after = agents[1].stats()
    assert after["dropped_not_peer"] - before["dropped_not_peer"] == 20
    assert icmp_in_echos(lab, 1) == before_echos, "a datagram from a non-peer reached the container"

    # control: the same datagram from a peer's address is delivered (flannel's format)
    send_datagrams(lab, lab.ns("h2"), probe, underlay_ip(1), 3)
    time.sleep(0.5)
    assert icmp_in_echos(lab, 1) == before_echos + 3

    # once host 2's lease is gone, its address is a stranger too
    agents[1].command("remove_peer", subnet=subnet(2), public_ip=underlay_ip(2))
    dropped = agents[1].stats()["dropped_not_peer"]
    send_datagrams(lab, lab.ns("h2"), probe, underlay_ip(1), 5)
    time.sleep(0.5)
    assert agents[1].stats()["dropped_not_peer"] == dropped + 5
    assert icmp_in_echos(lab, 1) == before_echos + 3


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("iperf3"), reason="needs iperf3")
def test_tcp_bulk_fast_path_and_per_packet_with_oversize_super_packets(make_lab) -> None:
    # Underlay MTU 1503 -> flannel0 1475 -> 1423-byte segments; 46 of them make a 65,510-byte
    # super-packet, more than one UDP datagram holds. Container 1's TCP is allowed to build
    # such packets (gso_ipv4_max_size a little above 64 KiB); flannel0 still takes them as GSO.
    lab, agents = make_lab(3, underlay_mtu=1503)
    mesh(agents)
    if tuple(int(x) for x in re.findall(r"\d+", os.uname().release)[:2]) < (6, 3):
        pytest.skip("IFLA_GSO_IPV4_MAX_SIZE needs Linux >= 6.3")
    set_gso_ipv4_max_size(lab.ns("c1"), "eth0", 65836)

    fast = iperf(lab, 1, 2, "300M")
    s1 = agents[1].stats()
    assert s1["max_read"] > MAX_UDP_PAYLOAD - 12, "no oversize super-packet was produced"
    assert s1["tx_split"] > 0 and s1["tx_bad_packets"] == 0 and s1["tx_send_errors"] == 0
    assert peer_stats(agents, 2, 1)["rx_fast"] > 0 and agents[2].stats()["tun_write_errors"] == 0
    assert completed(fast, 300 * 2**20)

    per_packet = iperf(lab, 1, 3, "200M")  # super-packets (oversize too) segmented for flannel's format
    s1 = agents[1].stats()
    assert s1["tx_segmented"] > 0 and s1["tx_bad_packets"] == 0
    assert peer_stats(agents, 3, 1)["rx_fast"] == 0
    assert completed(per_packet, 200 * 2**20)

    back = iperf(lab, 3, 1, "200M")  # flannel's format in, written behind an empty vnet header
    assert completed(back, 200 * 2**20)
    assert agents[1].stats()["tun_write_errors"] == 0
    reverse_fast = iperf(lab, 2, 1, "300M")
    assert completed(reverse_fast, 300 * 2**20)
    for agent in agents.values():
        assert agent.stats()["alive"] and not agent.stats()["errors"]
    print(f"\nGbit/s (busy box, not a benchmark): fast {gbits(fast):.2f} (split {s1['tx_split']}), "
          f"to flannel-format {gbits(per_packet):.2f}, from it {gbits(back):.2f}, "
          f"reverse fast {gbits(reverse_fast):.2f}")


def test_restart_keeps_flannel0_and_resumes_forwarding(make_lab, tmp_path: Path) -> None:
    lab, agents = make_lab(2)
    mesh(agents, plain=set(), state_dir=tmp_path)
    assert ping(lab, 1, container_ip(2))
    index = json.loads(lab.run(lab.ns("h1"), "ip", "-j", "link", "show", "flannel0").stdout)[0]["ifindex"]

    assert agents[1].stop() == 0  # SIGTERM: close() leaves the device, address and route
    info = json.loads(lab.run(lab.ns("h1"), "ip", "-j", "addr", "show", "flannel0").stdout)[0]
    assert [a["local"] for a in info["addr_info"] if a["family"] == "inet"] == ["10.7.1.0"]
    assert "flannel0" in lab.run(lab.ns("h1"), "ip", "route", "show", "10.7.0.0/16").stdout
    assert not ping(lab, 1, container_ip(2), count=1)  # nobody forwards meanwhile

    # the restarted agent re-attaches to the same device and knows its peers from the state
    # file before anyone tells it again (as when etcd is unreachable at restart)
    agent = agents.start(1, state_file=str(tmp_path / "h1.json"))
    assert json.loads(lab.run(lab.ns("h1"), "ip", "-j", "link", "show", "flannel0").stdout)[0]["ifindex"] == index
    assert agent.stats()["routes"] == [{"subnet": "10.7.2.0/24", "public_ip": underlay_ip(2), "fast": True}]
    assert ping(lab, 1, container_ip(2))
    assert ping(lab, 2, container_ip(1))


def test_reconcile_repairs_a_deleted_device_and_route(make_lab) -> None:
    lab, agents = make_lab(2)
    mesh(agents, plain=set())
    a1 = agents[1]
    assert ping(lab, 1, container_ip(2))

    lab.run(lab.ns("h1"), "ip", "link", "del", "flannel0")
    time.sleep(0.5)
    assert not a1.stats()["alive"]  # the TX thread saw its device go
    peers = [a1.peer(2, True)]
    a1.command("reconcile", peers=peers)
    assert a1.stats()["alive"]
    assert ping(lab, 1, container_ip(2)) and ping(lab, 2, container_ip(1))

    lab.run(lab.ns("h1"), "ip", "route", "del", "10.7.0.0/16")
    lab.run(lab.ns("h1"), "ip", "addr", "flush", "dev", "flannel0")
    a1.command("reconcile", peers=peers)
    assert "flannel0" in lab.run(lab.ns("h1"), "ip", "route", "show", "10.7.0.0/16").stdout
    assert "10.7.1.0/32" in lab.run(lab.ns("h1"), "ip", "addr", "show", "flannel0").stdout
    assert ping(lab, 1, container_ip(2))


def test_peer_that_switched_to_plain_mode_still_understood(make_lab) -> None:
    """A host restarted without the fast path while its peer still has the old lease: the
    datagrams say which format they are in, and the plain host segments what it gets."""
    lab, agents = make_lab(2)
    mesh(agents, plain=set())
    assert agents[2].stop() == 0
    agent2 = agents.start(2, plain=True)
    agent2.command("reconcile", peers=[agent2.peer(1, True)])
    assert ping(lab, 1, container_ip(2)) and ping(lab, 2, container_ip(1))
    assert agent2.stats()["rx_converted"] > 0
    if shutil.which("iperf3"):
        result = iperf(lab, 1, 2, "50M")
        assert completed(result, 50 * 2**20)
    assert agent2.stats()["tun_write_errors"] == 0


def root_flannel0_count() -> int:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout.count("flannel0")


def test_backend_drives_a_named_namespace_from_outside(make_lab) -> None:
    """LocalHost.netns: device, socket and netlink in the named namespace, threads here."""
    from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.base import LocalHost
    from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.udp.backend import UdpBackend
    from ansible_collections.overlaynet.flannel.plugins.module_utils.deps import netaddr
    from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.config import NetworkConfig
    from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.lease import Lease, LeaseAttrs

    lab, agents = make_lab(2)
    root_links = root_flannel0_count()
    agents.start(2).command("reconcile", peers=[{"subnet": subnet(1), "public_ip": underlay_ip(1), "fast": True}])
    config = NetworkConfig.from_dict({"Network": "10.7.0.0/16", "Backend": {"Type": "udp"}})
    index = json.loads(lab.run(lab.ns("h1"), "ip", "-j", "link", "show", "eth0").stdout)[0]["ifindex"]
    backend = UdpBackend(config, LocalHost(underlay_ip(1), "eth0", index, 1500, netns=lab.ns("h1")))
    try:
        setup = backend.setup(config, backend.host)
        assert setup.backend_data == {"Overlaynet": {"GSO": 1}} and setup.mtu == 1472
        backend.activate(netaddr.IPNetwork(subnet(1)))
        backend.add_peer(Lease(netaddr.IPNetwork(subnet(2)),
                               LeaseAttrs(underlay_ip(2), None, "udp", {"Overlaynet": {"GSO": 1}}), 1))
        assert ping(lab, 1, container_ip(2)) and ping(lab, 2, container_ip(1))
        assert backend.stats()["peers"][underlay_ip(2)]["tx_fast"] >= 3
    finally:
        backend.close()
    assert "flannel0" in lab.run(lab.ns("h1"), "ip", "link", "show", "flannel0").stdout  # persistent
    assert root_flannel0_count() == root_links  # nothing was created in our own namespace


def test_behind_nat_the_socket_is_bound_to_the_interface_address(make_lab) -> None:
    """--public-ip names an address this host does not hold: the lease carries it, the socket
    is bound to the interface's address (binding the public one would fail: EADDRNOTAVAIL)."""
    from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.base import LocalHost
    from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.udp.backend import UdpBackend
    from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.config import NetworkConfig

    lab, _agents = make_lab(1)
    config = NetworkConfig.from_dict({"Network": "10.7.0.0/16", "Backend": {"Type": "udp"}})
    index = json.loads(lab.run(lab.ns("h1"), "ip", "-j", "link", "show", "eth0").stdout)[0]["ifindex"]
    host = LocalHost("203.0.113.7", "eth0", index, 1500, netns=lab.ns("h1"), local_ip=underlay_ip(1))
    backend = UdpBackend(config, host)
    try:
        backend.setup(config, host)
        assert backend._sock is not None and backend._sock.getsockname() == (underlay_ip(1), 8285)
    finally:
        backend.close()


def test_fast_path_advertisement_and_a_corrupt_state_file(tmp_path: Path) -> None:
    from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.base import LocalHost
    from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.udp.backend import (
        UdpBackend,
        advertises_fast_path,
    )
    from ansible_collections.overlaynet.flannel.plugins.module_utils.deps import netaddr
    from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.config import NetworkConfig
    from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.lease import Lease, LeaseAttrs

    def lease(data: object) -> Lease:
        return Lease(netaddr.IPNetwork("10.7.2.0/24"), LeaseAttrs("192.168.81.12", None, "udp", data))

    assert advertises_fast_path(lease({"Overlaynet": {"GSO": 1}}))
    assert advertises_fast_path(lease({"Overlaynet": {"GSO": 1, "Host": "h1"}}))
    for data in (None, {}, {"Overlaynet": {"GSO": 2}}, {"Overlaynet": 1}, {"overlaynet": {"GSO": 1}}, {"VNI": 1},
                 {"Overlaynet": {"Host": "h1"}}):  # a host id alone: a lease of ours without the fast path
        assert not advertises_fast_path(lease(data)), data

    state = tmp_path / "peers.json"
    config = NetworkConfig.from_dict({"Network": "10.7.0.0/16"})  # no Backend: udp, as in flannel
    backend = UdpBackend(config, LocalHost("192.168.81.11", "eth0", 2, 1500), state_file=str(state))
    for text in ("not json", '{"peers": {"k": [1, 2]}}', '{"peers": {"k": ["x", 24, "1.2.3.4", 8285, true]}}',
                 '{"peers": {"k": [1, 24, "1.2.3", 8285, true]}}'):
        state.write_text(text)
        assert backend._load_state() == {}, text
    backend.reconcile({"k": lease({"Overlaynet": {"GSO": 1}})})  # before setup(): only remembered
    assert json.loads(state.read_text())["peers"]["k"][2:] == ["192.168.81.12", 8285, True]
    assert backend._load_state() == backend._routes


def test_a_handed_over_tun_queue_is_checked_by_device_name_and_mode(make_lab) -> None:
    from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.udp import handover
    from ansible_collections.overlaynet.flannel.plugins.module_utils.host.tun import open_tun

    lab, _agents = make_lab(1)
    ns = lab.ns("h1")
    fast = open_tun("oflu-fast", vnet_hdr=True, persist=False, netns=ns)
    plain = open_tun("oflu-plain", vnet_hdr=False, persist=False, netns=ns)
    try:
        assert handover.tun_problem(fast.fd, "oflu-fast", True) is None
        assert handover.tun_problem(plain.fd, "oflu-plain", False) is None
        assert handover.tun_problem(fast.fd, "flannel0", True) == "a queue of 'oflu-fast', not 'flannel0'"
        assert handover.tun_problem(plain.fd, "oflu-plain", True) == "vnet header off, wanted on"
        assert handover.tun_problem(fast.fd, "oflu-fast", False) == "vnet header on, wanted off"
    finally:
        fast.close()
        plain.close()
