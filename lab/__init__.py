"""The overlaynet.flannel lab: light hosts and etcd in network namespaces, on one box.

Run from the repository root as ``python3 -m lab <command>`` (see ``lab/__main__.py``),
or use the Python API::

    from lab import Lab
    with Lab.up(hosts=3, etcd_members=1, state_dir=tmp_path, prefix="ofla-") as lab:
        ...

Layout of the package (one job per module):

* ``state.py``        - state dir, state file, lock, defaults (prefix ``ofl-``)
* ``netns.py``        - namespaces, veths, bridges through ``ip -n <ns>`` only
* ``underlay.py``     - the underlay bridge namespace and host/etcd attachment
* ``etcd_cluster.py`` - etcd members (1 or 3), start/stop/health
* ``light_hosts.py``  - per-host sshd in private mount/UTS/PID namespaces
* ``_hostinit.py``    - PID 1 of a light host (mounts, hostname, sshd)
* ``containers.py``   - container namespaces on a host's ``docker0``
* ``inventory.py``    - the Ansible inventory
* ``procs.py``        - daemons started with argv lists, killed by PID only
* ``core.py``         - the :class:`Lab` class tying it together

Safety: nothing is ever added to the root network namespace; every namespace name
starts with the lab's prefix; processes are killed by recorded PID (checked against
their start time) or because they live in one of the lab's namespaces.
"""

from __future__ import annotations

from .core import FAIL_POINTS, Lab
from .state import DEFAULT_PREFIX, DEFAULT_STATE_DIR, DEFAULT_SUBNET, LabError

__all__ = ["DEFAULT_PREFIX", "DEFAULT_STATE_DIR", "DEFAULT_SUBNET", "FAIL_POINTS", "Lab",
           "LabError"]
