"""The agent (bin/flannel-agent, the real launcher) against a real etcd, host-gw, in namespaces.

    oflag-<pid>-ul      bridge br0 192.168.81.2/24 and etcd on http://192.168.81.2:2379
    oflag-<pid>-<name>  one per agent host: eth0 192.168.81.N/24 on br0

(a ``lab.rig.Rig``).
Every agent runs as `ip netns exec <host ns> bin/flannel-agent ...`. Nothing is added to the
root namespace; namespaces, etcd and agents are removed afterwards (by PID), also on failure.
Peers without an agent ("fake peers") are leases written with etcdctl; host-gw routes them
via their PublicIP, which only has to lie on the underlay subnet.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ansible_collections.overlaynet.flannel.plugins.module_utils.identity import host_id
from ansible_collections.overlaynet.flannel.plugins.module_utils.version import VERSION
from lab import netns
from lab.engine import parse_env_text
from lab.etcd import Auth, Cluster, EtcdCtl
from lab.rig import Rig
from lab.wait import WaitTimeout, wait_for
from support.prometheus import Scrape

REPO = Path(__file__).resolve().parents[3]
AGENT = REPO / "bin" / "flannel-agent"
HUB_OFFSET = 2  # the switch's own address, where etcd listens
NETWORK = "10.5.0.0/16"
CONFIG = json.dumps({"Network": NETWORK, "Backend": {"Type": "host-gw"}})
RTPROT_OVERLAYNET = "70"
HEALTHZ_PORT = 8471

pytestmark = [
    pytest.mark.lab,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("etcd"), reason="needs root and etcd"),
]


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> float:
    return wait_for(predicate, timeout, what, interval=0.2)


class Host:
    def __init__(self, ns: str, address: str) -> None:
        self.ns = ns
        self.address = address

    def routes(self) -> dict[str, str]:
        """Our (host-gw) routes: destination -> gateway."""
        out = netns.ip(self.ns, "-j", "route", "show", "proto", RTPROT_OVERLAYNET)
        return {r["dst"]: r.get("gateway") for r in json.loads(out or "[]")}

    def http_get(self, path: str) -> tuple[int, str]:
        reply = netns.http_get(self.ns, f"http://127.0.0.1:{HEALTHZ_PORT}{path}")
        return reply.status, reply.body.strip()

    def scrape(self) -> Scrape:
        """GET /metrics as Prometheus would, the body as it came (not stripped)."""
        reply = netns.http_get(self.ns, f"http://127.0.0.1:{HEALTHZ_PORT}/metrics")
        assert reply.status == 200, reply
        return Scrape(reply.content_type, reply.body)

    def metric(self, name: str, **labels: str) -> float:
        return self.scrape().checked().value(name, **labels)


class Agent:
    """One flannel-agent process; NOTIFY_SOCKET is a datagram socket bound by the test."""

    def __init__(self, lab: Rig, host: Host, prefix: str, *extra: str, env: dict[str, str] | None = None,
                 endpoints_in_env: bool = False, endpoints: str | None = None) -> None:
        self.lab, self.host, self.prefix = lab, host, prefix
        self.endpoints = endpoints or lab.etcd.endpoint
        self.dir = Path(tempfile.mkdtemp(prefix="oflag-agent-", dir=lab.tmp))
        self.subnet_file = self.dir / "subnet.env"
        self.log_path = self.dir / "agent.log"
        self.notify_path = str(self.dir / "notify.sock")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.notify_path)
        self.messages: list[str] = []
        self.extra, self.env, self.endpoints_in_env = list(extra), dict(env or {}), endpoints_in_env
        self.proc: subprocess.Popen[bytes] | None = None
        lab.defer(self.kill)

    def start(self) -> Agent:
        args = ["--iface", "eth0", "--subnet-file", str(self.subnet_file), "--reconcile-interval", "1",
                "--etcd-timeout", "2", "--etcd-probe-interval", "1", "--healthz-ip", "127.0.0.1",
                "--healthz-port", str(HEALTHZ_PORT), *self.extra]
        env = dict(os.environ, PATH=f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}",
                   NOTIFY_SOCKET=self.notify_path, **self.env)
        if self.endpoints_in_env:
            env.update(FLANNELD_ETCD_ENDPOINTS=self.endpoints, FLANNELD_ETCD_PREFIX=self.prefix)
        else:
            args += ["--etcd-endpoints", self.endpoints, "--etcd-prefix", self.prefix]
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.host.ns, str(AGENT), *args],
                                     stdout=log, stderr=log, env=env)
        log.close()
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while "READY=1" not in self.messages:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.proc.poll() is not None:
                raise AssertionError(f"agent not ready (rc {self.proc.poll()}); log:\n{self.log()}")
            self.notify.settimeout(min(remaining, 0.5))
            try:
                self.messages += self.notify.recv(4096).decode().splitlines()
            except TimeoutError:
                pass

    def drain_notify(self) -> list[str]:
        """Every notification received so far."""
        self.notify.settimeout(0.1)
        try:
            while True:
                self.messages += self.notify.recv(4096).decode().splitlines()
        except TimeoutError:
            return self.messages

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, signum: int) -> None:
        os.kill(self.proc.pid, signum)

    def wait(self, timeout: float = 15.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"agent did not exit; log:\n{self.log()}") from None

    def subnet_env(self) -> dict[str, str]:
        return parse_env_text(self.subnet_file.read_text())

    def kill(self) -> None:
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.notify.close()


_addresses = itertools.count(11)


def new_host(lab: Rig, name: str) -> Host:
    """A fresh host namespace on the bridge, with an address never used before."""
    number = next(_addresses)
    ns = lab.node(f"{name}-{number}", number, port=f"v{number}")
    return Host(ns, lab.address(number))


def put_config(etcd: EtcdCtl, prefix: str) -> None:
    etcd.etcdctl("put", f"{prefix}/config", CONFIG)


def put_fake_peer(etcd: EtcdCtl, prefix: str, subnet: str, public_ip: str) -> str:
    key = f"{prefix}/subnets/{subnet.replace('/', '-')}"
    value = json.dumps({"PublicIP": public_ip, "PublicIPv6": None, "BackendType": "host-gw"},
                       separators=(",", ":"))
    etcd.etcdctl("put", key, value)
    return key


def leases_in(etcd: EtcdCtl, prefix: str) -> dict[str, dict]:
    """subnet key tail -> lease JSON."""
    base = f"{prefix}/subnets/"
    return {key[len(base):]: json.loads(value) for key, value in etcd.get_prefix(base).items()}


@pytest.fixture(scope="module")
def lab() -> Iterator[Rig]:
    """The switch (192.168.81.2, running etcd); tests add their hosts with new_host()."""
    with Rig(f"oflag-{os.getpid()}-") as rig:
        rig.build_switch(offset=HUB_OFFSET)
        rig.start_etcd([rig.address(HUB_OFFSET)], names=["lab"])
        yield rig


@pytest.fixture
def prefix(lab, etcd_prefix):
    return etcd_prefix.replace("/oflt/", "/oflag/")


def own_key(agent: Agent) -> str:
    subnet = agent.subnet_env()["FLANNEL_SUBNET"]  # 10.5.N.1/24
    network = subnet.rsplit(".", 1)[0] + ".0"
    return f"{network}-{subnet.split('/')[1]}"


def test_start_up_waits_for_the_config_then_reports_ready_and_keeps_its_subnet(lab, prefix):
    host = new_host(lab, "h1")
    agent = Agent(lab, host, prefix, "--ip-masq", endpoints_in_env=True).start()
    wait_until(lambda: "could not read the network config" in agent.log(), 10, "a log line about the config")
    assert agent.alive()
    put_config(lab.etcd, prefix)
    agent.wait_ready()
    assert any(message.startswith("STATUS=lease 10.5.") for message in agent.messages)
    assert host.http_get("/readyz") == (200, "ready")
    assert host.http_get("/healthz") == (200, "flanneld is running")

    env = agent.subnet_env()
    assert env["FLANNEL_NETWORK"] == NETWORK
    assert env["FLANNEL_SUBNET"].startswith("10.5.") and env["FLANNEL_SUBNET"].endswith(".1/24")
    assert env["FLANNEL_MTU"] == "1500"  # host-gw: the underlay's MTU
    assert env["FLANNEL_IPMASQ"] == "true"
    key = own_key(agent)
    assert leases_in(lab.etcd, prefix) == {
        key: {"PublicIP": host.address, "PublicIPv6": None, "BackendType": "host-gw",
              "BackendData": {"Overlaynet": {"Host": host_id()}}}}
    assert lab.etcd.lease_of(f"{prefix}/subnets/{key}") > 0  # an ordinary lease with a TTL

    rules = netns.run(host.ns, ["iptables", "-w", "5", "-t", "nat", "-S", "FLANNEL-POSTRTG"]).stdout
    assert f"-s {NETWORK} ! -d 224.0.0.0/4" in rules
    assert f"! -s {NETWORK} -d {env['FLANNEL_SUBNET'].replace('.1/', '.0/')}" in rules
    forward = netns.run(host.ns, ["iptables", "-w", "5", "-S", "FLANNEL-FWD"]).stdout
    assert f"-s {NETWORK}" in forward and f"-d {NETWORK}" in forward

    # SIGTERM: exit 0, the lease stays in etcd; a restart gets the same subnet.
    agent.signal(signal.SIGTERM)
    assert agent.wait() == 0
    assert key in leases_in(lab.etcd, prefix)
    agent.messages.clear()
    agent.start().wait_ready()
    assert own_key(agent) == key
    assert "lease 10.5." in agent.log() and "(kept)" in agent.log().split("stopping on request")[-1]

    # Lease gone while stopped: the subnet from the old subnet file is taken again.
    agent.signal(signal.SIGINT)
    assert agent.wait() == 0
    lab.etcd.etcdctl("del", f"{prefix}/subnets/{key}")
    agent.messages.clear()
    agent.start().wait_ready()
    assert own_key(agent) == key
    agent.signal(signal.SIGTERM)
    assert agent.wait() == 0


def test_sigterm_while_waiting_for_etcd_exits_0(lab, prefix):
    agent = Agent(lab, new_host(lab, "h1"), prefix).start()  # no config: it waits
    wait_until(lambda: "could not read the network config" in agent.log(), 10, "the agent to wait")
    started = time.monotonic()
    agent.signal(signal.SIGTERM)
    assert agent.wait() == 0
    assert time.monotonic() - started < 3
    assert "stopping on request during start-up" in agent.log()
    assert "READY=1" not in agent.drain_notify()
    assert "STOPPING=1" in agent.messages


def test_peers_follow_the_leases_and_drift_is_repaired(lab, prefix):
    put_config(lab.etcd, prefix)
    h1, h2 = new_host(lab, "h1"), new_host(lab, "h2")
    a1 = Agent(lab, h1, prefix).start()
    a1.wait_ready()
    a2 = Agent(lab, h2, prefix).start()
    a2.wait_ready()
    s1, s2 = own_key(a1).replace("-", "/"), own_key(a2).replace("-", "/")
    wait_until(lambda: h1.routes() == {s2: h2.address}, 10, "h1's route to h2")
    wait_until(lambda: h2.routes() == {s1: h1.address}, 10, "h2's route to h1")
    assert "FLANNEL_IPMASQ=false" in a1.subnet_file.read_text()

    # A lease appears, changes, turns malformed, goes: the routes follow.
    key = put_fake_peer(lab.etcd, prefix, "10.5.200.0/24", "192.168.81.200")
    wait_until(lambda: h1.routes().get("10.5.200.0/24") == "192.168.81.200", 10, "the new peer's route")
    put_fake_peer(lab.etcd, prefix, "10.5.200.0/24", "192.168.81.201")
    wait_until(lambda: h1.routes().get("10.5.200.0/24") == "192.168.81.201", 10, "the updated route")
    lab.etcd.etcdctl("put", key, "{not json")
    wait_until(lambda: "10.5.200.0/24" not in h1.routes(), 10, "the malformed peer's route to go")
    put_fake_peer(lab.etcd, prefix, "10.5.200.0/24", "192.168.81.201")
    wait_until(lambda: "10.5.200.0/24" in h1.routes(), 10, "the route to come back")
    lab.etcd.etcdctl("del", key)
    wait_until(lambda: "10.5.200.0/24" not in h1.routes(), 10, "the deleted peer's route to go")

    # Drift: a route deleted behind the agent's back is back within 10 s.
    netns.ip(h1.ns, "route", "del", s2)
    wait_until(lambda: h1.routes().get(s2) == h2.address, 10, "the deleted route to come back")

    # h2's lease is deleted: h1 removes the route; h2 exits non-zero, leaving its data plane.
    lab.etcd.etcdctl("del", f"{prefix}/subnets/{own_key(a2)}")
    wait_until(lambda: s2 not in h1.routes(), 10, "h1's route to h2 to go")
    assert a2.wait() == 3
    assert "is gone" in a2.log()
    assert h2.routes() == {s1: h1.address}
    assert a1.alive()
    a1.signal(signal.SIGTERM)
    assert a1.wait() == 0


def test_metrics_follow_the_peers_repairs_and_the_lease_and_pass_promtool(lab, prefix):
    put_config(lab.etcd, prefix)
    h1 = new_host(lab, "h1")
    a1 = Agent(lab, h1, prefix, "--subnet-lease-ttl", "600", "--subnet-lease-renew-margin", "1").start()
    a1.wait_ready()
    first = h1.scrape().checked()
    assert first.labels_of("flannel_build_info") == {"version": VERSION, "python": platform.python_version(),
                                                     "backend": "host-gw"}
    subnet = own_key(a1).replace("-", "/")
    expiry = first.value("flannel_lease_expiry_timestamp_seconds", subnet=subnet)
    assert time.time() + 500 < expiry <= time.time() + 602  # within the 600 s TTL granted
    assert [first.value("flannel_peers", state=s) for s in ("programmed", "rejected", "malformed")] == [0, 0, 0]

    def peers(state: str) -> float:
        return h1.metric("flannel_peers", state=state)

    put_fake_peer(lab.etcd, prefix, "10.5.200.0/24", "192.168.81.200")
    wait_until(lambda: peers("programmed") == 1, 10, "the peer counted as programmed")
    put_fake_peer(lab.etcd, prefix, "10.5.201.0/24", "10.5.7.7")  # hostile: a PublicIP inside the overlay
    lab.etcd.etcdctl("put", f"{prefix}/subnets/10.5.202.0-24", "{not json")
    wait_until(lambda: (peers("rejected"), peers("malformed")) == (1, 1), 10, "the hostile and malformed leases")
    assert peers("programmed") == 1 and "10.5.201.0/24" not in h1.routes()

    repairs = h1.metric("flannel_reconcile_repairs_total")
    netns.ip(h1.ns, "route", "del", "10.5.200.0/24")
    wait_until(lambda: h1.metric("flannel_reconcile_repairs_total") == repairs + 1, 10, "the repair counted")
    last = h1.scrape().checked()
    assert last.value("flannel_reconcile_rounds_total") > first.value("flannel_reconcile_rounds_total")
    assert last.value("flannel_watch_restarts_total") == 0
    assert h1.routes().get("10.5.200.0/24") == "192.168.81.200"
    a1.signal(signal.SIGTERM)
    assert a1.wait() == 0


def test_etcd_outage_leaves_the_data_plane_alone_and_the_agent_recovers(lab, prefix):
    put_config(lab.etcd, prefix)
    h1, h2 = new_host(lab, "h1"), new_host(lab, "h2")
    a1, a2 = Agent(lab, h1, prefix).start(), Agent(lab, h2, prefix).start()
    a1.wait_ready()
    a2.wait_ready()
    put_fake_peer(lab.etcd, prefix, "10.5.201.0/24", "192.168.81.201")
    s2 = own_key(a2).replace("-", "/")
    wait_until(lambda: len(h1.routes()) == 2 and len(h2.routes()) == 2, 10, "both peers' routes")
    before = (h1.routes(), h2.routes())
    calm = h1.scrape().checked()

    h3 = new_host(lab, "h3")
    a3 = Agent(lab, h3, prefix)
    lab.etcd.stop()
    try:
        wait_until(lambda: "etcd is unavailable" in a1.log(), 10, "the agent to notice the outage")
        a3.start()  # an agent starting during the outage waits for etcd
        for _unused in range(10):
            time.sleep(1)
            assert a1.alive() and a2.alive() and a3.alive()
            assert (h1.routes(), h2.routes()) == before  # the data plane stays exactly as it is
        assert "could not read the network config (attempt 2)" in a3.log()
        netns.ip(h1.ns, "route", "del", s2)  # drift is still repaired without etcd
        wait_until(lambda: h1.routes() == before[0], 10, "the route repaired during the outage")
        wait_until(lambda: h1.metric("flannel_reconcile_repairs_total") > calm.value("flannel_reconcile_repairs_total"),
                   5, "the repair counted")
        assert h1.metric("flannel_etcd_errors_total") > calm.value("flannel_etcd_errors_total")
        waiting = h3.scrape().checked()  # before start-up is done: build info and the etcd counters only
        assert waiting.labels_of("flannel_build_info")["backend"] == ""
        assert waiting.value("flannel_etcd_errors_total") >= 2
        assert ("flannel_peers", (("state", "programmed"),)) not in waiting.samples()
    finally:
        lab.etcd.start()
    wait_until(lambda: "etcd is reachable again" in a1.log(), 15, "the agent to reconnect")
    wait_until(lambda: h1.metric("flannel_watch_restarts_total") >= 1, 10, "the watch restart counted")
    assert calm.value("flannel_watch_restarts_total") == 0
    assert h1.metric("flannel_etcd_reconnects_total") > calm.value("flannel_etcd_reconnects_total")

    # After the restart new peers are seen: a lease written with etcdctl and the new agent.
    put_fake_peer(lab.etcd, prefix, "10.5.202.0/24", "192.168.81.202")
    wait_until(lambda: h1.routes().get("10.5.202.0/24") == "192.168.81.202", 10, "h1 to see a new lease")
    a3.wait_ready()
    s3 = own_key(a3).replace("-", "/")
    wait_until(lambda: h1.routes().get(s3) == h3.address, 10, "h1 to see the new agent")
    wait_until(lambda: h2.routes().get(s3) == h3.address, 10, "h2 to see the new agent")
    routes = h1.routes()
    for agent in (a1, a2, a3):
        agent.signal(signal.SIGTERM)
        assert agent.wait() == 0
    assert h1.routes() == routes  # stopping leaves the data plane in place
    assert len(leases_in(lab.etcd, prefix)) == 5  # and the leases in etcd


def test_failover_to_another_member_when_the_used_one_goes_away(lab, prefix):
    addresses = ("192.168.81.3", "192.168.81.4", "192.168.81.5")
    cluster: Cluster | None = None  # a failed start is closed with the rig
    try:
        for address in addresses:
            netns.ip(lab.switch, "addr", "replace", f"{address}/24", "dev", "br0")
        cluster = lab.start_etcd(addresses, names=[f"m{i}" for i in range(len(addresses))])
        first, second = cluster.members[0], cluster.members[1]
        second.etcdctl("put", f"{prefix}/config", CONFIG)
        h1 = new_host(lab, "h1")
        a1 = Agent(lab, h1, prefix, endpoints=cluster.endpoint).start()
        a1.wait_ready()
        first.stop()  # the member the agent talks to
        put_fake_peer(second, prefix, "10.5.220.0/24", "192.168.81.220")
        wait_until(lambda: h1.routes().get("10.5.220.0/24") == "192.168.81.220", 15, "the peer seen via another member")
        assert a1.alive()
        assert "the lease watch stopped" in a1.log()
        a1.signal(signal.SIGTERM)
        assert a1.wait() == 0
    finally:
        if cluster is not None:
            cluster.close()
        for address in addresses:
            netns.ip(lab.switch, "addr", "del", f"{address}/24", "dev", "br0", check=False)


def test_the_lease_is_renewed_before_it_expires(lab, prefix):
    put_config(lab.etcd, prefix)
    h1 = new_host(lab, "h1")
    a1 = Agent(lab, h1, prefix, "--subnet-lease-ttl", "10", "--subnet-lease-renew-margin", "1").start()
    a1.wait_ready()
    key = f"{prefix}/subnets/{own_key(a1)}"
    time.sleep(16)  # longer than the TTL: only renewals keep the lease
    assert a1.alive()
    assert lab.etcd.lease_of(key) > 0
    assert "renewed lease" in a1.log()
    a1.signal(signal.SIGTERM)
    assert a1.wait() == 0


def test_a_silent_partition_and_a_compaction_end_in_a_relist(lab, prefix):
    put_config(lab.etcd, prefix)
    h1 = new_host(lab, "h1")
    gone = put_fake_peer(lab.etcd, prefix, "10.5.210.0/24", "192.168.81.210")
    kept = put_fake_peer(lab.etcd, prefix, "10.5.211.0/24", "192.168.81.211")
    a1 = Agent(lab, h1, prefix).start()
    a1.wait_ready()
    assert h1.routes() == {"10.5.210.0/24": "192.168.81.210", "10.5.211.0/24": "192.168.81.211"}

    # Packets from h1 to etcd vanish (no reset): only the agent's probe can notice.
    drop = ["-s", h1.address, "-p", "tcp", "--dport", "2379", "-j", "DROP"]
    netns.run(lab.switch, ["iptables", "-w", "5", "-I", "INPUT", *drop])
    try:
        wait_until(lambda: "etcd is unavailable" in a1.log(), 15, "the agent to notice the partition")
        lab.etcd.etcdctl("del", gone)
        put_fake_peer(lab.etcd, prefix, "10.5.211.0/24", "192.168.81.212")
        put_fake_peer(lab.etcd, prefix, "10.5.213.0/24", "192.168.81.213")
        lab.etcd.etcdctl("compact", str(lab.etcd.revision()))
        assert len(h1.routes()) == 2  # nothing changes while etcd cannot be reached
    finally:
        netns.run(lab.switch, ["iptables", "-w", "5", "-D", "INPUT", *drop])
    wait_until(lambda: h1.routes() == {"10.5.211.0/24": "192.168.81.212", "10.5.213.0/24": "192.168.81.213"},
               20, "the routes after the re-list")
    assert "compacted" in a1.log()
    assert kept  # the kept key was updated in place
    a1.signal(signal.SIGTERM)
    assert a1.wait() == 0


def test_a_lease_made_by_the_module_is_adopted_with_our_backend_data(lab, prefix):
    put_config(lab.etcd, prefix)
    h1 = new_host(lab, "h1")
    # 2 h: more than the renew margin (60 min) and less than the agent's TTL (24 h), so the
    # agent has no reason to renew it at once (it renews a lease due, or one granted longer)
    lease_id = lab.etcd.etcdctl("lease", "grant", "7200").split()[1]
    key = f"{prefix}/subnets/10.5.77.0-24"
    stale = {"PublicIP": h1.address, "PublicIPv6": None, "BackendType": "host-gw", "BackendData": {"Old": 1}}
    lab.etcd.etcdctl("put", f"--lease={lease_id}", key, json.dumps(stale))
    a1 = Agent(lab, h1, prefix).start()
    a1.wait_ready()
    assert own_key(a1) == "10.5.77.0-24"
    ours = {"PublicIP": h1.address, "PublicIPv6": None, "BackendType": "host-gw",
            "BackendData": {"Overlaynet": {"Host": host_id()}}}  # the agents here share the box's machine-id
    assert leases_in(lab.etcd, prefix) == {"10.5.77.0-24": ours}
    assert lab.etcd.lease_of(key) == int(lease_id, 16)  # the module's etcd lease is kept

    # Someone rewrites our lease with other data: the agent writes its own back.
    lab.etcd.etcdctl("put", f"--lease={lease_id}", key, json.dumps(stale))
    wait_until(lambda: leases_in(lab.etcd, prefix)["10.5.77.0-24"] == ours, 10, "our data written back")
    assert a1.alive()
    a1.signal(signal.SIGTERM)
    assert a1.wait() == 0


@pytest.mark.parametrize(("flags", "named"), [
    (["--etcd-endpoints", "ftp://10.0.0.1:2379"], "ftp://10.0.0.1:2379"),
    (["--etcd-endpoints", "https://127.0.0.1:1", "--etcd-cafile", "/nonexistent/ca.pem"], "/nonexistent/ca.pem"),
    (["--etcd-endpoints", "https://127.0.0.1:1", "--etcd-certfile", "/etc/hostname"], "etcd_key_file"),
], ids=["not-a-url", "missing-ca", "cert-without-key"])
def test_unusable_etcd_settings_end_the_agent_with_the_value_named(lab, prefix, flags, named):
    agent = Agent(lab, new_host(lab, "h1"), prefix, *flags, endpoints="http://127.0.0.1:1").start()
    assert agent.wait() == 1
    assert named in agent.log(), agent.log()


def test_a_second_host_with_our_public_ip_is_refused_not_shared(lab, prefix):
    """Another host's lease of our PublicIP (its host id in BackendData): we exit with the key
    and both host ids, and leave that lease alone."""
    put_config(lab.etcd, prefix)
    h1 = new_host(lab, "h1")
    theirs = {"PublicIP": h1.address, "PublicIPv6": None, "BackendType": "host-gw",
              "BackendData": {"Overlaynet": {"Host": "0123456789abcdef"}}}
    lab.etcd.etcdctl("put", f"{prefix}/subnets/10.5.88.0-24", json.dumps(theirs))
    a1 = Agent(lab, h1, prefix).start()
    assert a1.wait() == 1
    log = a1.log()
    assert all(part in log for part in ("10.5.88.0-24", "0123456789abcdef", host_id(), "its own public_ip")), log
    assert leases_in(lab.etcd, prefix) == {"10.5.88.0-24": theirs}


@pytest.mark.skipif(not shutil.which("ping"), reason="needs ping")
@pytest.mark.parametrize(("backend", "mtu", "device"), [("vxlan", "1450", "flannel.1"), ("udp", "1472", "flannel0")])
def test_the_other_backends_carry_traffic_between_two_agents(lab, prefix, backend, mtu, device):
    lab.etcd.etcdctl("put", f"{prefix}/config", json.dumps({"Network": NETWORK, "Backend": {"Type": backend}}))
    h1, h2 = new_host(lab, "h1"), new_host(lab, "h2")
    a1, a2 = Agent(lab, h1, prefix).start(), Agent(lab, h2, prefix).start()
    a1.wait_ready()
    a2.wait_ready()
    assert a1.subnet_env()["FLANNEL_MTU"] == mtu
    leases = leases_in(lab.etcd, prefix)
    assert {lease["PublicIP"] for lease in leases.values()} == {h1.address, h2.address}
    # flannel's udp leases carry no BackendType (ours advertise the fast path in BackendData)
    expected_type = None if backend == "udp" else backend
    assert all(lease.get("BackendType") == expected_type for lease in leases.values())
    # The device of each host carries the lease's network address (.0/32): ping across.
    far = own_key(a2).split("-", maxsplit=1)[0]

    def reaches() -> bool:
        return netns.ping(h1.ns, far)

    wait_until(reaches, 15, f"h1 to reach {far} over {backend}")
    if backend == "udp":  # the forwarder's own counters, exported
        scrape = h1.scrape().checked()
        assert scrape.value("flannel_udp_datagrams_total", direction="tx") > 0
        assert scrape.value("flannel_udp_datagrams_total", direction="rx") > 0
        assert scrape.value("flannel_udp_drops_total", direction="rx", reason="not_peer") == 0
    repairs = h1.metric("flannel_reconcile_repairs_total")
    # The device deleted behind the agent's back: repaired (device, address, routes) within 10 s.
    netns.ip(h1.ns, "link", "del", device)
    wait_until(reaches, 10, f"{device} to be repaired")
    wait_until(lambda: h1.metric("flannel_reconcile_repairs_total") > repairs, 5, "the repair counted")
    for agent in (a1, a2):
        agent.signal(signal.SIGTERM)
        assert agent.wait() == 0


# --- etcd security: one agent per mode, tokens that expire, the password kept out of sight ----

SECURE_ADDRESSES = {"auth": "192.168.81.6", "mtls": "192.168.81.7", "mtls+auth": "192.168.81.8"}
TOKEN_TTL = 2  # etcd's --auth-token-ttl for the secured members: shorter than the agent's gaps


@pytest.fixture(scope="module")
def secured(lab) -> Iterator[Callable[[str], tuple[Cluster, list[str], dict[str, str]]]]:
    """mode -> (its etcd member on the switch, the agent's TLS flags, the agent's environment);
    each member is started on first use, with auth (a prefix-only user) and/or mutual TLS."""
    made: dict[str, tuple[Cluster, list[str], dict[str, str]]] = {}

    def get(mode: str) -> tuple[Cluster, list[str], dict[str, str]]:
        if mode == "plain":
            return lab.etcd, [], {}
        if mode not in made:
            address = SECURE_ADDRESSES[mode]
            netns.ip(lab.switch, "addr", "replace", f"{address}/24", "dev", "br0")
            lab.defer(lambda: netns.ip(lab.switch, "addr", "del", f"{address}/24", "dev", "br0", check=False))
            cluster = Cluster.in_netns(lab.switch, [address], names=[mode.replace("+", "-")],
                                       tls_mode="mtls" if "mtls" in mode else "plain", auth_token_ttl=TOKEN_TTL)
            lab.defer(cluster.close)
            cluster.start()
            tls, env = [], {}
            if cluster.pki is not None:
                tls = ["--etcd-cafile", str(cluster.pki.ca), "--etcd-certfile", str(cluster.pki.client_cert),
                       "--etcd-keyfile", str(cluster.pki.client_key)]
            if "auth" in mode:
                auth = Auth.generate(prefix="/oflag/")
                cluster.set_up_auth(auth)
                env = {"FLANNELD_ETCD_USERNAME": auth.user, "FLANNELD_ETCD_PASSWORD": auth.password}
            made[mode] = (cluster, tls, env)
        return made[mode]

    return get


def assert_secret_unseen(agent: Agent, secret: str) -> None:
    cmdline = Path(f"/proc/{agent.proc.pid}/cmdline").read_bytes()
    assert b"flannel-agent" in cmdline  # the agent's own process (ip netns exec execs)
    assert secret.encode() not in cmdline
    assert secret not in agent.log()


@pytest.mark.parametrize("mode", ["plain", "mtls", "auth", "mtls+auth"])
def test_the_agent_over_mutual_tls_and_user_password(lab, prefix, secured, mode):
    cluster, tls, env = secured(mode)
    put_config(cluster, prefix)
    h1 = new_host(lab, "h1")
    agent = Agent(lab, h1, prefix, *tls, env=env, endpoints=cluster.endpoint).start()
    agent.wait_ready()
    put_fake_peer(cluster, prefix, "10.5.230.0/24", "192.168.81.230")
    wait_until(lambda: h1.routes().get("10.5.230.0/24") == "192.168.81.230", 10, "the peer seen over the watch")
    if env:
        assert_secret_unseen(agent, env["FLANNELD_ETCD_PASSWORD"])
        assert "--etcd-password was given on the command line" not in agent.log()
    agent.signal(signal.SIGTERM)
    assert agent.wait() == 0


def test_tokens_expire_under_a_running_agent_which_renews_them(lab, prefix, secured):
    """--auth-token-ttl 2 and an agent that talks to etcd every 3 s or so (renewals of a
    12 s lease, a probe every 7 s): most calls find the token expired. A minute of renewals
    and watch events later the agent still runs, without an etcd error in its log."""
    cluster, tls, env = secured("auth")
    put_config(cluster, prefix)
    h1 = new_host(lab, "h1")
    agent = Agent(lab, h1, prefix, *tls, "--subnet-lease-ttl", "12", "--subnet-lease-renew-margin", "1",
                  "--etcd-probe-interval", "7", env=env, endpoints=cluster.endpoint).start()
    agent.wait_ready()
    key = f"{prefix}/subnets/{own_key(agent)}"
    for round_ in range(10):
        time.sleep(TOKEN_TTL + 4)
        subnet = f"10.5.{240 + round_}.0/24"
        put_fake_peer(cluster, prefix, subnet, f"192.168.81.{240 + round_}")
        wait_until(lambda subnet=subnet: subnet in h1.routes(), 5, f"the route to {subnet}")
        assert agent.alive(), agent.log()
    log = agent.log()
    assert log.count("renewed lease") >= 15, log
    assert cluster.lease_of(key) > 0
    for trouble in ("could not", "unavailable", "invalid auth token", "rejected"):
        assert trouble not in log, log
    agent.signal(signal.SIGTERM)
    assert agent.wait() == 0


def test_a_password_on_the_command_line_is_warned_about_once_and_never_logged(lab, prefix, secured):
    cluster, tls, env = secured("auth")
    put_config(cluster, prefix)
    password = env["FLANNELD_ETCD_PASSWORD"]
    agent = Agent(lab, new_host(lab, "h1"), prefix, *tls, "--etcd-password", password, "-v", "1",
                  env={"FLANNELD_ETCD_USERNAME": env["FLANNELD_ETCD_USERNAME"]}, endpoints=cluster.endpoint).start()
    agent.wait_ready()
    log = agent.log()
    assert log.count("--etcd-password was given on the command line") == 1, log
    assert "FLANNELD_ETCD_PASSWORD" in log
    assert password not in log
    agent.signal(signal.SIGTERM)
    assert agent.wait() == 0
    assert password not in agent.log()


def test_a_wrong_password_ends_the_agent_with_the_fix_named(lab, prefix, secured):
    cluster, tls, env = secured("auth")
    wrong = env["FLANNELD_ETCD_PASSWORD"] + "-wrong"
    agent_env = dict(env, FLANNELD_ETCD_PASSWORD=wrong)
    agent = Agent(lab, new_host(lab, "h1"), prefix, *tls, endpoints=cluster.endpoint, env=agent_env).start()
    assert agent.wait() == 1
    log = agent.log()
    assert cluster.endpoint in log and "check etcd_username/etcd_password" in log, log
    assert wrong not in log


# --- a config change on a running cluster (the agent runs the config that is in etcd) ----

EXIT_CONFIG_CHANGED = 4


def put_backend(etcd: EtcdCtl, prefix: str, backend: dict) -> None:
    etcd.etcdctl("put", f"{prefix}/config", json.dumps({"Network": NETWORK, "Backend": backend}))


def links_of(host: Host) -> set[str]:
    return {link["ifname"] for link in json.loads(netns.ip(host.ns, "-j", "link", "show") or "[]")}


def test_a_backend_switch_in_etcd_ends_the_agent_and_its_successor_cleans_up(lab, prefix):
    """host-gw -> udp -> vxlan: each change ends the running agent with code 4 (systemd starts
    it again); the next one removes what the old backend left (host-gw's routes over the
    underlay, flannel0), keeps the subnet, advertises the new backend and writes its MTU."""
    put_backend(lab.etcd, prefix, {"Type": "host-gw"})
    h1 = new_host(lab, "h1")
    peer_ip = lab.address(next(_addresses))
    put_fake_peer(lab.etcd, prefix, "10.5.200.0/24", peer_ip)
    agent = Agent(lab, h1, prefix).start()
    agent.wait_ready()
    subnet = agent.subnet_env()["FLANNEL_SUBNET"]
    wait_until(lambda: "10.5.200.0/24" in h1.routes(), 10, "the host-gw route to the fake peer")

    for backend, device, mtu, gone in (("udp", "flannel0", "1472", None), ("vxlan", "flannel.1", "1450", "flannel0")):
        put_backend(lab.etcd, prefix, {"Type": backend})
        assert agent.wait(timeout=10) == EXIT_CONFIG_CHANGED
        assert f"-> '{backend}'" in agent.log(), agent.log()  # "Backend.Type 'host-gw' -> 'udp'"
        agent = Agent(lab, h1, prefix).start()
        agent.wait_ready()
        assert agent.subnet_env()["FLANNEL_SUBNET"] == subnet
        assert agent.subnet_env()["FLANNEL_MTU"] == mtu
        assert device in links_of(h1)
        if gone:
            assert gone not in links_of(h1), links_of(h1)
            assert f"removed udp device {gone}" in agent.log(), agent.log()
        # the host-gw route over the underlay is gone (udp would never sweep it itself)
        assert not {dst: gw for dst, gw in h1.routes().items() if gw == peer_ip}, h1.routes()
        own = leases_in(lab.etcd, prefix)[own_key(agent)]
        assert own.get("BackendType") == (None if backend == "udp" else backend), own
    agent.signal(signal.SIGTERM)
    assert agent.wait() == 0


def test_a_config_with_the_same_meaning_or_a_broken_one_is_not_followed(lab, prefix):
    put_backend(lab.etcd, prefix, {"Type": "host-gw"})
    agent = Agent(lab, new_host(lab, "h1"), prefix).start()
    agent.wait_ready()
    # the same network, other spelling: keys reordered, the defaults spelled out
    lab.etcd.etcdctl("put", f"{prefix}/config", json.dumps(
        {"Backend": {"Type": "host-gw"}, "SubnetLen": 24, "Network": NETWORK}))
    lab.etcd.etcdctl("put", f"{prefix}/config", '{"Network": "10.5.0.0/16", "Backend": {"Type": "nope"}}')
    wait_until(lambda: "ignoring the network config" in agent.log(), 10, "the broken config to be reported")
    lab.etcd.etcdctl("del", f"{prefix}/config")
    wait_until(lambda: "was deleted" in agent.log(), 10, "the deleted config to be reported")
    time.sleep(2)
    assert agent.alive(), agent.log()
    assert agent.log().count("ignoring the network config") == 1, agent.log()  # once per value
    put_config(lab.etcd, prefix)  # back to the one it runs: nothing happens
    time.sleep(2)
    assert agent.alive(), agent.log()
    agent.signal(signal.SIGTERM)
    assert agent.wait() == 0


@pytest.mark.skipif(not shutil.which("ping"), reason="needs ping")
def test_direct_routing_is_turned_on_and_off_in_place_with_no_restart(lab, prefix):
    """vxlan's DirectRouting is one of its SPEC.live_fields: the running agents re-plan their
    peers (a route over the underlay to a peer on our link, no neighbour/FDB for it; and back)
    and stay up, and traffic flows in both modes."""
    put_backend(lab.etcd, prefix, {"Type": "vxlan"})
    h1, h2 = new_host(lab, "h1"), new_host(lab, "h2")
    a1, a2 = Agent(lab, h1, prefix).start(), Agent(lab, h2, prefix).start()
    a1.wait_ready()
    a2.wait_ready()
    far_subnet = own_key(a2).replace("-", "/")
    far = far_subnet.split("/", 1)[0]
    for direct, gateway in ((True, h2.address), (False, far)):
        put_backend(lab.etcd, prefix, {"Type": "vxlan", "DirectRouting": direct})
        try:
            wait_until(lambda gw=gateway: h1.routes().get(far_subnet) == gw, 10,
                       f"h1's route to {far_subnet} via {gateway}")
        except WaitTimeout as exc:
            raise AssertionError(f"{exc}: routes {h1.routes()}; log:\n{a1.log()}") from None
        neighbours = netns.ip(h1.ns, "neigh", "show", "dev", "flannel.1")
        assert (far in neighbours) is not direct, neighbours
        wait_until(lambda: netns.ping(h1.ns, far), 10, f"h1 to reach {far} with DirectRouting {direct}")
        status, stats = h1.http_get("/stats")
        assert status == 200 and json.loads(stats)["config"]["Backend"]["DirectRouting"] is direct, stats
        assert a1.alive() and a2.alive(), a1.log() + a2.log()
    assert a1.log().count("applying it in place") == 2, a1.log()
    for agent in (a1, a2):
        agent.signal(signal.SIGTERM)
        assert agent.wait() == 0
