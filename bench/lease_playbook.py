"""flannel_lease through ansible-playbook on many local-connection hosts at once (issue 10).

An inventory of --playbook-hosts hosts, each ``ansible_connection: local`` with its own
public_ip (198.18.0.0/15, data only: nothing is sent to it) and its own subnet file in a
temporary directory; one play runs the real module of this checkout (build/collections,
as the tests' ansible runs use it) with --forks. Measured: the wall time of the
ansible-playbook run. Checked: every host's subnet file names the subnet etcd holds for
its PublicIP, and etcd holds nothing else (bench/lease_check.py).
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.lease_check import check_store, stored_leases
from bench.race_hosts import public_ip
from lab.engine import link_collection, parse_env_text

PLAY = """---
- name: Every host leases a subnet
  hosts: all
  gather_facts: false
  tasks:
    - name: Lease
      overlaynet.flannel.flannel_lease:
        etcd_endpoints: ["{{ endpoint }}"]
        etcd_prefix: "{{ prefix }}"
        iface: lo
        public_ip: "{{ public_ip }}"
        subnet_file: "{{ subnet_file }}"
"""


def inventory(hosts: int, workdir: Path) -> dict[str, Any]:
    return {"all": {"hosts": {
        f"h{i}": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                  "public_ip": public_ip(i), "subnet_file": str(workdir / f"h{i}.env")}
        for i in range(hosts)}}}


def _env() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(link_collection()), ANSIBLE_NOCOLOR="1",
                ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_LOCALHOST_WARNING="False",
                PATH=f"{bin_dir}:{os.environ.get('PATH', '')}")


def subnet_of(env_file: Path) -> str | None:
    """The lease key (10.0.3.0-24) a subnet file's FLANNEL_SUBNET (10.0.3.1/24) names, read
    with the engine's subnet.env parser; None without a file or a valid
    FLANNEL_SUBNET line."""
    try:
        subnet = parse_env_text(env_file.read_text()).get("FLANNEL_SUBNET")
    except OSError:
        return None
    try:
        network = ipaddress.ip_interface(subnet or "").network
    except ValueError:
        return None  # counted as a missing subnet file: the check fails
    return f"{network.network_address}-{network.prefixlen}"


def run_playbook_hosts(endpoint: str, prefix: str, hosts: int, forks: int) -> dict[str, Any]:
    """One ansible-playbook run over *hosts* local hosts; its wall time and the check."""
    with tempfile.TemporaryDirectory(prefix="oflcp-play-") as tmp:
        work = Path(tmp)
        (work / "inventory.json").write_text(json.dumps(inventory(hosts, work)))
        (work / "play.yml").write_text(PLAY)
        cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(work / "inventory.json"),
               "-f", str(forks), "-e", json.dumps({"endpoint": endpoint, "prefix": prefix}), str(work / "play.yml")]
        t0 = time.monotonic()
        proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=1800, check=False)
        wall = time.monotonic() - t0
        reported = {public_ip(i): subnet_of(work / f"h{i}.env") for i in range(hosts)}
    check = check_store(stored_leases(endpoint, prefix), {ip: key for ip, key in reported.items() if key})
    return {"hosts": hosts, "forks": forks, "wall_s": round(wall, 2), "rc": proc.returncode,
            "leases": check.leases, "duplicates": len(check.duplicates), "problems": check.duplicates[:10],
            "missing_subnet_files": sum(key is None for key in reported.values()),
            "output_tail": proc.stdout[-3000:] if proc.returncode else ""}


def playbook_ok(run: dict[str, Any]) -> bool:
    return (run["rc"] == 0 and run["duplicates"] == 0 and run["leases"] == run["hosts"]
            and run["missing_subnet_files"] == 0)
