"""The rig of the fault tests: a light lab (3 hosts, 3 etcd members), vxlan, the real agent.

What the faults need beyond ``lab.overlay.Overlay``: agents with a short lease TTL, the
converge (``site.yml --tags flannel_lease``: the network config and every host's lease, the
part of site.yml that needs no systemd) run over SSH against the lab's inventory, the data
plane a peer holds for a subnet, a host cut off from etcd (iptables in its own namespace),
and when a lease key goes away.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from lab import Lab
from lab.overlay import PREFIX, Overlay
from lab.playbook import PlaybookRun
from lab.wait import wait_for
from support.ansible_run import BIN, REPO, ansible_env

TTL = 10  # the agents' lease TTL (the flag's minimum): a vanished host's lease goes within seconds
VXLAN = {"Type": "vxlan"}
ETCD_PORT = "2379"
SITE_TIMEOUT = 300


class Converge(PlaybookRun):
    """One ``ansible-playbook site.yml`` run (lab.playbook), with the fault tests' check."""

    def assert_ok(self, changed: bool | None = None) -> None:
        assert self.proc.returncode == 0, self.output
        recap = self.recap
        assert recap and all(h["failed"] == 0 and h["unreachable"] == 0 for h in recap.values()), recap
        if changed is False:
            assert all(h["changed"] == 0 for h in recap.values()), self.output
        ran = re.search(r"Acquire this host's subnet lease\].*?\n\n", self.proc.stdout, re.S)
        assert ran and all(f"[{host}]" in ran.group(0) for host in recap), self.output


