"""The agent's main loop: start up, then follow the leases, renew ours and repair drift.

Start-up: wait for etcd and the network config, find the underlay, set up the backend,
acquire (or adopt) this host's lease, activate the backend, install the iptables rules,
write the subnet file, program the peers, then report READY.

Running, one thread does everything in order: watch batches arrive through the inbox (a
WatchFeed thread reads the stream); timers probe etcd, renew the lease, reconcile the
data plane and re-check the iptables rules. While etcd is unreachable the data plane is
left exactly as it is; the watch resumes from the last revision seen, or, when that was
compacted, the leases are listed again and diffed against the peer cache.

Exit codes: 0 after SIGTERM/SIGINT (the lease and the data plane stay), 1 on a fatal
error, 2 on bad flags, 3 when our lease was deleted or taken by someone else.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import queue
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..backends.base import Backend, LocalHost
from ..backends.registry import make_backend
from ..errors import ConfigError, EtcdUnavailableError, FlannelError, HostNetworkError, LeaseError
from ..etcd.connection import EtcdConnection, EtcdSettings
from ..etcd.registry import LeaseStore
from ..etcd.watch import WatchBatch, WatchCompactedError
from ..host.firewall import Firewall
from ..host.underlay import Underlay, find_underlay
from ..subnet.config import NetworkConfig
from ..subnet.env import SubnetEnv, read_subnet_env, write_subnet_env
from ..subnet.lease import Lease, LeaseAttrs
from . import flags
from .feed import WatchFeed
from .healthz import Health, HealthServer
from .notify import Notifier
from .peers import PeerCache, PeerChange

EXIT_OK, EXIT_FAILURE, EXIT_LEASE_LOST = 0, 1, 3
RENEW_CHECK = 60.0  # seconds between looks at the lease's remaining TTL
REWRITE_EVERY = 10.0  # at most this often do we write our data back into a rewritten lease
log = logging.getLogger("flannel-agent")

BackendFactory = Callable[..., Backend]  # (config, host, **backend options)


class LeaseLost(FlannelError):
    """Our lease was deleted, expired or taken over: flanneld exits on this, and so do we."""


class Stopped(Exception):
    """SIGTERM/SIGINT arrived during start-up."""


class Backoff:
    def __init__(self, first: float, limit: float) -> None:
        self.first, self.limit, self.delay = first, limit, first

    def next(self) -> float:
        delay, self.delay = self.delay, min(self.delay * 2, self.limit)
        return delay

    def reset(self) -> None:
        self.delay = self.first


class Agent:
    def __init__(self, opts: argparse.Namespace, notifier: Notifier | None = None,
                 backend_factory: BackendFactory | None = None) -> None:
        self.opts = opts
        self.notifier = notifier or Notifier()
        self.health = Health()
        # A SimpleQueue, because the signal handler puts into it (its put is reentrant).
        self.inbox: queue.SimpleQueue[tuple[str, int, Any]] = queue.SimpleQueue()
        self.stopping = False
        self._backend_factory = backend_factory or make_backend  # tests may pass a recording fake
        self.conn: EtcdConnection | None = None
        self.store: LeaseStore
        self.backend: Backend | None = None
        self.config: NetworkConfig
        self.attrs: LeaseAttrs  # what we publish
        self.own: Lease  # our lease as last seen
        self.mtu = 0
        self.peers = PeerCache(self._is_peer)
        self.revision = 0  # the last etcd revision whose lease events we have applied
        self.feed: WatchFeed | None = None
        self._tokens = itertools.count(1)
        self.etcd_ok = True
        self._probe_backoff = Backoff(1.0, 5.0)
        self._watch_backoff = Backoff(0.5, 5.0)
        self._due: dict[str, float] = {}
        self._healthz: HealthServer | None = None
        self._errors: dict[str, str] = {}  # the last error of each repeating job, logged once
        self._last_rewrite = -REWRITE_EVERY
        self.firewall = Firewall()

    # --- entry -------------------------------------------------------------------------

    def stop(self, *_: Any) -> None:
        """Signal handler: leave the loop; the lease and the data plane stay."""
        self.stopping = True
        self.inbox.put(("stop", 0, None))

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
        except FlannelError as exc:
            log.error("%s", exc)
            return EXIT_FAILURE
        finally:
            self._shut_down()

    def _shut_down(self) -> None:
        self.notifier.stopping()
        if self.feed is not None:
            self.feed.cancel()
        if self.backend is not None:
            self.backend.close()
        if self._healthz is not None:
            self._healthz.close()
        if self.conn is not None:
            self.conn.close()

    # --- start-up ----------------------------------------------------------------------

    def _start_up(self) -> None:
        opts = self.opts
        if opts.healthz_port:
            try:
                self._healthz = HealthServer(self.health, opts.healthz_ip, opts.healthz_port).start()
            except OSError as exc:
                raise HostNetworkError(f"cannot serve /healthz on {opts.healthz_ip}:{opts.healthz_port}: "
                                       f"{exc.strerror}; pick another --healthz-ip/--healthz-port") from None
            log.info("serving /healthz and /readyz on %s:%d", opts.healthz_ip, self._healthz.port)
        self.conn = EtcdConnection(EtcdSettings(
            endpoints=tuple(opts.etcd_endpoints), ca_file=opts.etcd_cafile, cert_file=opts.etcd_certfile,
            key_file=opts.etcd_keyfile, username=opts.etcd_username, password=opts.etcd_password,
            timeout=opts.etcd_timeout,
        ))
        self.store = LeaseStore(self.conn, opts.etcd_prefix)
        self.config = self._until_ok("read the network config", self.store.get_config,
                                     (EtcdUnavailableError, ConfigError))
        log.info("network %s, backend %s", self.config.network, self.config.backend.type)

        underlay = self._find_underlay()
        log.info("underlay %s (mtu %d), public IP %s", underlay.iface, underlay.mtu, underlay.public_ip)
        host = LocalHost(underlay.public_ip, underlay.iface, underlay.index, underlay.mtu)
        self.backend = self._backend_factory(self.config, host, **self._backend_options())
        if hasattr(self.backend, "stats"):
            self.health.stats = self.backend.stats
        setup = self.backend.setup(self.config, host)
        self.mtu = setup.mtu
        self.attrs = LeaseAttrs(underlay.public_ip, None, setup.backend_type, setup.backend_data)

        previous = self._previous_subnet()
        result = self._until_ok("acquire a lease", lambda: self.store.acquire(
            self.attrs, ttl=opts.subnet_lease_ttl, previous=previous, renew_below=self._renew_margin()),
            (EtcdUnavailableError, LeaseError))
        self.own = result.lease
        log.info("lease %s (%s) for %s", self.own.subnet, result.action, underlay.public_ip)

        self.backend.activate(self.own.subnet)
        self._firewall()
        env = SubnetEnv.for_lease(self.config.network, self.own.subnet, self.mtu, opts.ip_masq)
        try:
            write_subnet_env(opts.subnet_file, env)
        except OSError as exc:
            raise HostNetworkError(f"cannot write --subnet-file {opts.subnet_file}: {exc.strerror}") from None
        log.info("wrote %s: FLANNEL_SUBNET=%s FLANNEL_MTU=%d", opts.subnet_file, env.subnet, self.mtu)

        self._until_ok("list the leases", self._resync, (EtcdUnavailableError,))
        self.health.ready = True
        self.notifier.ready(self._status())
        log.info("ready: %s", self._status())

    def _backend_options(self) -> dict[str, Any]:
        if self.config.backend.type != "udp":
            return {}
        # The peer table lives next to the subnet file (/run: gone after a reboot, as it should).
        state = os.path.join(os.path.dirname(os.path.abspath(self.opts.subnet_file)), "udp-peers.json")
        return {"udp_fast_path": self.opts.udp_fast_path, "udp_state_file": state}

    def _until_ok(self, what: str, operation: Callable[[], Any], retry_on: tuple[type[Exception], ...]) -> Any:
        """Run operation until it succeeds, retrying with back-off (a log line each time)."""
        backoff = Backoff(1.0, 10.0)
        for attempt in itertools.count(1):
            self._tick()
            if self.stopping:
                raise Stopped()
            try:
                return operation()
            except retry_on as exc:
                delay = backoff.next()
                log.warning("could not %s (attempt %d): %s; retrying in %gs", what, attempt, exc, delay)
                self.notifier.status(f"waiting: could not {what}")
                if self._sleep(delay):
                    raise Stopped() from None
        raise AssertionError("unreachable")

    def _sleep(self, seconds: float) -> bool:
        """Wait (start-up only: the inbox holds nothing but stops), keeping health and the
        watchdog fed; True when a stop was requested."""
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            self._tick()
            try:
                self.inbox.get(timeout=min(1.0, max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                pass
        return self.stopping

    def _find_underlay(self) -> Underlay:
        ifaces = self.opts.iface or [None]
        errors = []
        for iface in ifaces:
            try:
                return find_underlay(iface, self.opts.public_ip)
            except HostNetworkError as exc:
                errors.append(str(exc))
        raise HostNetworkError("; ".join(errors))

    def _previous_subnet(self) -> Any:
        env = read_subnet_env(self.opts.subnet_file)
        if env is not None and env.network == self.config.network:
            return env.lease_subnet
        return None

    def _renew_margin(self) -> int:
        return int(self.opts.subnet_lease_renew_margin) * 60

    # --- the loop ----------------------------------------------------------------------

    def _serve(self) -> None:
        now = time.monotonic()
        self._due = {"probe": now + self.opts.etcd_probe_interval, "renew": now + self._renew_every(),
                     "reconcile": now + self.opts.reconcile_interval, "firewall": now + self.opts.iptables_resync,
                     **self._due}  # a timer made due during start-up stays due
        self._start_watch()
        while not self.stopping:
            self._tick()
            wait = min(self._due.values()) - time.monotonic()
            try:
                kind, token, payload = self.inbox.get(timeout=min(max(wait, 0.0), 1.0))
            except queue.Empty:
                kind, token, payload = "", 0, None
            if self.stopping:
                return
            if self.feed is not None and token == self.feed.token:
                if kind == "batch":
                    self._apply_batch(payload)
                elif kind == "watch-error":
                    self._watch_failed(payload)
            now = time.monotonic()
            for name, when in list(self._due.items()):
                if now >= when:
                    self._due[name] = time.monotonic() + getattr(self, "_" + name)()

    def _tick(self) -> None:
        self.health.beat()
        self.notifier.watchdog()

    def _start_watch(self) -> None:
        try:
            self.feed = WatchFeed(self.store, self.revision + 1, self.inbox, next(self._tokens)).start()
        except FlannelError as exc:
            self._watch_failed(exc)
            return
        log.debug("watching %s from revision %d", self.store.subnets_prefix, self.revision + 1)

    def _stop_watch(self) -> None:
        if self.feed is not None:
            self.feed.cancel()
            self.feed = None

    def _apply_batch(self, batch: WatchBatch) -> None:
        self._watch_backoff.reset()
        for raw in batch.events:
            event = self.store.decode_event(raw, raw.mod_revision)
            if event.key == self.own.key:
                self._check_own(event.lease if event.kind == "put" else None, event.kind)
                continue
            if event.error:
                log.warning("lease %s is malformed, treated as absent: %s", event.key, event.error)
            self._program(self.peers.apply(event))
        self.revision = max(self.revision, batch.revision)

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
        self._due["probe"] = time.monotonic() + delay

    def _etcd_down(self, reason: str) -> None:
        self._stop_watch()
        if self.etcd_ok:
            self.etcd_ok = False
            log.warning("etcd is unavailable (%s); the data plane stays as it is", reason)
            self.notifier.status("etcd unavailable; data plane unchanged")

    # --- timers (each returns the seconds until it is due again) -------------------------

    def _probe(self) -> float:
        """A light request; it catches an etcd that went away without closing the stream."""
        try:
            self.conn.call(lambda client: client.get(self.store.config_key))
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
                     self.conn.endpoint.url, self.revision + 1)
            self.notifier.status(self._status())
        self._probe_backoff.reset()
        if self.feed is None:
            self._start_watch()
        return float(self.opts.etcd_probe_interval)

    def _renew(self) -> float:
        try:
            if self.own.attrs != self.attrs:
                log.warning("lease %s carries %s; writing ours back", self.own.key, self.own.attrs.to_json())
                self._last_rewrite = time.monotonic()
                self.own = self.store.acquire(self.attrs, ttl=self.opts.subnet_lease_ttl).lease
            remaining = self.store.lease_expires_in(self.own)
            if remaining is not None and remaining < self._renew_margin():
                self.own = self.store.renew(self.own, ttl=self.opts.subnet_lease_ttl)
                log.info("renewed lease %s (%gs were left)", self.own.key, remaining)
        except EtcdUnavailableError as exc:
            log.info("could not check the lease's TTL (%s); trying again later", exc)
            return min(10.0, self._renew_every())
        except LeaseError as exc:
            raise LeaseLost(str(exc)) from None
        return self._renew_every()

    def _renew_every(self) -> float:
        return min(RENEW_CHECK, self.opts.subnet_lease_ttl / 4)

    def _reconcile(self) -> float:
        try:
            self.backend.reconcile(dict(self.peers.peers))
            self._errors.pop("reconcile", None)
        except Exception as exc:  # noqa: BLE001 - logged; the next round tries again
            self._repeating_error("reconcile", f"data-plane repair failed: {exc}")
        return float(self.opts.reconcile_interval)

    def _firewall(self) -> float:
        network = str(self.config.network)
        try:
            if self.opts.iptables_forward_rules and self.firewall.ensure_forward(network):
                log.info("iptables: FORWARD accepts %s (chain FLANNEL-FWD)", network)
            if self.opts.ip_masq and self.firewall.ensure_masquerade(network, str(self.own.subnet)):
                log.info("iptables: masquerading traffic leaving %s (chain FLANNEL-POSTRTG)", network)
            self._errors.pop("firewall", None)
        except HostNetworkError as exc:
            self._repeating_error("firewall", str(exc))
        return float(self.opts.iptables_resync)

    def _repeating_error(self, job: str, message: str) -> None:
        """Log a job's error once, not on every round, until it changes or clears."""
        if self._errors.get(job) != message:
            log.error("%s", message)
        self._errors[job] = message

    # --- leases -> data plane ------------------------------------------------------------

    def _resync(self) -> None:
        """List every lease and bring the peer cache (and the data plane) in line with it."""
        leases, revision, problems = self.store.list_leases(strict=False)
        for problem in problems:
            log.warning("ignoring a malformed lease: %s", problem)
        mine = next((lease for lease in leases if lease.key == self.own.key), None)
        self._check_own(mine, "list")
        self._program(self.peers.resync(leases))
        self.revision = revision

    def _check_own(self, lease: Lease | None, how: str) -> None:
        if lease is None:
            raise LeaseLost(f"our lease {self.store.subnets_prefix}{self.own.key} is gone "
                            f"({'deleted' if how == 'delete' else 'missing or malformed'}; by an operator or expired)")
        if lease.attrs.public_ip != self.attrs.public_ip:
            raise LeaseLost(f"our lease {self.own.key} now belongs to {lease.attrs.public_ip}")
        self.own = lease
        if lease.attrs != self.attrs:  # write our data back from the timer (not in a tight loop)
            self._due["renew"] = max(time.monotonic(), self._last_rewrite + REWRITE_EVERY)

    def _is_peer(self, lease: Lease) -> bool:
        if lease.key == self.own.key or lease.attrs.public_ip == self.attrs.public_ip:
            return False
        # flannel's udp leases carry no BackendType.
        return (lease.attrs.backend_type or "udp") == (self.attrs.backend_type or "udp")

    def _program(self, changes: list[PeerChange]) -> None:
        for change in changes:
            lease = change.lease
            where = f"{lease.subnet} at {lease.attrs.public_ip}"
            if change.kind in ("remove", "update"):
                self._backend_call("remove", self.backend.remove_peer, change.old or lease, where)
            if change.kind in ("add", "update"):
                self._backend_call("add", self.backend.add_peer, lease, where)
            log.info("peer %s: %s", {"add": "added", "remove": "removed", "update": "updated"}[change.kind], where)
        if changes:
            self.notifier.status(self._status())

    @staticmethod
    def _backend_call(what: str, call: Callable[[Lease], None], lease: Lease, where: str) -> None:
        try:
            call(lease)
        except Exception as exc:  # noqa: BLE001 - one bad peer must not stop the agent
            log.error("could not %s peer %s: %s (the next repair round retries)", what, where, exc)

    def _status(self) -> str:
        return f"lease {self.own.subnet}, {len(self.peers.peers)} peer(s)"


class _Formatter(logging.Formatter):
    """One event per line: embedded newlines (tracebacks) are folded."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", " | ")


def setup_logging(verbosity: int, journald: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    fmt = "%(levelname)s %(message)s" if journald else "%(asctime)s %(levelname)s %(message)s"
    handler.setFormatter(_Formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbosity > 0 else logging.INFO)
    for noisy in ("pyroute2", "grpc"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
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
