"""PID 1 of a light host: private mounts, hostname, IP forwarding, then sshd.

Started by the lab (see ``light_hosts.py``) as::

    ip netns exec <ns> unshare --mount --uts --pid --fork --kill-child --mount-proc \\
        python3 -I -S lab/_hostinit.py --name h1 --dir <state>/hosts/h1

so it runs in the host's network namespace and in fresh mount, UTS and PID namespaces.
It is run as a file (not ``-m lab._hostinit``) so the lab package and PyYAML are not
imported: stdlib only, fast start. In the new mount namespace it

* bind-mounts ``<dir>/etc/{hosts,resolv.conf,hostname}`` on ``/etc/...`` (without a
  per-host ``/etc/hosts``/``resolv.conf`` Ansible fact gathering waits ~12 s on DNS),
* mounts a tmpfs on ``/etc/systemd/system`` (roles may drop units there),
* bind-mounts ``<dir>/run`` on ``/run`` (so ``/run/flannel/subnet.env`` of the host is
  ``<dir>/run/flannel/subnet.env`` from outside),

sets the hostname, turns on IPv4 forwarding in the namespace, names itself
``lab-hostinit`` (what Ansible reports as ``ansible_service_mgr``: there is no systemd on
a light host), runs
``sshd -D -e -f <dir>/sshd_config`` and reaps orphans until sshd exits. When the lab
kills the ``unshare`` parent, ``--kill-child`` kills this process, and with it every
process of the host's PID namespace.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import socket
import sys

MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
PR_SET_NAME = 15

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]


def mount(source: str | None, target: str, fstype: str | None, flags: int,
          data: str | None = None) -> None:
    def enc(s: str | None) -> bytes | None:
        return None if s is None else os.fsencode(s)

    if _libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def log(msg: str) -> None:
    print(f"hostinit[{os.getpid()}]: {msg}", file=sys.stderr, flush=True)


def setup(name: str, hostdir: str) -> None:
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    # /etc files first: /etc/resolv.conf may be a symlink into the old /run.
    for fname in ("hosts", "resolv.conf", "hostname"):
        src = os.path.join(hostdir, "etc", fname)
        dst = os.path.join("/etc", fname)
        if os.path.exists(src) and os.path.exists(dst):
            mount(src, dst, None, MS_BIND)
    if os.path.isdir("/etc/systemd/system"):
        mount("tmpfs", "/etc/systemd/system", "tmpfs", 0, "mode=0755")
    mount(os.path.join(hostdir, "run"), "/run", None, MS_BIND)
    socket.sethostname(name)
    with open("/proc/sys/net/ipv4/ip_forward", "w") as fh:
        fh.write("1\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--dir", required=True, help="the host's directory under the state dir")
    parser.add_argument("--sshd", default="/usr/sbin/sshd")
    args = parser.parse_args(argv)

    setup(args.name, args.dir)
    # /proc/1/comm of the host: Ansible reports it as ansible_service_mgr ("lab-hostinit")
    _libc.prctl(PR_SET_NAME, b"lab-hostinit", 0, 0, 0)
    config = os.path.join(args.dir, "sshd_config")
    sshd = os.posix_spawn(args.sshd, [args.sshd, "-D", "-e", "-f", config], dict(os.environ))

    def stop(signum: int, _frame: object) -> None:
        log(f"signal {signum}: stopping sshd")
        try:
            os.kill(sshd, signal.SIGTERM)
        except ProcessLookupError:
            pass
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 0
        if pid == sshd:
            code = os.waitstatus_to_exitcode(status)
            log(f"sshd exited ({code})")
            return 1


if __name__ == "__main__":
    sys.exit(main())
