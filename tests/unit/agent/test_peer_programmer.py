"""How the peer changes reach the backend: a few one by one, a burst as one repair round
(whose cost does not grow with the number of changes)."""

from __future__ import annotations

from ansible_collections.overlaynet.flannel.plugins.module_utils.agent.logs import RepeatingErrors
from ansible_collections.overlaynet.flannel.plugins.module_utils.agent.notify import Notifier
from ansible_collections.overlaynet.flannel.plugins.module_utils.agent.peer_programmer import ONE_BY_ONE, PeerProgrammer
from ansible_collections.overlaynet.flannel.plugins.module_utils.deps import netaddr
from ansible_collections.overlaynet.flannel.plugins.module_utils.etcd.registry import SubnetEvent
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.config import NetworkConfig
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.lease import Lease, LeaseAttrs
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.peer_rules import PeerRules

CONFIG = NetworkConfig.from_dict({"Network": "10.5.0.0/16", "Backend": {"Type": "host-gw"}})


class RecordingBackend:
    """Records the calls the programmer makes (the backends themselves are tested against
    the kernel in tests/integration/backends)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def add_peer(self, lease: Lease) -> None:
        self.calls.append(("add", lease.key))

    def remove_peer(self, lease: Lease) -> None:
        self.calls.append(("remove", lease.key))

    def reconcile(self, peers: dict[str, Lease]) -> None:
        self.calls.append(("reconcile", sorted(peers)))


def lease(n: int) -> Lease:
    return Lease(netaddr.IPNetwork(f"10.5.{n}.0/24"), LeaseAttrs(f"192.168.81.{n}", None, "host-gw", None), 7, n,
                 create_revision=n)


def programmer() -> tuple[PeerProgrammer, RecordingBackend]:
    backend = RecordingBackend()
    rules = PeerRules(CONFIG, netaddr.IPNetwork("10.5.1.0/24"), "192.168.81.1", "host-gw")
    return PeerProgrammer(backend, rules, Notifier({}), RepeatingErrors(), lambda: "status"), backend  # type: ignore[arg-type]


def test_a_few_changes_go_one_by_one():
    prog, backend = programmer()
    prog.apply([SubnetEvent("put", lease(n).key, lease(n), n) for n in range(2, 2 + ONE_BY_ONE)])
    assert backend.calls == [("add", lease(n).key) for n in range(2, 2 + ONE_BY_ONE)]
    prog.apply([SubnetEvent("delete", lease(2).key, None, 99)])
    assert backend.calls[-1] == ("remove", lease(2).key)


def test_a_burst_of_changes_is_one_repair_round_over_all_peers():
    prog, backend = programmer()
    many = range(2, 3 + ONE_BY_ONE)
    prog.resync([lease(n) for n in many], {})
    assert backend.calls == [("reconcile", sorted(lease(n).key for n in many))]
    assert len(prog.peers.peers) == len(many)
    prog.apply([SubnetEvent("delete", lease(n).key, None, 99) for n in many])
    assert backend.calls[-1] == ("reconcile", [])


class CountingBackend(RecordingBackend):
    """reconcile() reports what it wrote, as the kernel backends do (None: not counted)."""

    def __init__(self, written: list[int | None | Exception]) -> None:
        super().__init__()
        self.written = written

    def reconcile(self, peers: dict[str, Lease]) -> int | None:  # type: ignore[override]
        super().reconcile(peers)
        result = self.written.pop(0)
        if isinstance(result, Exception):
            raise result
        return result


def test_rounds_are_all_counted_and_only_the_timers_writes_are_repairs():
    backend = CountingBackend([6, 2, None, RuntimeError("netlink"), 1])
    rules = PeerRules(CONFIG, netaddr.IPNetwork("10.5.1.0/24"), "192.168.81.1", "host-gw")
    prog = PeerProgrammer(backend, rules, Notifier({}), RepeatingErrors(), lambda: "status")  # type: ignore[arg-type]
    prog.resync([lease(n) for n in range(2, 3 + ONE_BY_ONE)], {})  # a burst: its 6 writes are the burst's changes
    assert (prog.rounds, prog.repairs) == (1, 0)
    for _round in range(4):  # the timer: 2 written back, nothing counted, a failed round, 1 written back
        prog.reconcile()
    assert (prog.rounds, prog.repairs) == (5, 3)


def test_counts_by_state():
    prog, _backend = programmer()
    own_ip = LeaseAttrs("192.168.81.1", None, "host-gw", None)  # our PublicIP: the peer rules turn it away
    hostile = Lease(netaddr.IPNetwork("10.5.9.0/24"), own_ip, 7, 9, create_revision=9)
    prog.resync([lease(2), lease(3), hostile], {"10.5.8.0-24": "not JSON"})
    assert prog.counts() == {"programmed": 2, "rejected": 1, "malformed": 1}
