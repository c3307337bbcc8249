"""The control-plane benchmark once at a small size, so it cannot rot: hosts racing for
leases through the engine against a real etcd, a network too small for them, and
flannel_lease through ansible-playbook on local hosts, each checked from etcd."""

from __future__ import annotations

import shutil

import pytest

from bench import lease_race, lease_renew
from bench.lease_playbook import playbook_ok, run_playbook_hosts

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
