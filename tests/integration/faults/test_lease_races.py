"""Two runs for the same host at once (two converges, or a converge and the agent), against a
real etcd, with the interleaving forced: run B does its whole acquisition between run A's
listing and run A's create. Both runs must end on the one lease B created first.

The lab-level version (two ``ansible-playbook site.yml`` at once) is in test_host_faults.py;
there the interleaving is left to chance, here it is certain.
"""

from __future__ import annotations

from ansible_collections.overlaynet.flannel.plugins.module_utils.deps import netaddr
from ansible_collections.overlaynet.flannel.plugins.module_utils.etcd.connection import EtcdConnection, EtcdSettings
from ansible_collections.overlaynet.flannel.plugins.module_utils.etcd.registry import LeaseRegistry
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.acquire import AcquireRequest, acquire
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.config import NetworkConfig
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.lease import LeaseAttrs

IP = "192.168.81.11"
HOST = "0123456789abcdef"


class LateCreator(LeaseRegistry):
    """A registry whose first create lets another run (`before_create`) go first."""

    def __init__(self, conn: EtcdConnection, prefix: str, before_create) -> None:
        super().__init__(conn, prefix)
        self.before_create = before_create

    def create(self, subnet, attrs, ttl, reservation):
        hook, self.before_create = self.before_create, None
        if hook is not None:
            hook()
        return super().create(subnet, attrs, ttl, reservation)


class CountingLists(LateCreator):
    """LateCreator that counts full listings: after a lost race only what changed is read."""

    full_listings = 0

    def list_leases(self):
        self.full_listings += 1
        return super().list_leases()


def registry(server, prefix: str, cls=LeaseRegistry, **kwargs) -> LeaseRegistry:
    return cls(EtcdConnection(EtcdSettings(endpoints=(server.endpoint,), timeout=5)), prefix, **kwargs)


def request(mac: str, previous: str) -> AcquireRequest:
    attrs = LeaseAttrs(IP, None, "vxlan", {"VNI": 1, "VtepMAC": mac}).with_host(HOST)
    return AcquireRequest(attrs, ttl=600, previous=netaddr.IPNetwork(previous))


def test_a_second_run_for_the_same_host_between_list_and_create_leaves_one_lease(etcd_server, etcd_prefix):
    other = registry(etcd_server, etcd_prefix)
    other.put_config(NetworkConfig.from_dict({"Network": "10.5.0.0/16", "Backend": {"Type": "vxlan"}}), 0)
    first: list = []
    racer = registry(etcd_server, etcd_prefix, LateCreator,
                     before_create=lambda: first.append(acquire(other, request("02:00:00:00:00:0b", "10.5.20.0/24"))))
    try:
        late = acquire(racer, request("02:00:00:00:00:0b", "10.5.10.0/24"))
        stored = etcd_server.get_prefix(f"{etcd_prefix}/subnets/")
        assert first[0].lease.subnet == netaddr.IPNetwork("10.5.20.0/24")
        assert list(stored) == [f"{etcd_prefix}/subnets/10.5.20.0-24"], stored  # one host, one lease
        assert late.lease.subnet == first[0].lease.subnet  # both runs end on it
        again = acquire(other, request("02:00:00:00:00:0b", "10.5.20.0/24"))
        assert not again.changed and again.lease.subnet == first[0].lease.subnet
    finally:
        racer.conn.close()
        other.conn.close()


def test_a_lost_race_for_a_key_is_retried_and_counted(etcd_server, etcd_prefix):
    other = registry(etcd_server, etcd_prefix)
    other.put_config(NetworkConfig.from_dict({"Network": "10.5.0.0/16", "Backend": {"Type": "vxlan"}}), 0)
    thief = AcquireRequest(LeaseAttrs("192.168.81.12", None, "vxlan", {"VNI": 1}), ttl=600,
                           requested=netaddr.IPNetwork("10.5.10.0/24"))
    # between our listing and our create, another host takes the subnet we chose
    racer = registry(etcd_server, etcd_prefix, CountingLists, before_create=lambda: acquire(other, thief))
    try:
        ours = acquire(racer, request("02:00:00:00:00:0b", "10.5.10.0/24"))
        calm = acquire(other, AcquireRequest(LeaseAttrs("192.168.81.13", None, "vxlan", {"VNI": 1}), ttl=600))
        assert ours.races_lost == 1 and ours.action == "created"
        # at 2,000 hosts every full listing is 2,000 leases: the re-listing after the lost race and
        # the look for a twin after the create read only the keys written since
        assert racer.full_listings == 1
        assert ours.lease.subnet != netaddr.IPNetwork("10.5.10.0/24")
        assert calm.races_lost == 0
    finally:
        racer.conn.close()
        other.conn.close()
