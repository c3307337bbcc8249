"""The overlaynet.flannel lab: light hosts and etcd in network namespaces, on one box.

Run from the repository root as ``python3 -m lab <command>`` (see ``lab/__main__.py``),
or use the Python API::

    from lab import Lab
    with Lab.up(hosts=3, etcd_members=1, state_dir=tmp_path, prefix="ofla-") as lab:
        ...

The one library of the labs, the test rigs and the benchmark (one job per module):

* ``state.py``        - state dir, state file, lock, defaults (prefix ``ofl-``), LabError
* ``netns.py``        - namespaces, veths, ``ip`` (``ip -n <ns>`` only; the netns-race retry)
* ``procs.py``        - processes started with argv lists, checked and stopped BY PID only
* ``wait.py``         - ``wait_for(predicate, timeout, what)``
* ``etcd.py``         - etcd: a member or a cluster, on loopback or in a namespace, plain or
  TLS (``tls.py`` makes the CA and certificates), etcdctl helpers; the one place etcd starts
* ``etcd_security.py`` - a lab's secured etcd (mutual TLS, auth): PKI and 0600 password
  files under the state dir, rebuilt from the state record, inventory variables
* ``underlay.py``     - the underlay switch (bridge ``br0``) and nodes plugged into it
                        (``plug_nic``: a node's further NIC, e.g. on a second switch)
* ``containers.py``   - container namespaces on a host's ``docker0``
* ``rig.py``          - :class:`Rig`: the namespaces, etcd and processes of one test
* ``engine.py``       - the engine importable as ``ansible_collections.overlaynet.flannel``
* ``core.py``         - the light lab :class:`Lab` (hosts with sshd, etcd, containers)
* ``light_hosts.py``  - per-host sshd in private mount/UTS/PID namespaces
* ``_hostinit.py``    - PID 1 of a light host (mounts, hostname, sshd)
* ``inventory.py``    - the Ansible inventory of the light lab
* ``overlay.py``      - the real agent on every light-lab host (tests, benchmark)
* ``playbook.py``     - ``ansible-playbook`` runs on a lab inventory: wall time, the one
                        recap parser, a per-task profile (``callback_plugins/task_profile.py``)
* ``machine_lab.py``  - the machine lab (``python -m lab.machine_lab``): ``machines.py``
  (systemd-nspawn), ``rootfs.py``, ``busybox_image.py``, ``cgroups.py``

Safety: nothing is ever added to the root network namespace; every namespace name
starts with the lab's prefix; processes are killed by recorded PID (checked against
their start time) or because they live in one of the lab's namespaces.
"""

from __future__ import annotations

from .core import FAIL_POINTS, Lab
from .state import DEFAULT_PREFIX, DEFAULT_STATE_DIR, DEFAULT_SUBNET, LabError

__all__ = ["DEFAULT_PREFIX", "DEFAULT_STATE_DIR", "DEFAULT_SUBNET", "FAIL_POINTS", "Lab",
           "LabError"]