class FaultLab(Overlay):
    """An Overlay (vxlan) on a 3-member etcd, with the fault tests' tools."""

    def __init__(self, lab: Lab, logs: Path) -> None:
        super().__init__(lab, VXLAN, logs)

    def start_agent(self, host: str, *extra: str) -> subprocess.Popen[bytes]:
        # renew margin 1 min > TTL: every renew check (TTL/4) renews
        log = self.logs / f"agent-{host}.log"
        ready_before = log.read_text().count("INFO ready:") if log.exists() else 0
        proc = super().start_agent(host, f"--subnet-lease-ttl={TTL}", "--subnet-lease-renew-margin=1",
                                   "--etcd-timeout=2", *extra)
        # an existing subnet file may look rewritten at once: wait for this agent's READY
        wait_for(lambda: log.read_text().count("INFO ready:") > ready_before or proc.poll() is not None, 30,
                 what=f"agent on {host} ready", interval=0.1)
        assert proc.poll() is None, log.read_text()[-2000:]
        return proc

    # --- the converge --------------------------------------------------------------------

    def site_argv(self, *args: str, **extra_vars: object) -> list[str]:
        """site.yml's lease part on the lab's hosts, as an operator runs it (SSH, the inventory);
        the role's venv is this checkout's (the light hosts share its filesystem)."""
        variables = {"flannel_venv_dir": str(REPO / ".venv"), "flannel_etcd_timeout": 2, **extra_vars}
        return [str(BIN / "ansible-playbook"), "-i", str(self.lab.inventory_path), str(REPO / "site.yml"),
                "--tags", "flannel_lease", "-e", json.dumps(variables), *args]

    def site_yml(self, *args: str, **extra_vars: object) -> Converge:
        t0 = time.monotonic()
        proc = subprocess.run(self.site_argv(*args, **extra_vars), cwd=REPO, env=ansible_env(),
                              capture_output=True, text=True, timeout=SITE_TIMEOUT, check=False)
        return Converge(proc, time.monotonic() - t0)

    def site_yml_started(self, *args: str, **extra_vars: object) -> subprocess.Popen[str]:
        """site.yml running in the background (two converges at once)."""
        return subprocess.Popen(self.site_argv(*args, **extra_vars), cwd=REPO, env=ansible_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def adhoc(self, host: str, module: str, args: dict[str, object] | None = None) -> Converge:
        """One module on one host (``ansible <host> -m <module>``), timed."""
        argv = [str(BIN / "ansible"), "-i", str(self.lab.inventory_path), host, "-m", module,
                *(["-a", json.dumps(args)] if args else [])]
        t0 = time.monotonic()
        proc = subprocess.run(argv, cwd=REPO, env=ansible_env(), capture_output=True, text=True,
                              timeout=SITE_TIMEOUT, check=False)
        return Converge(proc, time.monotonic() - t0)

    # --- etcd ----------------------------------------------------------------------------

    def key_of(self, subnet_key: str) -> str:
        return f"{PREFIX}/subnets/{subnet_key}"

    def etcd_lease_id(self, subnet_key: str) -> int:
        """The etcd lease the key is attached to (0: none, a reservation)."""
        out = self.lab.etcdctl("get", self.key_of(subnet_key), "-w", "json")
        kvs = json.loads(out).get("kvs") or []
        assert kvs, f"{subnet_key} is not in etcd"
        return int(kvs[0].get("lease", 0))

    def granted_ttl(self, subnet_key: str) -> int:
        """The TTL the key's etcd lease was granted with (0: a reservation)."""
        lease_id = self.etcd_lease_id(subnet_key)
        if not lease_id:
            return 0
        return int(json.loads(self.lab.etcdctl("lease", "timetolive", f"{lease_id:x}", "-w", "json"))["granted-ttl"])

    def wait_agents_on_their_ttl(self) -> None:
        """Until every agent's lease lives by the agents' TTL (not the converge's 24 h)."""
        wait_for(lambda: all(self.granted_ttl(self.lease_of(h)[0]) == TTL for h in self.agents), 10,
                 what=f"every agent's lease on a {TTL} s TTL", interval=0.2)

    def wait_peers_clean(self, host: str, subnet: str, public_ip: str, timeout: float = 5) -> float:
        """Seconds until no other host has a route, FDB or neighbour entry for *subnet* at *public_ip*."""
        others = [h for h in self.lab.hosts if h != host and h in self.agents]
        seen: dict[str, dict[str, bool]] = {}

        def clean() -> bool:
            seen.update({p: self.peer_state(p, subnet, public_ip) for p in others})
            return not any(any(state.values()) for state in seen.values())
        try:
            return wait_for(clean, timeout, what=f"peers dropping {subnet} at {public_ip}", interval=0.05)
        except AssertionError as exc:
            neigh = " | ".join(self.ip(p, "neigh", "show", "dev", "flannel.1") for p in others)
            raise AssertionError(f"{exc}; last seen {seen}: {neigh}") from None

    def has_key(self, subnet_key: str) -> bool:
        return bool(self.lab.etcdctl("get", self.key_of(subnet_key), "--keys-only").strip())

    def leases_by_ip(self) -> dict[str, list[str]]:
        """PublicIP -> the subnet keys holding it."""
        found: dict[str, list[str]] = {}
        for key, value in self.leases().items():
            found.setdefault(value["PublicIP"], []).append(key)
        return found

    def put_lease(self, subnet_key: str, public_ip: str, mac: str = "0e:00:00:00:0f:01") -> None:
        """A peer lease with no agent behind it (e.g. a host that took a subnet meanwhile)."""
        value = {"PublicIP": public_ip, "PublicIPv6": None, "BackendType": "vxlan",
                 "BackendData": {"VNI": 1, "VtepMAC": mac}}
        self.lab.etcdctl("put", self.key_of(subnet_key), json.dumps(value, separators=(",", ":")))

    @contextlib.contextmanager
    def recording_lease_events(self) -> Iterator[Path]:
        """Every change under <prefix>/subnets/ while the block runs, in a file (a failing
        test's story: who wrote or deleted which lease when)."""
        cluster = self.lab._etcd()
        path = self.logs / "lease-events.log"
        with open(path, "ab") as out:
            proc = subprocess.Popen(cluster.ctl_argv(["watch", "--prefix", f"{PREFIX}/subnets/"], command=3600),
                                    stdout=out, stderr=out, env=cluster.ctl_env())
        try:
            yield path
        finally:
            proc.terminate()
            proc.wait(10)

    # --- the data plane a peer holds for a subnet ----------------------------------------

    def peer_state(self, peer: str, subnet: str, public_ip: str) -> dict[str, bool]:
        """Whether *peer* has a route to *subnet*, an FDB entry towards *public_ip* and a
        neighbour entry for the subnet's VTEP address (vxlan: the subnet's .0)."""
        route = subnet in self.routes_to(peer, subnet)
        fdb_out = self.lab.run(peer, ["bridge", "fdb", "show", "dev", "flannel.1"], capture_output=True,
                               text=True, check=False).stdout
        neigh = self.ip(peer, "neigh", "show", "dev", "flannel.1")
        vtep = subnet.split("/")[0]
        return {"route": route, "fdb": f"dst {public_ip} " in fdb_out,
                "neigh": any(line.split()[:1] == [vtep] for line in neigh.splitlines())}

    def peers_follow(self, host: str, subnet: str, public_ip: str, timeout: float = 10) -> float:
        """Seconds until every other host routes *subnet* to *public_ip* (route, FDB, neighbour)."""
        others = [h for h in self.lab.hosts if h != host and h in self.agents]
        return wait_for(lambda: all(all(self.peer_state(p, subnet, public_ip).values()) for p in others),
                        timeout, what=f"peers programming {subnet} via {public_ip}", interval=0.1)

    # --- a host cut off from etcd --------------------------------------------------------

    @contextlib.contextmanager
    def cut_off_from_etcd(self, host: str) -> Iterator[None]:
        """Drop the host's packets to etcd's client port (in the host's own namespace); the
        overlay's own traffic (vxlan, udp 8472) still flows."""
        rule = ["OUTPUT", "-p", "tcp", "--dport", ETCD_PORT, "-j", "DROP"]
        self.lab.run(host, ["iptables", "-w", "-I", *rule], netns_only=True)
        try:
            yield
        finally:
            self.lab.run(host, ["iptables", "-w", "-D", *rule], netns_only=True, check=False)


def container_name(host: str) -> str:
    return f"c{host[1:]}"


@contextlib.contextmanager
def converged_lab(state: Path, etcd_members: int) -> Iterator[FaultLab]:
    """3 light hosts (prefix oflf-): the converge, an agent and a container on each, a full
    ping matrix, every lease on the agents' TTL."""
    with Lab.up(hosts=3, etcd_members=etcd_members, state_dir=state / "lab", prefix="oflf-") as lab:
        ov = FaultLab(lab, state)
        try:
            ov.site_yml().assert_ok()  # the network config and the hosts' leases
            for host in lab.hosts:
                ov.start_agent(host)
                ov.add_container(host, container_name(host))
            wait_for(lambda: not ov.ping_all(), 15, interval=0.2, what="full ping matrix")
            ov.wait_agents_on_their_ttl()
            yield ov
        finally:
            ov.stop_all()
