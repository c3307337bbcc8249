"""Lab machines for real: systemd-nspawn + systemd + sshd + docker (DESIGN §6).

Builds (or reuses) the cached rootfs, boots two machines in two network namespaces
joined by a veth pair (192.168.81.0/24, inside the namespaces only), reaches them with
ssh through ``ProxyCommand ip netns exec <ns> nc 127.0.0.1 22`` and with ansible, runs
a busybox container that pings the other machine, and checks that stopping leaves no
mount, process or namespace behind. Needs root, systemd-nspawn and debootstrap.

Measured times are printed at the end of the module (boot to sshd, rootfs build).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab import busybox_image, cgroups, netns, rootfs
from lab.machines import Machine, netns_connect
from lab.rig import Rig

REPO = Path(__file__).resolve().parents[3]

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="lab machines need root"),
    pytest.mark.skipif(
        not (shutil.which("systemd-nspawn") and shutil.which("debootstrap") and shutil.which("nsenter")),
        reason="needs systemd-container, debootstrap and util-linux (apt-get install systemd-container debootstrap)",
    ),
]

ANSIBLE = Path(sys.executable).parent / "ansible"
if not ANSIBLE.exists():
    ANSIBLE = REPO / ".venv" / "bin" / "ansible"

UNDERLAY = {"a": "192.168.81.11", "b": "192.168.81.12"}
MEASURED: dict[str, object] = {}


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check)


def _mounts_below(path: Path) -> list[str]:
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return [ln.split()[4] for ln in f if ln.split()[4] == real or ln.split()[4].startswith(real + "/")]


@pytest.fixture(scope="module")
def rootfs_cache() -> Path:
    t0 = time.monotonic()
    fresh = not rootfs.is_complete(rootfs.rootfs_path())
    path = rootfs.ensure_rootfs()
    info = rootfs.manifest(path)
    MEASURED["rootfs"] = str(path)
    MEASURED["rootfs_built_now"] = fresh
    MEASURED["rootfs_build_seconds"] = round(time.monotonic() - t0, 1) if fresh else info["build_seconds"]
    MEASURED["rootfs_size_mib"] = round(info["size_bytes"] / 2**20)
    return path


@pytest.fixture(scope="module")
def keypair(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("oflm-key")
    key = d / "id_ed25519"
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "oflm-test", "-f", str(key))
    return key


TAG = secrets.token_hex(3)
NS = {s: f"oflm-{TAG}-{s}" for s in "ab"}
DEV = {s: f"oflm{TAG}{s}" for s in "ab"}  # <= 15 chars


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("oflm-lab") / "state"


def make_machine(lab: Rig, side: str, cache: Path, state: Path, key: Path, name: str | None = None) -> Machine:
    name = name or f"oflm{TAG}{side}"
    m = Machine(name, NS[side], cache, state, key.with_suffix(".pub").read_text(), hostname=name)
    lab.machines[name] = m
    return m


@pytest.fixture(scope="module")
def lab(rootfs_cache: Path, keypair: Path, state: Path):
    """Two namespaces joined by a veth pair, one machine in each (a Rig: the machines are
    stopped and the namespaces deleted afterwards)."""
    with Rig(f"oflm-{TAG}-", tag=None) as rig:
        for s in "ab":
            rig.namespace(s)
        netns.add_veth(NS["a"], DEV["a"], NS["b"], DEV["b"])
        for s in "ab":
            netns.ip(NS[s], "addr", "add", f"{UNDERLAY[s]}/24", "dev", DEV[s])
            netns.ip(NS[s], "link", "set", DEV[s], "up")
        ms = [make_machine(rig, side, rootfs_cache, state, keypair) for side in "ab"]
        for m in ms:
            m.boot()
        for m in ms:
            m.wait_ready(timeout=90)
        MEASURED["boot_to_sshd_s"] = {m.name: round(m.boot_to_sshd or 0, 2) for m in ms}
        MEASURED["boot_to_running_s"] = {m.name: round(m.boot_to_running or 0, 2) for m in ms}
        yield rig


def _ssh(key: Path, m: Machine, cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(m.ssh_argv(key, cmd), capture_output=True, text=True, timeout=60, check=False)


def test_machines_booted_with_systemd(lab: Rig) -> None:
    for m in lab.machines.values():
        assert m.system_state == "running", (m.name, m.system_state, m.failed_units())
        assert m.run(["cat", "/proc/1/comm"]).stdout.strip() == "systemd"
        assert m.run(["hostname"]).stdout.strip() == m.hostname
        assert m.run(["cat", "/etc/machine-id"]).stdout.strip() == m.machine_id


def test_machines_have_cgroups_of_their_own(lab: Rig) -> None:
    """Each machine's systemd runs in its own cgroup tree: machines sharing nspawn's
    ``payload/`` raced on each other's unit cgroups at boot (units failed with 219/CGROUP)."""
    seen = set()
    for m in lab.machines.values():
        path = next(ln[3:].strip() for ln in Path(f"/proc/{m.leader_pid}/cgroup").read_text().splitlines()
                    if ln.startswith("0::"))
        assert path == f"/{m.cgroup.relative_to(cgroups.v2_mount())}/payload/init.scope", (m.name, path)
        assert m.leader_pid in [int(p) for p in (m.cgroup / "payload/init.scope/cgroup.procs").read_text().split()]
        seen.add(path)
    assert len(seen) == len(lab.machines)


