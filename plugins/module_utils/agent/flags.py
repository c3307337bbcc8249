"""The agent's flags: flanneld's names, each also read from FLANNELD_<FLAG>.

The command line wins over the environment, which wins over the default. Like Go's flag
package, a long flag may be given with one dash (`-etcd-endpoints=...`) and a boolean as
`--ip-masq`, `--ip-masq=true` or `--ip-masq=false`. List flags take comma lists (and may
be repeated); `--iface-regex` may only be repeated, since a regular expression may hold
commas (its environment variable holds one).

A password is a Secret (its repr is masked, so a logged Namespace never shows it), and
`etcd_password_in_argv` records whether it came from the command line, where every local
user can read it (ps, /proc/<pid>/cmdline); the agent warns about that once.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..defaults import (
    DEFAULT_ENDPOINTS,
    DEFAULT_ETCD_TIMEOUT,
    DEFAULT_LEASE_TTL,
    DEFAULT_PREFIX,
    DEFAULT_RENEW_MARGIN_MINUTES,
    DEFAULT_SUBNET_FILE,
)
from ..errors import HostNetworkError
from ..host.underlay import UnderlayChoice, check_choice
from ..version import VERSION

_TRUE = {"1", "t", "true", "y", "yes", "on"}
_FALSE = {"0", "f", "false", "n", "no", "off"}
SECRET_FLAGS = frozenset({"etcd-password"})
PASSWORD_IN_ARGV_WARNING = (
    "--etcd-password was given on the command line, where every user of this host can read it "
    "(ps, /proc/<pid>/cmdline); set FLANNELD_ETCD_PASSWORD in the environment instead "
    "(under systemd: an EnvironmentFile= readable by root only)")


class Secret(str):
    """A str whose repr does not show it."""

    def __repr__(self) -> str:
        return "'<hidden>'"


@dataclass(frozen=True)
class Flag:
    name: str
    kind: str  # "str", "list" (comma separated, repeatable), "multi" (repeatable), "bool", "int", "float"
    default: Any
    help: str
    minimum: float | None = None

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    @property
    def env(self) -> str:
        return "FLANNELD_" + self.dest.upper()


FLAGS: tuple[Flag, ...] = (
    Flag("etcd-endpoints", "list", list(DEFAULT_ENDPOINTS), "etcd endpoints, comma separated"),
    Flag("etcd-prefix", "str", DEFAULT_PREFIX, "etcd prefix of the network config and leases"),
    Flag("etcd-cafile", "str", None, "CA file for https etcd endpoints"),
    Flag("etcd-certfile", "str", None, "client certificate for etcd"),
    Flag("etcd-keyfile", "str", None, "client key for etcd"),
    Flag("etcd-username", "str", None, "etcd user name"),
    Flag("etcd-password", "str", None, "etcd password"),
    Flag("iface", "list", [], "underlay interface(s) to use, a name or an address of it, tried in order "
         "(default: the default route's)"),
    Flag("iface-regex", "multi", [], "regular expression matched against the interfaces' IPv4 addresses, then "
         "their names, if no --iface matched (repeatable; tried in order)"),
    Flag("iface-can-reach", "str", None, "use the interface (and source address) of the route to this address, "
         "if no --iface or --iface-regex matched"),
    Flag("public-ip", "str", None, "IP other hosts reach this one on (default: the interface's address)"),
    Flag("public-ipv6", "str", None, "IPv6 address other hosts reach this one on, published in the lease"),
    Flag("subnet-file", "str", DEFAULT_SUBNET_FILE, "where to write the subnet environment"),
    Flag("ip-masq", "bool", False, "masquerade traffic leaving the overlay network"),
    Flag("iptables-forward-rules", "bool", True, "accept the overlay network in the FORWARD chain"),
    Flag("iptables-resync", "float", 5.0, "seconds between checks of the iptables rules", minimum=0.1),
    Flag("subnet-lease-renew-margin", "int", DEFAULT_RENEW_MARGIN_MINUTES,
         "renew the lease this many minutes before it expires", minimum=1),
    Flag("healthz-ip", "str", "0.0.0.0", "address of the /healthz and /readyz endpoint"),
    Flag("healthz-port", "int", 0, "port of the /healthz and /readyz endpoint (0: off)", minimum=0),
    # Ours.
    Flag("reconcile-interval", "float", 2.0, "seconds between data-plane drift repairs", minimum=0.1),
    Flag("etcd-timeout", "float", DEFAULT_ETCD_TIMEOUT, "seconds an etcd request may take", minimum=0.1),
    Flag("etcd-probe-interval", "float", 2.0, "seconds between etcd health probes", minimum=0.1),
    Flag("subnet-lease-ttl", "int", DEFAULT_LEASE_TTL, "TTL of the lease in seconds", minimum=10),
    Flag("udp-fast-path", "bool", True,
         "udp backend: carry GSO super-packets between our agents (false: flannel's per-packet format only)"),
    Flag("v", "int", 0, "log verbosity (0: info, 1 or more: debug)", minimum=0),
)
_BY_NAME = {flag.name: flag for flag in FLAGS}


class FlagError(ValueError):
    pass


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise FlagError(f"{text!r} is not a boolean; use true or false")


def convert(flag: Flag, text: str) -> Any:
    """One flag value from its text form (command line or environment)."""
    if flag.kind == "list":
        return [item.strip() for item in text.split(",") if item.strip()]
    if flag.kind == "multi":
        return [text] if text else []
    if flag.kind == "bool":
        return parse_bool(text)
    if flag.name in SECRET_FLAGS:
        return Secret(text)
    if flag.kind in ("int", "float"):
        try:
            value: int | float = int(text) if flag.kind == "int" else float(text)
        except ValueError:
            raise FlagError(f"{text!r} is not a{'n integer' if flag.kind == 'int' else ' number'}") from None
        if flag.minimum is not None and value < flag.minimum:
            raise FlagError(f"{text!r} is below the minimum {flag.minimum:g}")
        return value
    return text


def _option_type(flag: Flag) -> Any:
    def check(text: str) -> Any:
        try:
            return convert(flag, text)
        except FlagError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    check.__name__ = flag.kind
    return check


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flannel-agent",
        description="Our flanneld: keeps this host's subnet lease and programs the overlay.",
        epilog="Every flag can also be set as FLANNELD_<FLAG> (e.g. FLANNELD_ETCD_ENDPOINTS); "
               "the command line wins.",
    )
    parser.add_argument("--version", action="version", version=VERSION,
                        help="print the version and exit (also -version, as flanneld)")
    for flag in FLAGS:
        names = [f"--{flag.name}"] + (["-v"] if flag.name == "v" else [])
        default = "" if flag.default in (None, []) else f"; default {_shown(flag.default)}"
        help_text = f"{flag.help} (env {flag.env}{default})"
        metavar = {"list": "LIST", "multi": "REGEX", "int": "N", "float": "SECONDS"}.get(flag.kind, "VALUE")
        if flag.kind == "bool":
            parser.add_argument(*names, dest=flag.dest, nargs="?", const=True, default=None,
                                type=_option_type(flag), metavar="true|false", help=help_text)
        elif flag.kind in ("list", "multi"):
            parser.add_argument(*names, dest=flag.dest, action="append", default=None,
                                type=_option_type(flag), metavar=metavar, help=help_text)
        else:
            parser.add_argument(*names, dest=flag.dest, default=None, type=_option_type(flag),
                                metavar=metavar, help=help_text)
    return parser


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def asks_version(argv: Sequence[str]) -> bool:
    """--version (or Go style -version) before any `--`: answered before anything else is
    parsed, read or opened, so it works whatever else the command line or environment holds."""
    for arg in argv:
        if arg == "--":
            return False
        if arg in ("--version", "-version"):
            return True
    return False


def normalize_argv(argv: Sequence[str]) -> list[str]:
    """Go style `-etcd-endpoints=x` becomes `--etcd-endpoints=x`."""
    out: list[str] = []
    for index, arg in enumerate(argv):
        if arg == "--":
            return out + list(argv[index:])
        if arg.startswith("-") and not arg.startswith("--") and arg[1:].split("=", 1)[0] in _BY_NAME:
            arg = "-" + arg
        out.append(arg)
    return out


def parse(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> argparse.Namespace:
    """The agent's options: command line, else FLANNELD_* environment, else the defaults."""
    environ = os.environ if environ is None else environ
    parser = build_parser()
    cli = parser.parse_args(normalize_argv(list(argv) if argv is not None else sys.argv[1:]))
    result = argparse.Namespace(etcd_password_in_argv=cli.etcd_password is not None)
    for flag in FLAGS:
        value = getattr(cli, flag.dest)
        if value is not None and flag.kind in ("list", "multi"):
            value = [item for chunk in value for item in chunk]
        if value is None and environ.get(flag.env) is not None:
            try:
                value = convert(flag, environ[flag.env])
            except FlagError as exc:
                parser.error(f"environment variable {flag.env}: {exc}")
        if value is None:
            value = list(flag.default) if isinstance(flag.default, list) else flag.default
        setattr(result, flag.dest, value)
    if not result.etcd_endpoints:
        parser.error(f"--etcd-endpoints is empty; give at least one, e.g. {DEFAULT_ENDPOINTS[0]}")
    if result.healthz_port > 65535:
        parser.error(f"--healthz-port {result.healthz_port} is not a port (0-65535)")
    try:
        check_choice(underlay_choice(result))
    except HostNetworkError as exc:  # a bad address or regex: restarting cannot fix it
        parser.error(str(exc))
    return result


def underlay_choice(opts: argparse.Namespace) -> UnderlayChoice:
    """The underlay the flags ask for (--iface, --iface-regex, --iface-can-reach, --public-ip(v6))."""
    return UnderlayChoice.of(opts.iface, opts.iface_regex, opts.iface_can_reach, opts.public_ip, opts.public_ipv6)
