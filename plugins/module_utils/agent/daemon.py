"""The agent (our flanneld): start up, then follow the leases, renew ours and repair drift.

Start-up is bringup.py, step by step. Then one thread does everything in order: messages
arrive in the inbox (watch batches from the WatchFeed thread, stops from the signal
handler), and the scheduler's timers probe etcd, renew the lease (lease_keeper.py),
reconcile the data plane (peer_programmer.py) and re-check the iptables rules. While etcd
is unreachable the data plane is left exactly as it is; the watch resumes from the last
revision seen, or, when that was compacted, the leases are listed again and diffed against
the peer cache.

Exit codes: 0 after SIGTERM/SIGINT (the lease and the data plane stay), 1 on a fatal
error, 2 on bad flags, 3 when our lease was deleted or taken by someone else, 4 when the
network config in etcd changed (config_guard.py): systemd starts the agent again on it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import queue
import signal
import sys
from collections.abc import Sequence
from typing import Any

from .. import systemd_fds
from ..errors import EtcdUnavailableError, FlannelError
from ..etcd.registry import LeaseRegistry
from ..etcd.watch import WatchBatch, WatchCompactedError, watch_prefix
from ..subnet.peer_rules import PeerRules
from ..version import VERSION
from . import exported, flags
from .bringup import BringUp, Running, Stopped, Waiter, renew_margin
from .config_guard import EXIT_CONFIG_CHANGED, ConfigChanged, ConfigGuard
from .feed import WatchFeed
from .healthz import Health
from .lease_keeper import RENEW_JOB, LeaseKeeper, LeaseLost
from .logs import RepeatingErrors, setup_logging
from .messages import Message, Stop, WatchBatchArrived, WatchEnded
from .notify import Notifier
from .peer_programmer import PeerProgrammer
from .scheduler import Backoff, Scheduler

EXIT_OK, EXIT_FAILURE, EXIT_LEASE_LOST = 0, 1, 3
log = logging.getLogger("flannel-agent")


class Agent:
    def __init__(self, opts: argparse.Namespace, notifier: Notifier | None = None) -> None:
        self.opts = opts
        self.notifier = notifier or Notifier()
        self.health = Health()
        # A SimpleQueue, because the signal handler puts into it (its put is reentrant).
        self.inbox: queue.SimpleQueue[Message] = queue.SimpleQueue()
        self.stopping = False
        self.scheduler = Scheduler()
        self.errors = RepeatingErrors()
        self.waiter = Waiter(self.inbox, self._tick, lambda: self.stopping, self.notifier)
        self.bringup = BringUp(opts, self.health, self.notifier, self.waiter, self.errors)
        self.up: Running
        self.keeper: LeaseKeeper
        self.programmer: PeerProgrammer
        self.revision = 0  # the last etcd revision whose lease events we have applied
        self.feed: WatchFeed | None = None
        self.config_feed: WatchFeed | None = None  # <prefix>/config: every agent sees a change at once
        self._tokens = itertools.count(1)
        self.etcd_ok = True
        self._probe_backoff = Backoff(1.0, 5.0)
        self._watch_backoff = Backoff(0.5, 5.0)
        self.watch_starts = 0  # lease watches opened; all but the first are restarts
        self.health.metrics = self._metrics

    @property
    def registry(self) -> LeaseRegistry:
        return self.up.registry

    # --- entry -------------------------------------------------------------------------

    def stop(self, *_: Any) -> None:
        """Signal handler: leave the loop; the lease and the data plane stay."""
        self.stopping = True
        self.inbox.put(Stop())

    def run(self) -> int:
        try:
            self._start_up()
            self._serve()
            log.info("stopping on request; the lease and the data plane stay in place")
            return EXIT_OK
        except Stopped:
            log.info("stopping on request during start-up")
            return EXIT_OK
        except LeaseLost as exc:
            log.error("%s; exiting", exc)
            return EXIT_LEASE_LOST
        except ConfigChanged as exc:
            log.warning("%s", exc)
            return EXIT_CONFIG_CHANGED
        except FlannelError as exc:
            log.error("%s", exc)
            return EXIT_FAILURE
        finally:
            self._shut_down()

    def _shut_down(self) -> None:
        self.notifier.stopping()
        if self.feed is not None:
            self.feed.cancel()
        self._stop_config_watch()
        for resource in (self.bringup.backend, self.bringup.healthz, self.bringup.conn):
            if resource is not None:
                resource.close()

    def _start_up(self) -> None:
        self.up = up = self.bringup.run()
        self.keeper = LeaseKeeper(up.registry, up.attrs, up.own, self.opts.subnet_lease_ttl,
                                  renew_margin(self.opts), self.scheduler)
        rules = PeerRules(up.config, up.own.subnet, up.attrs.public_ip, up.attrs.backend_type, up.attrs.backend_data)
        self.programmer = PeerProgrammer(up.backend, rules, self.notifier, self.errors, self._status)
        self.config_guard = ConfigGuard(up.config, up.registry.config_key)
        self.health.stats = self._stats
        self.waiter.until_ok("list the leases", self._resync, (EtcdUnavailableError,))
        self.health.ready = True
        self.notifier.ready(self._status())
        log.info("ready: %s", self._status())

    # --- the loop ----------------------------------------------------------------------

    def _serve(self) -> None:
        opts, jobs = self.opts, self.scheduler
        jobs.add("probe", self._probe, opts.etcd_probe_interval)
        jobs.add(RENEW_JOB, self.keeper.renew, self.keeper.renew_every)
        jobs.add("reconcile", self._reconcile, opts.reconcile_interval)
        jobs.add("firewall", self.up.firewall, opts.iptables_resync)
        self._start_watch()
        self._start_config_watch()
        while not self.stopping:
            self._tick()
            try:
                message: Message | None = self.inbox.get(timeout=jobs.wait(1.0))
            except queue.Empty:
                message = None
            if self.stopping:
                return
            self._dispatch(message)
            jobs.run_due()

    def _dispatch(self, message: Message | None) -> None:
        """Messages of the current watch feeds; those of a replaced feed are stale."""
        if not isinstance(message, (WatchBatchArrived, WatchEnded)):
            return
        if self.config_feed is not None and message.token == self.config_feed.token:
            self._config_message(message)
            return
        if self.feed is None:
            return
        if message.token != self.feed.token:
            return
        if isinstance(message, WatchBatchArrived):
            self._apply_batch(message.batch)
        else:
            self._watch_failed(message.error)

    def _tick(self) -> None:
        self.health.beat()
        self.notifier.watchdog()

    def _status(self) -> str:
        turned_away = len(self.programmer.peers.rejected) + len(self.programmer.malformed)
        rejected = f", {turned_away} lease(s) rejected" if turned_away else ""
        return f"lease {self.keeper.own.subnet}, {len(self.programmer.peers.peers)} peer(s){rejected}"

    def _stats(self) -> dict[str, Any]:
        """/stats: the network config it runs, the peers, what was turned away and why, and
        the backend's own counters."""
        # as etcd_network_config returns them: the config with its secrets hidden, and its digest
        running = {"config": self.up.config.shown(), "config_digest": self.up.config.digest()}
        return {**running, **self._backend_stats(), **self.programmer.stats()}

    def _backend_stats(self) -> dict[str, Any]:
        backend_stats = getattr(self.up.backend, "stats", None)
        return backend_stats() if callable(backend_stats) else {}

    def _metrics(self) -> str:
        """/metrics (exported.py), read at scrape time from where each fact is kept; before
        start-up is done, only the build info and the etcd counters."""
        conn = self.bringup.conn
        running = None
        if self.health.ready:
            programmer = self.programmer
            running = exported.RunningFacts(
                str(self.keeper.own.subnet), self.keeper.expires_at(), programmer.counts(), programmer.rounds,
                programmer.repairs, max(self.watch_starts - 1, 0), self._backend_stats())
        backend = self.up.config.backend.type if running is not None else ""
        return exported.render(exported.AgentFacts(backend, conn.errors if conn else 0,
                                                   conn.reconnects if conn else 0, running))

    # --- following the leases ------------------------------------------------------------

    def _resync(self) -> None:
        """List every lease and bring the peer cache (and the data plane) in line with it."""
        listing = self.registry.list_leases()
        own = self.keeper.own.key
        mine = next((lease for lease in listing.leases if lease.key == own), None)
        self.keeper.check(mine, "list")
        self.programmer.resync([lease for lease in listing.leases if lease.key != own],
                               {bad.key: bad.reason for bad in listing.malformed if bad.key != own})
        self.revision = listing.revision

    def _apply_batch(self, batch: WatchBatch) -> None:
        self._watch_backoff.reset()
        others = []
        for raw in batch.events:
            event = self.registry.decode_event(raw, raw.mod_revision)
            if event.key == self.keeper.own.key:
                self.keeper.check(event.lease if event.kind == "put" else None, event.kind)
            else:
                others.append(event)
        self.programmer.apply(others)
        self.revision = max(self.revision, batch.revision)

    def _config_message(self, message: WatchBatchArrived | WatchEnded) -> None:
        """The config key's events go to the guard; a broken config watch is opened again by
        the next probe, which reads the config itself meanwhile."""
        if isinstance(message, WatchEnded):
            log.debug("the config watch stopped (%s)", message.error)
            self._stop_config_watch()
            return
        for raw in message.batch.events:
            if raw.key == self.registry.config_key.encode():
                self._follow_config(None if type(raw).__name__ == "DeleteEvent" else raw.value)

    def _follow_config(self, raw: bytes | None) -> None:
        """The config key's value as read: nothing to do, a change the backend applies in place
        (setup() again with it, then a repair round re-plans every peer), or ConfigChanged."""
        new = self.config_guard.check(raw)
        if new is None:
            return
        up = self.up
        if up.backend.setup(new) != up.setup:
            # what this host advertises or its MTU would change: only a restart is safe
            raise ConfigChanged(f"the network config at {self.registry.config_key} changed what this host "
                                f"advertises; exiting with code {EXIT_CONFIG_CHANGED} to start again on it")
        up.config = new
        self.config_guard.accept(new)
        self.programmer.reconcile(drift=False)  # a config change, not drift
        log.info("now running the network config %s", json.dumps(new.shown(), sort_keys=True))  # secrets hidden

    def _start_config_watch(self) -> None:
        key = self.registry.config_key
        try:
            # from now (revision 0): what changed before is what the probe reads
            self.config_feed = WatchFeed(self.registry, 0, self.inbox, next(self._tokens),
                                         opener=lambda rev: watch_prefix(self.registry.conn.client(), key, rev)).start()
        except FlannelError as exc:
            log.debug("cannot watch %s yet (%s); the probe reads it", key, exc)

    def _stop_config_watch(self) -> None:
        if self.config_feed is not None:
            self.config_feed.cancel()
            self.config_feed = None

    def _start_watch(self) -> None:
        try:
            self.feed = WatchFeed(self.registry, self.revision + 1, self.inbox, next(self._tokens)).start()
        except FlannelError as exc:
            self._watch_failed(exc)
            return
        self.watch_starts += 1
        log.debug("watching %s from revision %d", self.registry.subnets_prefix, self.revision + 1)

    def _stop_watch(self) -> None:
        if self.feed is not None:
            self.feed.cancel()
            self.feed = None
        self._stop_config_watch()

    def _watch_failed(self, exc: Exception) -> None:
        self._stop_watch()
        if isinstance(exc, WatchCompactedError):
            log.warning("revision %d was compacted away; listing the leases again", self.revision + 1)
            try:
                self._resync()
            except EtcdUnavailableError as err:
                self._etcd_down(str(err))
                return
            self._start_watch()
            return
        delay = self._watch_backoff.next()
        log.warning("the lease watch stopped (%s); checking etcd in %gs", exc, delay)
        self.scheduler.due_in("probe", delay)

    def _etcd_down(self, reason: str) -> None:
        self._stop_watch()
        if self.etcd_ok:
            self.etcd_ok = False
            log.warning("etcd is unavailable (%s); the data plane stays as it is", reason)
            self.notifier.status("etcd unavailable; data plane unchanged")

    # --- timers (each returns the seconds until it is due again) -------------------------

    def _probe(self) -> float:
        """A light request; it catches an etcd that went away without closing the stream.
        It reads the network config, which must still be the one we run."""
        conn = self.registry.conn
        try:
            value, _meta = conn.call(lambda client: client.get(self.registry.config_key))
        except EtcdUnavailableError as exc:
            was_ok = self.etcd_ok
            self._etcd_down(str(exc))
            delay = self._probe_backoff.next()
            if not was_ok:
                log.info("etcd still unavailable; retrying in %gs", delay)
            return delay
        if not self.etcd_ok:
            self.etcd_ok = True
            log.info("etcd is reachable again at %s; resuming the watch from revision %d",
                     conn.endpoint.url, self.revision + 1)
            self.notifier.status(self._status())
        self._probe_backoff.reset()
        self._follow_config(value)
        if self.feed is None:
            self._start_watch()
        if self.config_feed is None:
            self._start_config_watch()
        return float(self.opts.etcd_probe_interval)

    def _reconcile(self) -> float:
        self.programmer.reconcile()
        return float(self.opts.reconcile_interval)


def main(argv: Sequence[str] | None = None) -> int:
    if flags.asks_version(sys.argv[1:] if argv is None else argv):
        sys.stdout.write(f"{VERSION}\n")  # before logging is set up: only the version, as flanneld
        return EXIT_OK
    systemd_fds.received()  # take LISTEN_FDS* out of the environment before any child can inherit them
    opts = flags.parse(argv)
    setup_logging(opts.v, bool(os.environ.get("JOURNAL_STREAM")))
    agent = Agent(opts)
    signal.signal(signal.SIGTERM, agent.stop)
    signal.signal(signal.SIGINT, agent.stop)
    try:
        return agent.run()
    except Exception:  # noqa: BLE001 - report anything unexpected on one line, then fail
        log.exception("unexpected error")
        return EXIT_FAILURE
