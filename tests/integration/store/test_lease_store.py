"""The lease registry and the acquire policy against a real etcd: races, renew, release, reservations, watch."""

from __future__ import annotations

import threading
import time

import pytest

from ansible_collections.overlaynet.flannel.plugins.module_utils.deps import netaddr
from ansible_collections.overlaynet.flannel.plugins.module_utils.errors import LeaseError, NetworkFullError
from ansible_collections.overlaynet.flannel.plugins.module_utils.etcd.connection import EtcdConnection, EtcdSettings
from ansible_collections.overlaynet.flannel.plugins.module_utils.etcd.registry import LeaseRegistry
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.acquire import AcquireRequest, acquire, release
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.config import NetworkConfig
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.lease import LeaseAttrs


def make_store(server, prefix: str, network: str = "10.5.0.0/16", **extra) -> LeaseRegistry:
    store = LeaseRegistry(EtcdConnection(EtcdSettings(endpoints=(server.endpoint,), timeout=5)), prefix)
    store.put_config(NetworkConfig.from_dict({"Network": network, "Backend": {"Type": "vxlan"}, **extra}), 0)
    return store


def attrs(ip: str) -> LeaseAttrs:
    return LeaseAttrs(ip, None, "vxlan", {"VNI": 1, "VtepMAC": "02:00:00:00:00:01"})