def test_ssh_through_proxycommand(lab: Rig, keypair: Path) -> None:
    for m in lab.machines.values():
        r = _ssh(keypair, m, "hostname; systemctl is-active docker; ip -br -4 addr")
        assert r.returncode == 0, r.stderr
        out = r.stdout.splitlines()
        assert out[0] == m.hostname
        assert out[1] == "active"
        # the machine shares the namespace: its underlay address is the namespace's
        side = "a" if m.netns_name == NS["a"] else "b"
        assert UNDERLAY[side] in r.stdout


def test_sshd_not_reachable_from_root_namespace(lab: Rig) -> None:
    """Nothing of the lab is routed from the root namespace (DESIGN §6)."""
    r = sh("ip", "-4", "route", "get", UNDERLAY["a"], check=False)
    assert DEV["a"] not in r.stdout and DEV["b"] not in r.stdout
    assert not [ln for ln in sh("ip", "-br", "addr").stdout.splitlines() if "192.168.81." in ln]
    # ...while the machine's sshd answers inside its namespace
    m = next(iter(lab.machines.values()))
    assert netns_connect(m.netns_path, "127.0.0.1", 22).startswith(b"SSH-2.0-")


def test_docker_container_pings_other_machine(lab: Rig) -> None:
    ma, mb = lab.machines.values()
    t0 = time.monotonic()
    for m in (ma, mb):
        image_id = busybox_image.import_into(m)
        assert image_id.startswith("sha256:")
    MEASURED["busybox_import_s"] = round((time.monotonic() - t0) / 2, 2)
    for m, other in ((ma, UNDERLAY["b"]), (mb, UNDERLAY["a"])):
        r = m.run(["docker", "run", "--rm", "ofl-busybox", "ping", "-c1", "-W3", other], check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "1 packets received" in r.stdout
    # relative applet symlinks: /bin/sh resolves inside the container
    r = ma.run(["docker", "run", "--rm", "ofl-busybox", "readlink", "/bin/sh"])
    assert r.stdout.strip() == "busybox"
    # docker's data root is the plain bind mount, not the overlay
    r = ma.run(["stat", "-f", "-c", "%T", "/var/lib/docker"])
    assert r.stdout.strip() != "overlayfs"
    assert (ma.docker_dir / "image").is_dir()


def test_ansible_service_mgr_is_systemd(lab: Rig, keypair: Path, tmp_path: Path) -> None:
    hosts = {m.name: m.ansible_host_vars(keypair) for m in lab.machines.values()}
    inv = tmp_path / "inventory.yml"
    inv.write_text(json.dumps({"all": {"hosts": hosts}}, indent=2))
    env = {
        **os.environ,
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        # no ControlPersist master (and its ProxyCommand) outliving the test
        "ANSIBLE_SSH_ARGS": "-o ControlMaster=no",
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
    }
    r = subprocess.run(
        [str(ANSIBLE), "all", "-i", str(inv), "-o", "-m", "setup", "-a", "filter=ansible_service_mgr"],
        capture_output=True, text=True, env=env, timeout=180,
        check=False,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # one line per host: "<host> | SUCCESS => {...}"
    results = {}
    for line in r.stdout.splitlines():
        host, sep, rest = line.partition(" | SUCCESS => ")
        if sep:
            results[host.strip()] = json.loads(rest)
    assert set(results) == set(hosts)
    for name, res in results.items():
        assert res["ansible_facts"]["ansible_service_mgr"] == "systemd", (name, res)


def test_wheels_install_offline_in_machine(lab: Rig) -> None:
    m = next(iter(lab.machines.values()))
    r = m.run(
        "python3 -m venv /tmp/oflm-v && "
        f"/tmp/oflm-v/bin/pip install -q --no-index --find-links {rootfs.WHEEL_DIR} "
        + " ".join(rootfs.PYTHON_PACKAGES)
        + " && /tmp/oflm-v/bin/python -c 'import etcd3, pyroute2, netaddr; print(\"ok\")'"
        " && rm -rf /tmp/oflm-v",
        timeout=180,
    )
    assert r.stdout.strip().endswith("ok")


def test_reboot_keeps_identity_and_load_from_state(lab: Rig, state: Path) -> None:
    """stop(remove=False) + boot() is a reboot: machine-id, ssh host key and docker
    images survive; Machine.load() re-attaches from the state file."""
    ma = next(iter(lab.machines.values()))
    if not ma.run(["docker", "image", "inspect", "ofl-busybox"], check=False).returncode == 0:
        busybox_image.import_into(ma)
    hostkey = ma.run(["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]).stdout
    ma.stop(remove=False)
    assert not ma.is_running()
    assert not _mounts_below(ma.dir)
    ma.boot()
    ma.wait_ready(timeout=90)
    assert ma.run(["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]).stdout == hostkey
    assert ma.run(["cat", "/etc/machine-id"]).stdout.strip() == ma.machine_id
    assert ma.run(["docker", "image", "inspect", "ofl-busybox"], check=False).returncode == 0
    again = Machine.load(state, ma.name)
    assert again.leader_pid == ma.leader_pid
    assert again.run(["systemctl", "is-active", "docker"]).stdout.strip() == "active"


def test_stop_after_controller_crash(lab: Rig, rootfs_cache: Path, state: Path, keypair: Path) -> None:
    """A controller that dies after boot() leaves machine.json; a new Machine object
    for the same name stops the orphan by its recorded PIDs. (Also: the namespace's
    lo is left down here; the machine's systemd brings it up.)"""
    ns = lab.namespace("c", lo_up=False)
    name = f"oflm{TAG}c"
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from lab.machines import Machine;"
        "m = Machine(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], open(sys.argv[6]).read());"
        "m.boot(); m.wait_ready(90); print(m.nspawn_pid, m.leader_pid)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(REPO), name, ns, str(rootfs_cache), str(state),
         str(keypair.with_suffix(".pub"))],
        capture_output=True, text=True, timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    nspawn_pid, leader_pid = map(int, r.stdout.split())
    orphan = Machine(name, ns, rootfs_cache, state, keypair.with_suffix(".pub").read_text())
    lab.machines[name] = orphan  # teardown stops it should an assert below fail
    with pytest.raises(Exception, match="running already"):
        orphan.boot()
    assert netns_connect(orphan.netns_path, "127.0.0.1", 22).startswith(b"SSH-")
    orphan.stop()
    del lab.machines[name]
    for pid in (nspawn_pid, leader_pid):
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert not (state / name).exists()
    assert not orphan.cgroup.exists()
    assert sh("ip", "netns", "pids", ns).stdout.split() == []
    lab.namespaces.delete(ns)


def test_stop_leaves_nothing(lab: Rig, state: Path) -> None:
    pids = []
    for m in lab.machines.values():
        pids += [m.nspawn_pid, m.leader_pid]
        pids += [int(p) for p in sh("ip", "netns", "pids", m.netns_name).stdout.split()]
    t0 = time.monotonic()
    for m in lab.machines.values():
        m.stop()
    MEASURED["stop_s"] = round((time.monotonic() - t0) / len(lab.machines), 2)
    for m in lab.machines.values():
        assert not m.is_running()
        assert not m.dir.exists()
        assert not m.cgroup.exists()
        assert sh("ip", "netns", "pids", m.netns_name).stdout.split() == []
    assert not _mounts_below(state)
    assert all(not Path(f"/proc/{p}").exists() for p in pids if p), pids
    assert not list(Path("/run/systemd/nspawn/propagate").glob("oflm*"))
    lab.close()
    names = sh("ip", "netns", "list").stdout
    assert all(ns not in names for ns in NS.values())


def test_failed_build_leaves_no_half_cache(tmp_path: Path) -> None:
    """A build that fails (bad Python package: before debootstrap; unreachable mirror:
    in debootstrap) raises a RootfsError naming the step and leaves no directory."""
    cache = tmp_path / "cache"
    cases = (
        ({"python_packages": ("no-such-package-oflm-xyz",)}, "pip download"),
        ({"mirror": "file:///nonexistent-oflm-mirror"}, "debootstrap"),
    )
    for kwargs, step in cases:
        with pytest.raises(rootfs.RootfsError, match=step):
            rootfs.ensure_rootfs(cache, log=lambda _m: None, **kwargs)
        assert [p.name for p in cache.iterdir()] == [".lock"]
        assert not _mounts_below(cache)


def test_mirror_from_apt_sources_and_cache_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OVERLAYNET_LAB_MIRROR", raising=False)
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    (apt / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\nTypes: deb\nURIs: http://mirror.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n"
    )
    (apt / "sources.list.d" / "other.list.disabled").write_text("deb http://nope.example/ bookworm main\n")
    assert rootfs.debian_mirror(apt_dir=apt) == "http://mirror.example/debian"
    (apt / "sources.list").write_text("deb [arch=amd64] http://first.example/debian bookworm main contrib\n")
    assert rootfs.debian_mirror(apt_dir=apt) == "http://first.example/debian"
    # a host on another release: its Debian mirror serves bookworm too
    (apt / "sources.list.d" / "debian.sources").unlink()
    (apt / "sources.list").write_text("deb http://other.example/debian trixie main\n")
    assert rootfs.debian_mirror(apt_dir=apt) == "http://other.example/debian"
    monkeypatch.setenv("OVERLAYNET_LAB_MIRROR", "http://env.example/debian")
    assert rootfs.debian_mirror(apt_dir=apt) == "http://env.example/debian"
    assert rootfs.cache_key() != rootfs.cache_key(packages=(*rootfs.APT_PACKAGES, "tcpdump"))
    assert rootfs.cache_key() == rootfs.cache_key(packages=tuple(reversed(rootfs.APT_PACKAGES)))


def test_zz_report(request: pytest.FixtureRequest) -> None:
    """Print the measured times (visible with -s or in the junit properties)."""
    for k, v in MEASURED.items():
        request.node.user_properties.append((k, v))
    with request.config.pluginmanager.get_plugin("capturemanager").global_and_fixture_disabled():
        print("\n[lab machines] " + json.dumps(MEASURED, sort_keys=True))
