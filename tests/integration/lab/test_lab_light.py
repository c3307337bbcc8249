"""The light-host lab: build, reach over Ansible, containers, etcd, tear-down, failures.

Runs as root with real namespaces, sshd and etcd:
``.venv/bin/python -m pytest tests/integration/lab/test_lab_light.py``.

The test labs use prefixes ``ofllt-`` (the module's lab) and ``ofllx-`` (short-lived
labs) and temporary state dirs, never the user's ``ofl-`` lab in ``lab/.state``.
Under pytest-xdist the worker number is added (``ofllt0-``).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from lab import FAIL_POINTS, Lab, LabError, procs  # noqa: E402
from lab import netns as lab_netns  # noqa: E402


def _missing_requirement() -> str | None:
    if os.geteuid() != 0:
        return "the lab needs root"
    for tool in ("ip", "etcd", "etcdctl", "unshare", "nsenter", "nc", "ssh-keygen", "ping"):
        if not shutil.which(tool):
            return f"{tool} is not installed (apt-get install iproute2 etcd-server ...)"
    if not (shutil.which("sshd") or os.path.exists("/usr/sbin/sshd")):
        return "sshd is not installed (apt-get install openssh-server)"
    return None


pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(_missing_requirement() is not None, reason=str(_missing_requirement())),
]

VENV_BIN = Path(sys.executable).parent
ETCDCTL_ENV = dict(os.environ, ETCDCTL_API="3")
SUBNET_ENV = ("FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.72.1/24\n"
              "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n")


def ansible_bin(name: str) -> str:
    found = shutil.which(name, path=str(VENV_BIN)) or shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed")
    return found


def ansible_env() -> dict[str, str]:
    return dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_HOST_KEY_CHECKING="False",
                ANSIBLE_RETRY_FILES_ENABLED="False")


def lab_prefix(base: str) -> str:
    """A test prefix (never the user's ``ofl-``); xdist workers get their own."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return f"{base}{worker.removeprefix('gw')}-"


def namespaces_with(prefix: str) -> list[str]:
    return [ns for ns in lab_netns.list_netns() if ns.startswith(prefix)]


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """Processes whose command line contains *text* (e.g. a state dir path)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            raw = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        cmd = raw.replace(b"\0", b" ").decode(errors="replace")
        if text in cmd and state != "Z":
            found.append((int(entry), cmd))
    return found


def assert_nothing_left(state_dir: Path, prefix: str, pids: list[int] = ()) -> None:
    assert namespaces_with(prefix) == []
    assert processes_mentioning(str(state_dir)) == []
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid), f"pid {pid} still alive"
    assert not (state_dir / "state.json").exists()
    assert not (state_dir / "inventory.yml").exists()
    assert not (state_dir / "hosts").exists()
    assert not (state_dir / "etcd").exists()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.fixture(scope="module")
def module_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Two light hosts and one etcd member, shared by the module (prefix ``ofllt-``)."""
    state = tmp_path_factory.mktemp("lab-state")
    with Lab.up(hosts=2, etcd_members=1, state_dir=state, prefix=lab_prefix("ofllt")) as lab:
        yield lab


def lab_damage(lab: Lab) -> list[str]:
    """What of the module's lab is gone: its state file, namespaces, processes."""
    gone = [] if lab.store.path.exists() else [f"state file {lab.store.path}"]
    st = lab.state or {}
    gone += [f"namespace {ns}" for ns in st.get("namespaces", []) if not lab_netns.exists(ns)]
    gone += [f"process {key} (pid {rec.get('pid')})" for key, rec in st.get("processes", {}).items()
             if not procs.alive(rec)]
    return gone


@pytest.fixture
def lab(module_lab: Lab) -> Iterator[Lab]:
    """The module's lab, checked whole before and after each test. Seen once in CI: the lab
    vanished under one test (namespaces, state file) and the next built a lab of its own
    on the prefix; now the test that broke it is named, and no later test builds on it."""
    damage = lab_damage(module_lab)
    if damage:
        pytest.fail(f"the module's lab was broken before this test; gone: {damage}; "
                    f"namespaces with its prefix now: {namespaces_with(module_lab.prefix)}")
    yield module_lab
    damage = lab_damage(module_lab)
    assert not damage, (f"the module's lab broke during this test; gone: {damage}; this process's "
                        f"netns {os.readlink('/proc/self/ns/net')}, PID 1's {os.readlink('/proc/1/ns/net')}")


@pytest.fixture
def scratch_state(tmp_path: Path) -> Path:
    """State dir of a short-lived lab (prefix ``ofllx-``)."""
    return tmp_path / "state"


def recorded_pids(lab: Lab) -> list[int]:
    assert lab.state is not None
    return [int(r["pid"]) for r in lab.state["processes"].values()]


# ---------------------------------------------------------------- the shared lab


def test_up_builds_hosts_and_etcd(lab: Lab) -> None:
    assert lab.hosts == ["h1", "h2"]
    assert lab.etcd_endpoints == ["http://192.168.81.2:2379"]
    assert lab.host_ns("h1") == f"{lab.prefix}h1"
    assert lab.host_address("h2") == "192.168.81.12"
    assert lab.host_run_dir("h1") == lab.state_dir / "hosts" / "h1" / "run"
    st = lab.status()
    assert st["up"]
    assert all(h["sshd"] for h in st["hosts"].values())
    assert st["etcd"]["etcd1"]["running"]
    assert sorted(namespaces_with(lab.prefix)) == sorted(
        f"{lab.prefix}{n}" for n in ("underlay", "etcd1", "h1", "h2"))


def test_root_namespace_untouched(lab: Lab) -> None:
    """No address, route or interface for the lab in the root namespace."""
    underlay = ipaddress.ip_network(lab.subnet)
    addrs = json.loads(subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True,
                                      check=True).stdout)
    for link in addrs:
        assert not link["ifname"].startswith(("v-", "vc-")), link["ifname"]
        for a in link.get("addr_info", []):
            if a["family"] == "inet":
                assert ipaddress.ip_address(a["local"]) not in underlay, link
    routes = subprocess.run(["ip", "-4", "route", "show", "match", str(underlay)],
                            capture_output=True, text=True, check=True).stdout
    assert not [r for r in routes.splitlines() if not r.startswith("default")], routes


