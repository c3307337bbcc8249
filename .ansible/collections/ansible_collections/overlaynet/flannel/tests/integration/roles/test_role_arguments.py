"""Bad role variables: one clear message naming the variable, nothing done on the host.

The roles' meta/argument_specs.yml are checked by Ansible before a role's first task; run
here against localhost with the bad value, the role must stop there (its install dir,
pointed into the test's temp dir, is never created)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from support.ansible_run import BIN, ansible_env

PLAYBOOK = Path(__file__).parent / "playbooks" / "role_arguments.yml"
CASES = [
    ("flannel", {"flannel_backend": {"type": "gre"}}, r"value of type must be one of: vxlan, host-gw, udp, got: gre"),
    ("flannel", {"flannel_etcd_endpoints": {"a": 1}},
     r"argument 'flannel_etcd_endpoints' is of type dict and we were unable to convert to list"),
    ("flannel", {"flannel_healthz_port": "nine"},
     r"argument 'flannel_healthz_port' is of type str and we were unable to convert to int"),
    ("flannel", {"flannel_backend": {"type": "vxlan", "vnii": 2}},
     r"flannel_backend\.vnii\. Supported parameters include"),
    ("docker_bridge", {"docker_bridge_install_docker": "perhaps"},
     r"argument 'docker_bridge_install_docker' is of type str and we were unable to convert to bool"),
]


@pytest.mark.parametrize(("role", "bad", "message"), CASES, ids=[next(iter(c[1])) for c in CASES])
def test_a_bad_variable_stops_the_role_before_its_first_task(tmp_path, role, bad, message):
    extra = {"role_name": role, "workdir": str(tmp_path), **bad}
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", "-e", json.dumps(extra),
                           str(PLAYBOOK)], env=ansible_env(), capture_output=True, text=True, timeout=120,
                          check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "Validating arguments against arg spec" in out
    assert re.search(message, out), out
    assert not (tmp_path / "install").exists()