def test_fifty_concurrent_acquisitions_get_fifty_distinct_subnets(etcd_server, etcd_prefix):
    # A /26 network with /30 subnets has only 15 usable subnets below 100: use /24s in a /18
    # (63 subnets), so the 50 hosts race hard for the first 100 free ones.
    make_store(etcd_server, etcd_prefix, network="10.7.0.0/18")
    results: dict[str, str] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(50)

    def host(i: int) -> None:
        store = LeaseRegistry(EtcdConnection(EtcdSettings(endpoints=(etcd_server.endpoint,))), etcd_prefix)
        try:
            start.wait()
            ip = f"192.168.81.{i + 10}"
            results[ip] = str(acquire(store, AcquireRequest(attrs(ip), ttl=600)).lease.subnet)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)
        finally:
            store.conn.close()

    threads = [threading.Thread(target=host, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert len(results) == 50
    assert len(set(results.values())) == 50
    stored = etcd_server.etcdctl("get", "--prefix", "--keys-only", f"{etcd_prefix}/subnets/").split()
    assert sorted(stored) == sorted(f"{etcd_prefix}/subnets/{s.replace('/', '-')}" for s in results.values())


def test_same_public_ip_reuses_its_lease(etcd_server, etcd_prefix):
    store = make_store(etcd_server, etcd_prefix)
    first = acquire(store, AcquireRequest(attrs("192.168.81.11"), ttl=600))
    again = acquire(store, AcquireRequest(attrs("192.168.81.11"), ttl=600))
    assert first.changed and first.action == "created"
    assert not again.changed and again.lease.subnet == first.lease.subnet


def test_previous_subnet_is_taken_back_when_free(etcd_server, etcd_prefix):
    store = make_store(etcd_server, etcd_prefix)
    wanted = netaddr.IPNetwork("10.5.77.0/24")
    got = acquire(store, AcquireRequest(attrs("192.168.81.11"), ttl=600, previous=wanted))
    assert got.lease.subnet == wanted
    other = acquire(store, AcquireRequest(attrs("192.168.81.12"), ttl=600, previous=wanted))
    assert other.lease.subnet != wanted


def test_renew_gives_a_fresh_ttl(etcd_server, etcd_prefix):
    store = make_store(etcd_server, etcd_prefix)
    lease = acquire(store, AcquireRequest(attrs("192.168.81.11"), ttl=30)).lease
    time.sleep(2.2)
    assert store.lease_expires_in(lease) <= 28
    renewed = store.renew(lease, ttl=30)
    assert store.lease_expires_in(renewed) >= 29
    longer = store.renew(renewed, ttl=300)  # another TTL: a new etcd lease, same key and value
    assert store.lease_expires_in(longer) > 250
    assert store.get_lease(lease.subnet).attrs == lease.attrs


def test_renew_of_a_deleted_lease_is_an_error(etcd_server, etcd_prefix):
    store = make_store(etcd_server, etcd_prefix)
    lease = acquire(store, AcquireRequest(attrs("192.168.81.11"), ttl=60)).lease
    etcd_server.etcdctl("del", f"{etcd_prefix}/subnets/{lease.key}")
    with pytest.raises(LeaseError, match="gone or no longer ours"):
        store.renew(lease, ttl=60)


def test_leases_expire_but_reservations_do_not(etcd_server, etcd_prefix):
    store = make_store(etcd_server, etcd_prefix)
    short = acquire(store, AcquireRequest(attrs("192.168.81.11"), ttl=2)).lease
    reserved = acquire(store, AcquireRequest(attrs("192.168.81.12"), reservation=True)).lease
    assert reserved.is_reservation and not short.is_reservation
    deadline = time.monotonic() + 15
    while store.get_lease(short.subnet) is not None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert store.get_lease(short.subnet) is None
    assert store.get_lease(reserved.subnet) is not None
    # acquiring again with reservation=False keeps it a reservation (never converted)
    again = acquire(store, AcquireRequest(attrs("192.168.81.12"), ttl=60))
    assert again.lease.is_reservation and not again.changed
    assert store.renew(again.lease) == again.lease


def test_release_deletes_only_this_hosts_leases(etcd_server, etcd_prefix):
    store = make_store(etcd_server, etcd_prefix)
    mine = acquire(store, AcquireRequest(attrs("192.168.81.11"), ttl=600)).lease
    theirs = acquire(store, AcquireRequest(attrs("192.168.81.12"), ttl=600)).lease
    assert [lease.subnet for lease in release(store, "192.168.81.11", dry_run=True)] == [mine.subnet]
    assert store.get_lease(mine.subnet) is not None
    assert [lease.subnet for lease in release(store, "192.168.81.11")] == [mine.subnet]
    assert store.get_lease(mine.subnet) is None
    assert store.get_lease(theirs.subnet) is not None
    assert release(store, "192.168.81.11") == []


def test_requested_subnet_held_by_another_host_is_refused(etcd_server, etcd_prefix):
    store = make_store(etcd_server, etcd_prefix)
    theirs = acquire(store, AcquireRequest(attrs("192.168.81.12"), ttl=600)).lease
    with pytest.raises(LeaseError, match="held by 192.168.81.12"):
        acquire(store, AcquireRequest(attrs("192.168.81.11"), requested=theirs.subnet))
    with pytest.raises(LeaseError, match="not a /24 between"):
        acquire(store, AcquireRequest(attrs("192.168.81.11"), requested=netaddr.IPNetwork("10.9.1.0/24")))


def test_full_network_is_a_clear_error(etcd_server, etcd_prefix):
    store = make_store(etcd_server, etcd_prefix, network="10.8.0.0/28")  # 3 usable /30s
    for i in range(3):
        acquire(store, AcquireRequest(attrs(f"192.168.81.{11 + i}"), ttl=600))
    with pytest.raises(NetworkFullError, match="10.8.0.0/28 is full"):
        acquire(store, AcquireRequest(attrs("192.168.81.20"), ttl=600))


def test_list_changed_reads_only_the_keys_written_after_a_revision(etcd_server, etcd_prefix):
    store = make_store(etcd_server, etcd_prefix)
    kept = acquire(store, AcquireRequest(attrs("192.168.81.11"), ttl=600)).lease
    gone = acquire(store, AcquireRequest(attrs("192.168.81.12"), ttl=600)).lease
    revision = store.list_leases().revision
    release(store, "192.168.81.12")
    new = acquire(store, AcquireRequest(attrs("192.168.81.13"), ttl=600)).lease
    etcd_server.etcdctl("put", f"{etcd_prefix}/subnets/10.5.9.0-24", "{not json")
    changed = store.list_changed(revision)
    assert [lease.key for lease in changed.leases] == [new.key]  # not kept's, not the deleted one's
    assert [bad.key for bad in changed.malformed] == ["10.5.9.0-24"]
    assert changed.revision > revision and gone.key not in {kept.key, new.key} | {"10.5.9.0-24"}
    assert store.list_changed(changed.revision).leases == []


def test_watch_reports_puts_and_deletes_from_a_revision(etcd_server, etcd_prefix):
    store = make_store(etcd_server, etcd_prefix)
    revision = store.list_leases().revision
    responses, cancel = store.watch(revision + 1)
    seen = []

    def collect() -> None:
        for batch in responses:
            for event in batch.events:
                seen.append(store.decode_event(event, batch.revision))

    thread = threading.Thread(target=collect, daemon=True)
    thread.start()
    lease = acquire(store, AcquireRequest(attrs("192.168.81.11"), ttl=600)).lease
    release(store, "192.168.81.11")
    etcd_server.etcdctl("put", f"{etcd_prefix}/subnets/10.5.9.0-24", "{not json")
    deadline = time.monotonic() + 10
    while len(seen) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    cancel()
    assert [(e.kind, e.key) for e in seen] == [("put", lease.key), ("delete", lease.key), ("put", "10.5.9.0-24")]
    assert seen[0].lease.attrs == lease.attrs
    assert seen[1].lease is None
    assert seen[2].lease is None and "not valid JSON" in seen[2].error


def test_watch_raises_when_etcd_goes_away_and_after_compaction(etcd_prefix):
    from ansible_collections.overlaynet.flannel.plugins.module_utils.errors import EtcdUnavailableError
    from ansible_collections.overlaynet.flannel.plugins.module_utils.etcd.watch import WatchCompactedError
    from lab.etcd import Cluster

    server = Cluster.loopback().start()
    try:
        store = make_store(server, etcd_prefix)
        acquire(store, AcquireRequest(attrs("192.168.81.11"), ttl=600))
        revision = store.list_leases().revision
        release(store, "192.168.81.11")
        server.etcdctl("compact", str(revision + 1))
        batches, cancel = store.watch(revision)
        with pytest.raises(WatchCompactedError):
            next(batches)
        cancel()
        batches, cancel = store.watch(revision + 2)
        outcome: list[BaseException] = []

        def drain() -> None:
            try:
                for _unused in batches:
                    pass
            except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                outcome.append(exc)

        thread = threading.Thread(target=drain, daemon=True)
        thread.start()
        time.sleep(0.3)
        server.stop()
        thread.join(10)
        assert outcome and isinstance(outcome[0], EtcdUnavailableError)
    finally:
        server.close()


# EtcdConnection.call() runs an operation again on the next endpoint when an answer was
# lost in a failover. A lost answer cannot be made to happen on demand, so these run the
# same write twice from the same stale view, as the re-run does: the second must find the
# first one's effect and do nothing more.

def test_a_rerun_create_finds_its_own_key(etcd_server, etcd_prefix):
    store = make_store(etcd_server, etcd_prefix)
    subnet = netaddr.IPNetwork("10.5.33.0/24")
    first = store.create(subnet, attrs("192.168.81.11"), 600, False)
    again = store.create(subnet, attrs("192.168.81.11"), 600, False)
    assert first is not None and again is not None
    assert (again.etcd_lease_id, again.mod_revision) == (first.etcd_lease_id, first.mod_revision)
    assert store.create(subnet, attrs("192.168.81.12"), 600, False) is None  # another host: a lost race


def test_a_rerun_update_finds_its_own_write(etcd_server, etcd_prefix):
    store = make_store(etcd_server, etcd_prefix)
    lease = acquire(store, AcquireRequest(attrs("192.168.81.11"), ttl=600)).lease
    new = LeaseAttrs("192.168.81.11", None, "vxlan", {"VNI": 1, "VtepMAC": "02:00:00:00:00:09"})
    first = store.update(lease, new, lease.etcd_lease_id)
    again = store.update(lease, new, lease.etcd_lease_id)  # the same stale mod revision
    assert again.mod_revision == first.mod_revision and store.get_lease(lease.subnet).attrs == new
    with pytest.raises(LeaseError, match="changed while it was being updated"):
        store.update(lease, attrs("192.168.81.11"), lease.etcd_lease_id)  # someone else's change stays an error


def test_a_rerun_renewal_with_a_new_ttl_finds_its_new_etcd_lease(etcd_server, etcd_prefix):
    store = make_store(etcd_server, etcd_prefix)
    lease = acquire(store, AcquireRequest(attrs("192.168.81.11"), ttl=60)).lease
    first = store.renew(lease, ttl=300)
    again = store.renew(lease, ttl=300)  # from the lease as it was before the first run
    assert first.etcd_lease_id != lease.etcd_lease_id and again.etcd_lease_id == first.etcd_lease_id
    assert store.lease_expires_in(again) > 250
