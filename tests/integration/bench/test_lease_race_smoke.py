"""The control-plane benchmark once at a small size, so it cannot rot: hosts racing for
leases through the engine against a real etcd, a network too small for them, and
flannel_lease through ansible-playbook on local hosts, each checked from etcd."""

from __future__ import annotations

import shutil

import pytest

from ansible_collections.overlaynet.flannel.plugins.module_utils.agent.lease_keeper import RENEW_JOB, LeaseKeeper
from ansible_collections.overlaynet.flannel.plugins.module_utils.agent.scheduler import Scheduler
from ansible_collections.overlaynet.flannel.plugins.module_utils.etcd.connection import EtcdConnection, EtcdSettings
from ansible_collections.overlaynet.flannel.plugins.module_utils.etcd.registry import LeaseRegistry
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.acquire import AcquireRequest, acquire
from bench import lease_race, lease_renew
from bench.lease_playbook import playbook_ok, run_playbook_hosts
from bench.race_hosts import attrs_of

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not shutil.which("etcd"), reason="needs etcd")]

HOSTS, CAPACITY = 50, 20


def test_fifty_racing_hosts_get_fifty_distinct_leases(etcd_server, etcd_prefix):
    run = lease_race.one_run(etcd_server, etcd_prefix, lease_race.BIG, HOSTS, workers=2)
    assert lease_race.race_ok(run), run
    assert (run["leases"], run["duplicates"], run["error_count"]) == (HOSTS, 0, 0)


def test_a_network_smaller_than_the_hosts_ends_exactly_full(etcd_server, etcd_prefix):
    run = lease_race.one_run(etcd_server, etcd_prefix, lease_race.small_network(CAPACITY), HOSTS, workers=2)
    counts = (run["capacity"], run["leases"], run["full"], run["error_count"])
    assert counts == (CAPACITY, CAPACITY, HOSTS - CAPACITY, 0), run
    assert run["duplicates"] == 0, run["problems"]
    assert "is full" in run["full_message"]


def test_flannel_lease_on_twenty_local_hosts_with_ten_forks(etcd_server, etcd_prefix):
    lease_race.write_config(etcd_server.endpoint, etcd_prefix, lease_race.BIG)
    run = run_playbook_hosts(etcd_server.endpoint, etcd_prefix, 20, 10)
    assert playbook_ok(run), run


def test_twenty_lease_keepers_cost_about_four_requests_a_day_each(etcd_server, etcd_prefix):
    lease_race.write_config(etcd_server.endpoint, etcd_prefix, lease_race.BIG)
    run = lease_renew.renew_cost(etcd_server, etcd_prefix, hosts=20, cycles=2, scale_to=2000)
    assert lease_renew.renew_ok(run), run
    assert run["per_host_cycle"] <= 4.5, run  # a look and a renewal (get, lease info, keep-alive)


def test_a_keeper_that_loses_its_lease_is_counted_not_raised(etcd_server, etcd_prefix):
    lease_race.write_config(etcd_server.endpoint, etcd_prefix, lease_race.BIG)
    registry = LeaseRegistry(EtcdConnection(EtcdSettings(endpoints=(etcd_server.endpoint,), timeout=10)), etcd_prefix)
    try:
        keepers = []
        for index in range(2):
            attrs = attrs_of(index)
            scheduler = Scheduler()
            keeper = LeaseKeeper(registry, attrs, acquire(registry, AcquireRequest(attrs, ttl=600)).lease,
                                 lease_renew.TTL_S, lease_renew.MARGIN_S, scheduler)
            scheduler.add(RENEW_JOB, keeper.renew, keeper.renew_every)
            keepers.append((keeper, scheduler))
        registry.delete(keepers[0][0].own)  # as an operator would: the agent exits on this
        lost: list[str] = []
        running = lease_renew.run_keepers(keepers, lost)
    finally:
        registry.conn.close()
    assert [pair[0] for pair in running] == [keepers[1][0]]
    assert len(lost) == 1 and "is gone or no longer ours" in lost[0], lost