def test_inventory(lab: Lab) -> None:
    import yaml

    inv = yaml.safe_load(lab.inventory_path.read_text())
    group = inv["all"]["children"]["flannel_hosts"]
    assert list(group["hosts"]) == ["h1", "h2"]
    h1 = group["hosts"]["h1"]
    assert h1["flannel_public_ip"] == "192.168.81.11"
    assert h1["flannel_iface"] == "eth0"
    assert f"ip netns exec {lab.prefix}h1 nc 127.0.0.1 22" in h1["ansible_ssh_common_args"]
    assert group["vars"]["ansible_user"] == "root"
    assert group["vars"]["flannel_etcd_endpoints"] == lab.etcd_endpoints
    assert group["vars"]["ansible_python_interpreter"] == str(REPO / ".venv" / "bin" / "python")
    assert Path(group["vars"]["ansible_ssh_private_key_file"]).exists()


def test_ansible_ping_and_facts(lab: Lab) -> None:
    ansible = ansible_bin("ansible")
    inv = str(lab.inventory_path)
    ping = subprocess.run([ansible, "-i", inv, "all", "-m", "ping"], capture_output=True,
                          text=True, env=ansible_env(), timeout=60, check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert ping.stdout.count('"pong"') == 2, ping.stdout
    t0 = time.monotonic()
    facts = subprocess.run(
        [ansible, "-i", inv, "h2", "-m", "setup", "-a",
         "filter=ansible_hostname,ansible_default_ipv4,ansible_service_mgr"],
        capture_output=True, text=True, env=ansible_env(), timeout=60, check=False)
    elapsed = time.monotonic() - t0
    assert facts.returncode == 0, facts.stdout + facts.stderr
    assert '"ansible_hostname": "h2"' in facts.stdout
    assert '"address": "192.168.81.12"' in facts.stdout
    assert '"ansible_service_mgr": "lab-hostinit"' in facts.stdout
    # without per-host /etc/hosts and resolv.conf this takes ~12 s
    assert elapsed < 8, f"fact gathering took {elapsed:.1f}s"


def test_host_context(lab: Lab) -> None:
    def sh(script: str) -> str:
        return lab.run("h1", ["sh", "-c", script], capture_output=True, text=True).stdout

    assert sh("hostname").strip() == "h1"
    flannel = lab.host_run_dir("h1") / "flannel"
    flannel.mkdir(exist_ok=True)
    (flannel / "probe").write_text("from outside\n")
    try:
        assert sh("cat /run/flannel/probe") == "from outside\n"
    finally:
        (flannel / "probe").unlink()
    assert sh("cat /proc/sys/net/ipv4/ip_forward").strip() == "1"
    mounts = sh("cat /proc/self/mounts")
    assert " /etc/systemd/system tmpfs " in mounts
    assert sh("cat /proc/1/cmdline | tr '\\0' ' '").count("_hostinit.py") == 1
    link = json.loads(sh("ip -j -d link show eth0"))[0]
    assert link["mtu"] == 1500 and "UP" in link["flags"]
    assert "192.168.81.11/24" in sh("ip -o -4 addr show eth0")
    # netns_only: network namespace only, root's hostname
    plain = lab.run("h1", ["hostname"], netns_only=True, capture_output=True, text=True)
    assert plain.stdout.strip() != "h1"
    # hosts reach each other on the underlay
    lab.run("h1", ["ping", "-c1", "-W2", lab.host_address("h2")], capture_output=True)


def test_etcd_reachable_from_hosts(lab: Lab) -> None:
    ep = ",".join(lab.etcd_endpoints)
    lab.run("h1", ["etcdctl", "--endpoints", ep, "put", "/lab-test/k", "v1"],
            env=ETCDCTL_ENV, capture_output=True)
    got = lab.run("h2", ["etcdctl", "--endpoints", ep, "get", "--print-value-only",
                         "/lab-test/k"], env=ETCDCTL_ENV, capture_output=True, text=True)
    assert got.stdout.strip() == "v1"
    assert lab.etcdctl("get", "--print-value-only", "/lab-test/k").strip() == "v1"


def test_etcd_stop_and_start_keeps_data(lab: Lab) -> None:
    lab.etcdctl("put", "/lab-test/persist", "kept")
    lab.stop_etcd(1)
    assert not lab.etcd_running(1)
    ep = lab.etcd_endpoints[0]
    down = lab.run("h1", ["etcdctl", "--endpoints", ep, "--dial-timeout", "500ms",
                          "--command-timeout", "1s", "get", "/lab-test/persist"],
                   env=ETCDCTL_ENV, check=False, capture_output=True, text=True)
    assert down.returncode != 0
    lab.start_etcd(1)
    assert lab.etcd_running(1)
    assert lab.etcdctl("get", "--print-value-only", "/lab-test/persist").strip() == "kept"


def test_containers_on_docker0(lab: Lab) -> None:
    with pytest.raises(LabError, match="FLANNEL_SUBNET"):
        lab.add_container("h1", "nolease")
    subnet_env = lab.host_run_dir("h1") / "flannel" / "subnet.env"
    subnet_env.parent.mkdir(exist_ok=True)
    subnet_env.write_text(SUBNET_ENV)
    try:
        c1 = lab.add_container("h1", "c1")
        assert c1 == {"name": "c1", "host": "h1", "netns": f"{lab.prefix}h1-c1",
                      "address": "10.5.72.2/24", "gateway": "10.5.72.1", "mtu": 1450}
        # docker0 exists now, without address; give it one, as the bridge module would
        lab.run("h1", ["ip", "addr", "add", "10.5.72.1/24", "dev", "docker0"])
        lab.run("c1", ["ping", "-c1", "-W2", "10.5.72.1"], capture_output=True)
        c2 = lab.add_container("h1", "c2")
        assert c2["address"] == "10.5.72.3/24"
        lab.run("c2", ["ping", "-c1", "-W2", "10.5.72.2"], capture_output=True)
        route = lab.run("c2", ["ip", "route", "show", "default"], capture_output=True,
                        text=True).stdout
        assert route.startswith("default via 10.5.72.1 dev eth0")
        mtu = json.loads(lab.run("c2", ["ip", "-j", "link", "show", "eth0"],
                                 capture_output=True, text=True).stdout)[0]["mtu"]
        assert mtu == 1450
        c3 = lab.add_container("h1", "c3", address="10.5.72.50/24")
        assert c3["gateway"] == "10.5.72.1"
        with pytest.raises(LabError, match="already"):
            lab.add_container("h1", "c3")
        for name in ("c1", "c2", "c3"):
            lab.remove_container(name)
        assert namespaces_with(f"{lab.prefix}h1-") == []
        links = lab.run("h1", ["ip", "-o", "link"], capture_output=True, text=True).stdout
        assert "vc-c1" not in links
    finally:
        subnet_env.unlink()


def test_container_with_bridge_address_on_second_host(lab: Lab) -> None:
    subnet_env = lab.host_run_dir("h2") / "flannel" / "subnet.env"
    subnet_env.parent.mkdir(exist_ok=True)
    subnet_env.write_text(SUBNET_ENV.replace("10.5.72.", "10.5.9."))
    try:
        c = lab.add_container("h2", "web", bridge_address=True)
        assert c["address"] == "10.5.9.2/24"
        lab.run("web", ["ping", "-c1", "-W2", "10.5.9.1"], capture_output=True)
    finally:
        lab.remove_container("web")
        subnet_env.unlink()


def test_add_and_remove_host(lab: Lab) -> None:
    import yaml

    name = lab.add_host()
    assert name == "h3"
    assert lab.host_address("h3") == "192.168.81.13"
    hosts = yaml.safe_load(lab.inventory_path.read_text())["all"]["children"][
        "flannel_hosts"]["hosts"]
    assert list(hosts) == ["h1", "h2", "h3"]
    out = lab.run("h3", ["hostname"], capture_output=True, text=True)
    assert out.stdout.strip() == "h3"
    pid = lab.host_pid("h3")
    sleeper = lab.popen("h3", ["sleep", "600"])  # e.g. an agent; dies with the host
    with pytest.raises(LabError, match="already"):
        lab.add_host("h3")
    with pytest.raises(LabError, match="bad host name"):
        lab.add_host("Bad_Name")
    lab.remove_host("h3")
    assert sleeper.wait(5) != 0
    assert not lab_netns.exists(f"{lab.prefix}h3")
    assert not Path(f"/proc/{pid}").exists() or _zombie(pid)
    hosts = yaml.safe_load(lab.inventory_path.read_text())["all"]["children"][
        "flannel_hosts"]["hosts"]
    assert list(hosts) == ["h1", "h2"]
    assert lab.hosts == ["h1", "h2"]


def test_a_second_nic_on_a_further_network(lab: Lab) -> None:
    """add_nic: eth1 on a switch of its own (<prefix>net1); the default route stays on eth0."""
    from ansible_collections.overlaynet.flannel.plugins.module_utils.host.underlay import (
        UnderlayChoice,
        select_underlay,
    )

    assert lab.add_nic("h2") == "192.168.82.12"
    assert lab.add_nic("h1", "eth1", "192.168.82.0/24") == "192.168.82.11"
    assert lab_netns.exists(f"{lab.prefix}net1") and lab.state is not None
    assert lab.state["hosts"]["h1"]["nics"] == {"eth1": {"address": "192.168.82.11", "subnet": "192.168.82.0/24"}}
    assert lab_netns.ping(lab.host_ns("h1"), "192.168.82.12")  # the two second NICs share a network
    h2 = lab.host_ns("h2")
    assert select_underlay(UnderlayChoice(), h2).iface == "eth0"
    assert select_underlay(UnderlayChoice(regexes=(r"^192\.168\.82\.",)), h2).iface == "eth1"
    with pytest.raises(LabError, match="taken"):
        lab.add_nic("h1", "eth1")
    with pytest.raises(LabError, match="overlaps"):
        lab.add_nic("h1", "eth2", "192.168.81.128/25")


def test_up_refuses_when_up(lab: Lab, scratch_state: Path) -> None:
    with pytest.raises(LabError, match="already up"):
        Lab.up(hosts=1, state_dir=lab.state_dir, prefix=lab.prefix).down()  # .down(): none left if built
    with pytest.raises(LabError, match="namespaces with prefix"):
        Lab.up(hosts=1, state_dir=scratch_state, prefix=lab.prefix).down()
    assert lab.status()["up"]
    assert not (scratch_state / "state.json").exists()


# ---------------------------------------------------------------- short-lived labs


def test_down_leaves_nothing(scratch_state: Path) -> None:
    prefix = lab_prefix("ofllx")
    lab = Lab.up(hosts=2, etcd_members=3, state_dir=scratch_state, prefix=prefix)
    assert len(lab.etcd_endpoints) == 3
    lab.add_container("h1", "c1", address="10.7.0.2/24")
    # a stray process in a host namespace (started around the lab) is removed as well
    stray = subprocess.Popen(["ip", "netns", "exec", lab.host_ns("h2"), "sleep", "600"])
    pids = recorded_pids(lab) + [stray.pid]
    lab.down()
    stray.wait(5)
    assert_nothing_left(scratch_state, prefix, pids)
    lab.down()  # idempotent


def test_down_after_crash_cleans_by_prefix(scratch_state: Path) -> None:
    prefix = lab_prefix("ofllx")
    lab = Lab.up(hosts=1, state_dir=scratch_state, prefix=prefix)
    pids = recorded_pids(lab)
    (scratch_state / "state.json").unlink()  # the crash lost the state file
    fresh = Lab(state_dir=scratch_state, prefix=prefix)
    assert fresh.status()["leftover_namespaces"]
    fresh.down()
    assert_nothing_left(scratch_state, prefix, pids)


@pytest.mark.parametrize("point", FAIL_POINTS)
def test_failed_up_leaves_nothing(scratch_state: Path, point: str) -> None:
    prefix = lab_prefix("ofllx")
    with pytest.raises(LabError, match=f"injected failure at '{point}'"):
        Lab.up(hosts=2, state_dir=scratch_state, prefix=prefix, fail_at=point)
    assert_nothing_left(scratch_state, prefix)


def test_bad_arguments(scratch_state: Path) -> None:
    with pytest.raises(LabError, match="prefix"):
        Lab(state_dir=scratch_state, prefix="ofl")
    with pytest.raises(LabError, match="1 or 3"):
        Lab.up(hosts=1, etcd_members=2, state_dir=scratch_state, prefix=lab_prefix("ofllx"))
    with pytest.raises(LabError, match="not an IPv4 network"):
        Lab.up(hosts=1, subnet="192.168.81.0/33", state_dir=scratch_state,
               prefix=lab_prefix("ofllx"))
    with pytest.raises(LabError, match="too small"):
        Lab.up(hosts=10, subnet="192.168.81.0/28", state_dir=scratch_state,
               prefix=lab_prefix("ofllx"))
    with pytest.raises(LabError, match="no lab is up"):
        Lab(state_dir=scratch_state, prefix=lab_prefix("ofllx")).add_host()
    assert namespaces_with(lab_prefix("ofllx")) == []


def test_cli(scratch_state: Path) -> None:
    prefix = lab_prefix("ofllx")
    base = [sys.executable, "-m", "lab", "--state-dir", str(scratch_state), "--prefix", prefix]

    def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*base, *args], cwd=REPO, capture_output=True, text=True,
                              timeout=60, check=False)
        if check:
            assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    try:
        assert "hosts h1" in cli("up", "--hosts", "1").stdout
        again = cli("up", "--hosts", "1", check=False)
        assert again.returncode == 1 and "already up" in again.stderr
        assert "sshd up" in cli("status").stdout
        assert cli("exec", "h1", "--", "hostname").stdout.strip() == "h1"
        assert "h2" in cli("add-host").stdout
        out = cli("add-container", "h2", "c1", "--address", "10.9.0.5/24").stdout
        assert f"{prefix}h2-c1 10.9.0.5/24 via 10.9.0.1" in out
        cli("exec", "c1", "--", "ip", "link", "show", "eth0")
        cli("remove-container", "c1")
        cli("remove-host", "h2")
        status = json.loads(cli("status", "--json").stdout)
        assert list(status["hosts"]) == ["h1"] and status["containers"] == {}
    finally:
        cli("down")
    assert_nothing_left(scratch_state, prefix)
    assert cli("status", check=False).returncode == 1


def test_foreign_namespace_with_prefix_is_left_alone(scratch_state: Path) -> None:
    """`down` cleans up by prefix only what the lab made (tagged); `up` refuses."""
    prefix = lab_prefix("ofllx")
    foreign = f"{prefix}notours"
    subprocess.run(["ip", "netns", "add", foreign], check=True)
    try:
        with pytest.raises(LabError, match="not made by the lab"):
            Lab.up(hosts=1, state_dir=scratch_state, prefix=prefix)
        Lab(state_dir=scratch_state, prefix=prefix).down()
        assert lab_netns.exists(foreign)
    finally:
        subprocess.run(["ip", "netns", "del", foreign], check=False)
    assert namespaces_with(prefix) == []
