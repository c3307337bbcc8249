"""site.yml on real machines: check mode on fresh machines, converge, converge again, pings.

Boots the machine lab (``lab.machine_lab``: 3 systemd-nspawn machines with docker, 3 etcd
members, namespace prefix ``oflr-`` so it never meets a developer's lab) and runs
``ansible-playbook -i <its inventory> site.yml`` as a user would:

1. ``--check`` on the fresh machines: nothing fails;
2. the first converge: nothing fails;
3. the second converge: ``changed=0`` on every host;
4. busybox containers on every pair of machines ping each other (``ping-matrix``);
5. the roles' parts that need facts of other parts, run alone by tag on the converged
   machines (``--tags flannel_lease,flannel_service,docker_bridge_configure``): ``changed=0``.

Wall times of each step are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
COLLECTIONS = REPO / "build" / "collections"
PREFIX = "oflr-"

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, systemd-nspawn)"
    for tool in ("systemd-nspawn", "etcd", "etcdctl", "nc", "ip"):
        if not shutil.which(tool):
            return f"{tool} is not installed"
    return None


def _recap(output: str) -> dict[str, dict[str, int]]:
    hosts: dict[str, dict[str, int]] = {}
    for m in re.finditer(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", output, re.M):
        hosts[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
    return hosts


@pytest.fixture(scope="module")
def machine_lab(tmp_path_factory):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    # docker's data dir inside a machine must not sit on overlayfs/tmpfs: keep it in the repo
    state = REPO / "lab" / ".machines" / "pytest"
    inventory = state / "inventory.yml"
    env = dict(os.environ, OFL_MACHINE_LAB_STATE=str(state), OFL_MACHINE_LAB_INVENTORY=str(inventory),
               OFL_MACHINE_LAB_PREFIX=PREFIX)
    lab = [sys.executable, "-m", "lab.machine_lab"]
    subprocess.run([*lab, "down"], cwd=REPO, env=env, capture_output=True, check=False)  # leftovers of a killed run
    t0 = time.monotonic()
    up = subprocess.run([*lab, "up", "--machines", "3", "--etcd-members", "3"], cwd=REPO, env=env,
                        capture_output=True, text=True, check=False)
    assert up.returncode == 0, up.stdout + up.stderr
    print(f"\n[machine lab] up in {time.monotonic() - t0:.1f} s")
    try:
        yield {"inventory": inventory, "env": env, "lab": lab}
    finally:
        down = subprocess.run([*lab, "down"], cwd=REPO, env=env, capture_output=True, text=True, check=False)
        assert down.returncode == 0, down.stdout + down.stderr
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
        assert PREFIX not in left, f"namespaces left behind: {left}"


def _playbook(lab, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    bindir = Path(sys.executable).parent
    env = dict(lab["env"], ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS), ANSIBLE_HOST_KEY_CHECKING="False",
               ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1",
               PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    t0 = time.monotonic()
    r = subprocess.run([str(bindir / "ansible-playbook"), "-i", str(lab["inventory"]), "site.yml", *args],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False)
    return r, time.monotonic() - t0


def test_site_yml_check_converge_idempotent_ping(machine_lab):
    # 1. check mode on fresh machines fails nothing
    r, t_check = _playbook(machine_lab, "--check")
    recap = _recap(r.stdout)
    print(f"[site.yml] check mode on fresh machines: {t_check:.1f} s")
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    assert len(recap) == 3 and all(h["failed"] == 0 and h["unreachable"] == 0 for h in recap.values()), recap

    # 2. first converge
    r, t_first = _playbook(machine_lab)
    recap = _recap(r.stdout)
    print(f"[site.yml] first converge: {t_first:.1f} s")
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    assert all(h["failed"] == 0 and h["changed"] > 0 for h in recap.values()), recap

    # 3. second converge changes nothing
    r, t_second = _playbook(machine_lab)
    recap = _recap(r.stdout)
    print(f"[site.yml] second converge: {t_second:.1f} s, recap {recap}")
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    changed = re.findall(r"^changed: \[.*$", r.stdout, re.M)
    assert all(h["changed"] == 0 for h in recap.values()), "\n".join(changed) + f"\n{recap}"

    # 4. containers on different machines reach each other
    p = subprocess.run([*machine_lab["lab"], "ping-matrix"], cwd=REPO, env=machine_lab["env"],
                       capture_output=True, text=True, timeout=300, check=False)
    print(p.stdout)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "✘" not in p.stdout

    # 5. parts run alone by tag (no install, no configure) find what they need and change nothing
    r, t_tags = _playbook(machine_lab, "--tags", "flannel_lease,flannel_service,docker_bridge_configure")
    recap = _recap(r.stdout)
    print(f"[site.yml] --tags flannel_lease,flannel_service,docker_bridge_configure: {t_tags:.1f} s, recap {recap}")
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    assert "Acquire this host's subnet lease" in r.stdout and "Create the agent's venv" not in r.stdout
    assert len(recap) == 3 and all(h["failed"] == 0 and h["changed"] == 0 for h in recap.values()), recap
