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
