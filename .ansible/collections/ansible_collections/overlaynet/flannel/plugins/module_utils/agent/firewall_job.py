"""The agent's iptables rules (FORWARD accept, masquerade), set at start-up and re-checked
on a timer: docker or an operator may flush them at any time."""

from __future__ import annotations

import argparse
import logging

from ..errors import HostNetworkError
from ..host.firewall import Firewall
from .logs import RepeatingErrors

log = logging.getLogger("flannel-agent")


class FirewallJob:
    def __init__(self, opts: argparse.Namespace, network: str, own_subnet: str, errors: RepeatingErrors,
                 firewall: Firewall | None = None) -> None:
        self._forward = bool(opts.iptables_forward_rules)
        self._masquerade = bool(opts.ip_masq)
        self._every = float(opts.iptables_resync)
        self._network, self._own_subnet = network, own_subnet
        self._errors = errors
        self._firewall = firewall or Firewall()

    def __call__(self) -> float:
        try:
            if self._forward and self._firewall.ensure_forward(self._network):
                log.info("iptables: FORWARD accepts %s (chain FLANNEL-FWD)", self._network)
            if self._masquerade and self._firewall.ensure_masquerade(self._network, self._own_subnet):
                log.info("iptables: masquerading traffic leaving %s (chain FLANNEL-POSTRTG)", self._network)
            self._errors.ok("firewall")
        except HostNetworkError as exc:
            self._errors.failed("firewall", str(exc))
        return self._every
