"""Command line of the lab: ``python3 -m lab <command>`` from the repository root (as root).

    up --hosts N [--etcd-members 1|3] [--subnet CIDR] [--python PATH] [--tls] [--auth]
    down
    status [--json]
    add-host [NAME]
    add-nic HOST [--iface eth1] [--subnet 192.168.82.0/24]
    remove-host NAME
    add-container HOST NAME [--address CIDR] [--bridge-address]
    remove-container NAME
    exec [--netns-only] TARGET -- CMD...
    stop-etcd [I] / start-etcd [I]

Common options (before or after the command): ``--state-dir`` (``$OFL_LAB_STATE``,
default ``lab/.state``), ``--prefix`` (``$OFL_LAB_PREFIX``, default ``ofl-``),
``--inventory`` (``$OFL_LAB_INVENTORY``, default ``lab/inventory.yml``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from .core import SECOND_SUBNET, Lab
from .state import DEFAULT_SUBNET, LabError


def _common(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument("--state-dir", default=default,
                        help="state directory ($OFL_LAB_STATE, default lab/.state)")
    parser.add_argument("--prefix", default=default,
                        help="namespace prefix ($OFL_LAB_PREFIX, default 'ofl-')")
    parser.add_argument("--inventory", default=default,
                        help="inventory file ($OFL_LAB_INVENTORY, default lab/inventory.yml "
                             "or <state dir>/inventory.yml)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python3 -m lab",
        description="Light-host lab for overlaynet.flannel: hosts and etcd in network "
                    "namespaces, reached by Ansible over ssh via `ip netns exec`.")
    _common(parser, None)
    common = argparse.ArgumentParser(add_help=False)
    _common(common, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("up", parents=[common], help="build a lab")
    p.add_argument("--hosts", type=int, default=2, help="number of light hosts (h1..hN)")
    p.add_argument("--etcd-members", type=int, choices=(1, 3), default=1)
    p.add_argument("--subnet", default=DEFAULT_SUBNET, help="underlay subnet")
    p.add_argument("--python", default=None,
                   help="ansible_python_interpreter (default <repo>/.venv/bin/python)")
    p.add_argument("--tls", action="store_true",
                   help="etcd over https only, client certificates required (CA and certificates "
                        "in <state dir>/pki)")
    p.add_argument("--auth", action="store_true",
                   help="etcd auth: root and a 'flannel' user with readwrite on the prefix only "
                        "(passwords in <state dir>/secrets, mode 0600)")

    sub.add_parser("down", parents=[common],
                   help="remove the lab and anything left with its prefix")
    p = sub.add_parser("status", parents=[common], help="show the lab")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("add-host", parents=[common], help="join one more light host")
    p.add_argument("name", nargs="?")
    p = sub.add_parser("add-nic", parents=[common],
                       help="give a host another NIC on a further underlay network (for --iface...)")
    p.add_argument("host")
    p.add_argument("--iface", default="eth1")
    p.add_argument("--subnet", default=SECOND_SUBNET, help="that network (its own switch namespace)")
    p = sub.add_parser("remove-host", parents=[common], help="remove a light host")
    p.add_argument("name")

    p = sub.add_parser("add-container", parents=[common],
                       help="add a container namespace on a host's docker0")
    p.add_argument("host")
    p.add_argument("name")
    p.add_argument("--address", help="CIDR (default: next free address of FLANNEL_SUBNET)")
    p.add_argument("--bridge-address", action="store_true",
                   help="also put the gateway address on docker0 if it lacks it")
    p = sub.add_parser("remove-container", parents=[common], help="remove a container")
    p.add_argument("name")

    p = sub.add_parser("exec", parents=[common],
                       help="run a command on a host (its net/mount/uts/pid namespaces), "
                            "container or etcd member")
    p.add_argument("--netns-only", action="store_true",
                   help="plain `ip netns exec <ns>` (network namespace only)")
    p.add_argument("target")
    p.add_argument("cmd", nargs=argparse.REMAINDER)

    for verb in ("stop", "start"):
        p = sub.add_parser(f"{verb}-etcd", parents=[common], help=f"{verb} etcd member I")
        p.add_argument("index", type=int, nargs="?", default=1)
    return parser


def _print_status(st: dict[str, Any]) -> None:
    if not st.get("up") and "hosts" not in st:
        left = st.get("leftover_namespaces") or []
        print(f"no lab up (state dir {st['state_dir']}, prefix {st['prefix']!r})")
        if left:
            print(f"leftover namespaces: {', '.join(left)} (run down)")
        return
    print(f"lab {st['lab_id']} {st['status']}: prefix {st['prefix']!r}, underlay "
          f"{st['subnet']}, state {st['state_dir']}")
    print(f"inventory: {st['inventory']}")
    for name, m in st["etcd"].items():
        print(f"  {name:<8} {m['netns']:<16} {m['endpoint']:<26} "
              f"{'running' if m['running'] else 'STOPPED'}")
    for name, h in st["hosts"].items():
        state = "sshd up" if h["sshd"] else ("running" if h["running"] else "DOWN")
        print(f"  {name:<8} {h['netns']:<16} {h['address']:<26} {state}")
    for name, c in st["containers"].items():
        print(f"  {name:<8} {c['netns']:<16} {c['address']:<26} on {c['host']} "
              f"via {c['gateway']}")


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _up(args: argparse.Namespace, opts: dict[str, Any]) -> int:
    t0 = time.monotonic()
    secure = [k for k in ("tls", "auth") if getattr(args, k)]
    lab = Lab.up(hosts=args.hosts, etcd_members=args.etcd_members,
                 subnet=args.subnet, python=args.python, secure=secure, **opts)
    print(f"lab up in {time.monotonic() - t0:.2f}s: hosts {', '.join(lab.hosts)}; "
          f"etcd {', '.join(lab.etcd_endpoints)}")
    print(f"inventory: {lab.inventory_path}")
    return 0


def _down(lab: Lab, args: argparse.Namespace) -> int:
    lab.down()
    print(f"lab down (prefix {lab.prefix!r}, state dir {lab.state_dir})")
    return 0


def _status(lab: Lab, args: argparse.Namespace) -> int:
    st = lab.status()
    if args.json:
        print(json.dumps(st, indent=2, sort_keys=True))
    else:
        _print_status(st)
    return 0 if st.get("up") else 1


def _add_host(lab: Lab, args: argparse.Namespace) -> int:
    name = lab.add_host(args.name)
    print(f"host {name} up: {lab.host_ns(name)} {lab.host_address(name)}")
    return 0


def _add_nic(lab: Lab, args: argparse.Namespace) -> int:
    address = lab.add_nic(args.host, args.iface, args.subnet)
    print(f"host {args.host}: {args.iface} {address} on {args.subnet}")
    return 0


def _add_container(lab: Lab, args: argparse.Namespace) -> int:
    c = lab.add_container(args.host, args.name, args.address, args.bridge_address)
    print(f"container {c['name']} on {c['host']}: {c['netns']} {c['address']} "
          f"via {c['gateway']} mtu {c['mtu']}")
    return 0


def _exec(lab: Lab, args: argparse.Namespace) -> int:
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        raise LabError("nothing to run: python3 -m lab exec TARGET -- CMD...")
    full = lab.exec_argv(args.target, cmd, netns_only=args.netns_only)
    sys.stdout.flush()
    os.execvp(full[0], full)


# command -> (Lab method, the arguments it takes, what is printed when it is done)
ACTIONS = {
    "remove-host": ("remove_host", ("name",), "host {name} removed"),
    "remove-container": ("remove_container", ("name",), "container {name} removed"),
    "stop-etcd": ("stop_etcd", ("index",), "etcd{index} stopped"),
    "start-etcd": ("start_etcd", ("index",), "etcd{index} running"),
}


def _action(lab: Lab, args: argparse.Namespace) -> int:
    method, names, done = ACTIONS[args.command]
    getattr(lab, method)(*(getattr(args, name) for name in names))
    print(done.format(**vars(args)))
    return 0


COMMANDS: dict[str, Callable[[Lab, argparse.Namespace], int]] = {
    "down": _down, "status": _status, "add-host": _add_host, "add-nic": _add_nic, "add-container": _add_container,
    "exec": _exec,
    **dict.fromkeys(ACTIONS, _action),
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)  # let `up` clean up after itself
    opts = {"state_dir": args.state_dir, "prefix": args.prefix, "inventory": args.inventory}
    try:
        if args.command == "up":
            return _up(args, opts)
        return COMMANDS[args.command](Lab(**opts), args)
    except LabError as exc:
        print(f"lab: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
