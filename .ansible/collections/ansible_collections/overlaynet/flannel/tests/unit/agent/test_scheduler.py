"""The agent's scheduler and back-off: named jobs, each saying when it is due again."""

from __future__ import annotations

import time

from ansible_collections.overlaynet.flannel.plugins.module_utils.agent.scheduler import Backoff, Scheduler


def test_due_jobs_run_in_order_and_say_when_they_run_again():
    ran: list[str] = []
    jobs = Scheduler()
    jobs.add("a", lambda: ran.append("a") or 60.0, 0)
    jobs.add("b", lambda: ran.append("b") or 0.0, 0)
    jobs.add("later", lambda: ran.append("later") or 0.0, 60)
    jobs.run_due()
    assert ran == ["a", "b"]
    jobs.run_due()
    assert ran == ["a", "b", "b"]  # b is due again at once, a in a minute
    assert jobs.wait(1.0) == 0.0


def test_a_job_made_due_before_it_is_added_stays_due():
    """During start-up the lease keeper may make "renew" due before the loop adds the job."""
    ran: list[str] = []
    jobs = Scheduler()
    jobs.due_at("renew", time.monotonic())
    jobs.add("renew", lambda: ran.append("renew") or 60.0, 60)
    jobs.run_due()
    assert ran == ["renew"]


def test_wait_is_capped_and_never_negative():
    jobs = Scheduler()
    assert jobs.wait(1.0) == 1.0
    jobs.add("soon", lambda: 1.0, 0.3)
    assert 0.0 < jobs.wait(1.0) <= 0.3
    jobs.due_in("soon", -5)
    assert jobs.wait(1.0) == 0.0


def test_backoff_doubles_up_to_its_limit_and_resets():
    backoff = Backoff(0.5, 3.0)
    assert [backoff.next() for _attempt in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert backoff.next() == 0.5
