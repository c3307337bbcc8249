"""flannel's iptables rules: masquerade for the overlay network and FORWARD accept.

Rules live in chains of their own (nat FLANNEL-POSTRTG, filter FLANNEL-FWD), jumped to from
POSTROUTING / FORWARD. A chain's content is replaced as a whole through
`iptables-restore --noflush` (declaring a chain flushes only that chain); the jump is
checked with `iptables -C` and appended when missing. Commands run with argv lists, never
a shell. ensure() changes nothing when everything is already in place.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Optional

from ..errors import HostNetworkError

MASQ_CHAIN = "FLANNEL-POSTRTG"
FWD_CHAIN = "FLANNEL-FWD"
MASQ_COMMENT = "flanneld masq"
FWD_COMMENT = "flanneld forward"
MULTICAST = "224.0.0.0/4"

Runner = Callable[[Sequence[str], Optional[str]], "subprocess.CompletedProcess[str]"]


@dataclass(frozen=True)
class Chain:
    """One chain we own: its table, the built-in chain that jumps to it, and its rules."""

    table: str
    name: str
    jump_from: str
    comment: str
    rules: tuple[tuple[str, ...], ...]

    @property
    def jump(self) -> tuple[str, ...]:
        return ("-m", "comment", "--comment", self.comment, "-j", self.name)

    def restore_text(self) -> str:
        lines = [f"*{self.table}", f":{self.name} - [0:0]"]
        lines += [f"-A {self.name} " + " ".join(_quote(arg) for arg in rule) for rule in self.rules]
        return "\n".join(lines + ["COMMIT", ""])


def _quote(arg: str) -> str:
    return f'"{arg}"' if not arg or re.search(r"\s", arg) else arg


def masquerade_chain(network: str, subnet: str, random_fully: bool = True) -> Chain:
    """Traffic inside the overlay network is never masqueraded; traffic leaving it is."""
    masq = ("-j", "MASQUERADE", "--random-fully") if random_fully else ("-j", "MASQUERADE")
    tag = ("-m", "comment", "--comment", MASQ_COMMENT)
    rules = (
        ("-s", network, "-d", network, *tag, "-j", "RETURN"),  # overlay to overlay
        ("-s", network, "!", "-d", MULTICAST, *tag, *masq),  # overlay to the outside
        ("!", "-s", network, "-d", subnet, *tag, "-j", "RETURN"),  # outside to our own subnet
        ("!", "-s", network, "-d", network, *tag, *masq),  # this host to another host's subnet
    )
    return Chain("nat", MASQ_CHAIN, "POSTROUTING", MASQ_COMMENT, rules)


def forward_chain(network: str) -> Chain:
    """Docker sets the FORWARD policy to DROP; the overlay network must be accepted."""
    tag = ("-m", "comment", "--comment", FWD_COMMENT)
    rules = (("-s", network, *tag, "-j", "ACCEPT"), ("-d", network, *tag, "-j", "ACCEPT"))
    return Chain("filter", FWD_CHAIN, "FORWARD", FWD_COMMENT, rules)


def _run(argv: Sequence[str], stdin: str | None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), input=stdin, capture_output=True, text=True, check=False, timeout=30)


class Firewall:
    """Applies Chains with the iptables tools (wait for the xtables lock up to `wait` s)."""

    def __init__(self, iptables: str = "iptables", iptables_restore: str = "iptables-restore",
                 wait: int = 5, runner: Runner = _run) -> None:
        self.iptables = iptables
        self.iptables_restore = iptables_restore
        self.wait = wait
        self.runner = runner
        self._random_fully: bool | None = None

    def supports_random_fully(self) -> bool:
        """MASQUERADE --random-fully needs iptables 1.6.2 or later (as flannel checks)."""
        if self._random_fully is None:
            out = self._call([self.iptables, "--version"]).stdout
            found = re.search(r"v(\d+)\.(\d+)\.(\d+)", out)
            version = tuple(int(x) for x in found.groups()) if found else ()
            self._random_fully = version >= (1, 6, 2)
        return self._random_fully

    def _call(self, argv: Sequence[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        try:
            return self.runner(argv, stdin)
        except FileNotFoundError:
            raise HostNetworkError(f"{argv[0]} is not installed; install the iptables package") from None
        except subprocess.TimeoutExpired:
            raise HostNetworkError(f"{' '.join(argv)} did not finish within 30s") from None

    def _ipt(self, table: str, *args: str) -> subprocess.CompletedProcess[str]:
        return self._call([self.iptables, "-w", str(self.wait), "-t", table, *args])

    def in_place(self, chain: Chain) -> bool:
        """True when the chain holds exactly its rules and the jump to it exists."""
        listing = self._ipt(chain.table, "-S", chain.name)
        if listing.returncode != 0:
            return False
        count = sum(1 for line in listing.stdout.splitlines() if line.startswith("-A "))
        if count != len(chain.rules):
            return False
        rules = [(chain.name, rule) for rule in chain.rules] + [(chain.jump_from, chain.jump)]
        return all(self._ipt(chain.table, "-C", name, *rule).returncode == 0 for name, rule in rules)

    def ensure(self, chain: Chain) -> bool:
        """Make the chain hold exactly its rules and be jumped to; True when something changed."""
        if self.in_place(chain):
            return False
        restore = self._call([self.iptables_restore, "-w", str(self.wait), "--noflush"], chain.restore_text())
        if restore.returncode != 0:
            raise HostNetworkError(
                f"iptables-restore could not write {chain.table} {chain.name}: {restore.stderr.strip()}"
            )
        if self._ipt(chain.table, "-C", chain.jump_from, *chain.jump).returncode != 0:
            added = self._ipt(chain.table, "-A", chain.jump_from, *chain.jump)
            if added.returncode != 0:
                raise HostNetworkError(
                    f"iptables could not add the jump {chain.jump_from} -> {chain.name}: {added.stderr.strip()}"
                )
        return True

    def ensure_masquerade(self, network: str, subnet: str) -> bool:
        return self.ensure(masquerade_chain(network, subnet, self.supports_random_fully()))

    def ensure_forward(self, network: str) -> bool:
        return self.ensure(forward_chain(network))
