"""The agent's start-up, step by step, each retried until it works (or a stop arrives):

etcd and the network config -> the underlay -> what another backend of ours left removed ->
the backend set up -> our lease acquired
(or adopted from the module) -> the backend activated -> iptables -> the subnet file.
Listing the peers and READY follow in daemon.py, once the loop's pieces exist.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from .. import systemd_fds
from ..backends.base import Backend, BackendRuntime, BackendSetup, LocalHost
from ..backends.leftovers import remove_leftovers
from ..backends.registry import make_backend
from ..errors import ConfigError, EtcdUnavailableError, HostConflictError, HostNetworkError, LeaseError
from ..etcd.connection import EtcdConnection, EtcdSettings
from ..etcd.registry import LeaseRegistry
from ..host.netlink import open_ipr
from ..host.underlay import Underlay, select_underlay
from ..identity import host_id
from ..subnet.acquire import AcquireRequest, AcquireResult, acquire
from ..subnet.config import NetworkConfig
from ..subnet.env import SubnetEnv, read_subnet_env, write_subnet_env
from ..subnet.lease import Lease, LeaseAttrs
from .firewall_job import FirewallJob
from .flags import PASSWORD_IN_ARGV_WARNING, underlay_choice
from .healthz import Health, HealthServer
from .logs import RepeatingErrors
from .messages import Message
from .notify import Notifier
from .scheduler import Backoff

T = TypeVar("T")
log = logging.getLogger("flannel-agent")


class Stopped(Exception):
    """SIGTERM/SIGINT arrived during start-up."""


class Waiter:
    """Start-up's retries: back-off, a log line each time, health and the watchdog fed."""

    def __init__(self, inbox: queue.SimpleQueue[Message], tick: Callable[[], None],
                 stopping: Callable[[], bool], notifier: Notifier) -> None:
        self._inbox, self._tick, self._stopping, self._notifier = inbox, tick, stopping, notifier

    def tick(self) -> None:
        """Health and the watchdog fed, systemd's start-up deadline pushed on."""
        self._tick()
        self._notifier.extend_start()

    def until_ok(self, what: str, operation: Callable[[], T], retry_on: tuple[type[Exception], ...],
                 fatal: tuple[type[Exception], ...] = ()) -> T:
        """Run operation until it succeeds, retrying with back-off (a log line each time);
        an error of a `fatal` type (a subclass of a retried one) ends the start-up."""
        backoff = Backoff(1.0, 10.0)
        for attempt in itertools.count(1):
            self.tick()
            if self._stopping():
                raise Stopped()
            try:
                return operation()
            except fatal:
                raise
            except retry_on as exc:
                delay = backoff.next()
                log.warning("could not %s (attempt %d): %s; retrying in %gs", what, attempt, exc, delay)
                self._notifier.status(f"waiting: could not {what}")
                if self.sleep(delay):
                    raise Stopped() from None
        raise AssertionError("unreachable")

    def sleep(self, seconds: float) -> bool:
        """Wait (start-up only: the inbox holds nothing but stops), keeping health and the
        watchdog fed; True when a stop was requested."""
        deadline = time.monotonic() + seconds
        while not self._stopping() and time.monotonic() < deadline:
            self.tick()
            try:
                self._inbox.get(timeout=min(1.0, max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                pass
        return self._stopping()


@dataclass
class Running:
    """What start-up hands to the loop."""

    registry: LeaseRegistry
    config: NetworkConfig
    backend: Backend
    attrs: LeaseAttrs  # what we publish
    own: Lease
    firewall: FirewallJob
    setup: BackendSetup  # setup()'s lease data and MTU: a change applied in place must not alter them


class BringUp:
    """The steps, in order. What each step opened stays on this object, so the agent can
    close it even when a later step fails."""

    def __init__(self, opts: argparse.Namespace, health: Health, notifier: Notifier, waiter: Waiter,
                 errors: RepeatingErrors) -> None:
        self.opts, self.health, self.notifier, self.waiter, self.errors = opts, health, notifier, waiter, errors
        self.healthz: HealthServer | None = None
        self.conn: EtcdConnection | None = None
        self.backend: Backend | None = None

    def run(self) -> Running:
        self._serve_health()
        registry = self._connect()
        config = self.waiter.until_ok("read the network config", registry.get_config,
                                      (EtcdUnavailableError, ConfigError))
        log.info("network %s, backend %s", config.network, config.backend.type)
        underlay = self._find_underlay()
        log.info("underlay %s (mtu %d, address %s), public IP %s%s", underlay.iface, underlay.mtu, underlay.iface_ip,
                 underlay.public_ip, f", public IPv6 {underlay.public_ipv6}" if underlay.public_ipv6 else "")
        backend, attrs, setup = self._set_up_backend(config, underlay)
        unused = systemd_fds.received().close_unclaimed()
        if unused:
            log.info("closed descriptors from systemd's fd store that backend %s does not use: %s",
                     config.backend.type, ", ".join(unused))
        result = self._acquire(registry, config, attrs)
        own = result.lease
        log.info("lease %s (%s) for %s", own.subnet, result.action, underlay.public_ip)
        backend.activate(own.subnet)
        firewall = FirewallJob(self.opts, str(config.network), str(own.subnet), self.errors)
        firewall()
        self._write_subnet_file(config, own, setup.mtu)
        return Running(registry, config, backend, attrs, own, firewall, setup)

    def _serve_health(self) -> None:
        opts = self.opts
        if not opts.healthz_port:
            return
        try:
            self.healthz = HealthServer(self.health, opts.healthz_ip, opts.healthz_port).start()
        except OSError as exc:
            raise HostNetworkError(f"cannot serve /healthz on {opts.healthz_ip}:{opts.healthz_port}: "
                                   f"{exc.strerror}; pick another --healthz-ip/--healthz-port") from None
        log.info("serving /healthz and /readyz on %s:%d", opts.healthz_ip, self.healthz.port)

    def _connect(self) -> LeaseRegistry:
        opts = self.opts
        if getattr(opts, "etcd_password_in_argv", False):
            log.warning(PASSWORD_IN_ARGV_WARNING)
        self.conn = EtcdConnection(EtcdSettings(
            endpoints=tuple(opts.etcd_endpoints), ca_file=opts.etcd_cafile, cert_file=opts.etcd_certfile,
            key_file=opts.etcd_keyfile, username=opts.etcd_username, password=opts.etcd_password,
            timeout=opts.etcd_timeout,
        ))
        return LeaseRegistry(self.conn, opts.etcd_prefix)

    def _find_underlay(self) -> Underlay:
        return select_underlay(underlay_choice(self.opts))

    def _set_up_backend(self, config: NetworkConfig, underlay: Underlay) -> tuple[Backend, LeaseAttrs, BackendSetup]:
        host = LocalHost(underlay.public_ip, underlay.iface, underlay.index, underlay.mtu,
                         local_ip=underlay.iface_ip)
        with open_ipr(host.netns) as ipr:  # after a backend switch: the old backend's device and routes
            remove_leftovers(ipr, config, underlay.index)
        # State (the udp peer table) lives next to the subnet file: /run, gone after a reboot, as it should.
        runtime = BackendRuntime(state_dir=os.path.dirname(os.path.abspath(self.opts.subnet_file)),
                                 fast_path=self.opts.udp_fast_path)
        self.backend = backend = make_backend(config, host, runtime)
        setup = backend.setup(config, host)
        attrs = LeaseAttrs(underlay.public_ip, underlay.public_ipv6, setup.backend_type,
                           setup.backend_data).with_host(host_id())
        return backend, attrs, setup

    def _acquire(self, registry: LeaseRegistry, config: NetworkConfig, attrs: LeaseAttrs) -> AcquireResult:
        env = read_subnet_env(self.opts.subnet_file)
        previous = env.lease_subnet if env is not None and env.network == config.network else None
        request = AcquireRequest(attrs, ttl=self.opts.subnet_lease_ttl, previous=previous,
                                 renew_below=renew_margin(self.opts))
        return self.waiter.until_ok("acquire a lease", lambda: acquire(registry, request),
                                    (EtcdUnavailableError, LeaseError), fatal=(HostConflictError,))

    def _write_subnet_file(self, config: NetworkConfig, own: Lease, mtu: int) -> None:
        path = self.opts.subnet_file
        env = SubnetEnv.for_lease(config.network, own.subnet, mtu, self.opts.ip_masq)
        try:
            write_subnet_env(path, env)
        except OSError as exc:
            raise HostNetworkError(f"cannot write --subnet-file {path}: {exc.strerror}") from None
        log.info("wrote %s: FLANNEL_SUBNET=%s FLANNEL_MTU=%d", path, env.subnet, mtu)


def renew_margin(opts: argparse.Namespace) -> int:
    """--subnet-lease-renew-margin in seconds."""
    return int(opts.subnet_lease_renew_margin) * 60
