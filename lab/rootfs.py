"""The cached Debian rootfs that lab machines boot from (DESIGN §6 "Machines").

One rootfs per Debian release (``RELEASES``: bookworm, the default, and trixie) is
built with debootstrap in the root namespace (where the package registries are
reachable), customised for fast container boots and cached under
``/var/cache/overlaynet-lab/rootfs-<key>``. ``<key>`` is a hash of everything that
shapes the result (release, its Python, apt packages, Python packages, customisation
version), so each release has its own cache and a change in any of them builds a new
cache next to the old one. Machines use the cache
read-only as the lower layer of an overlayfs and never write into it.

The build happens in a temporary directory beside the cache and is renamed into place
only when every step, including an offline install test of the wheel directory,
succeeded: a failed or interrupted build leaves no half cache behind.

What is in the rootfs besides the packages:

* ``/opt/overlaynet-wheels``: manylinux wheels for the release's python3 (cp311 on
  bookworm, cp313 on trixie) of ``python3-etcd3``,
  ``pyroute2``, ``netaddr`` and their dependencies, so a machine (which has no route
  out) can ``pip install --no-index --find-links /opt/overlaynet-wheels ...``.
* sshd: keys only, ed25519 host key only (generated per machine at boot, see
  ``lab.machines``), ``internal-sftp``; root's ``authorized_keys`` is written per
  machine at boot, never baked in.
* timers and units that only slow a container down are masked; docker, containerd
  and ssh are enabled.
* no ``/etc/hostname``, ``/etc/resolv.conf`` or ``/etc/machine-id`` content: each
  machine gets its own at boot.

Python API::

    from lab import rootfs
    path = rootfs.ensure_rootfs()          # build once, then reuse (returns the dir)
    rootfs.ensure_rootfs(release="trixie") # the same for Debian 13
    rootfs.rootfs_path()                   # where the current key's cache lives
    rootfs.prune()                         # drop caches of other keys not in use

Command line: ``python -m lab.rootfs [--release R] [--rebuild] [--prune] [--mirror URL]``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

#: Bump when the customisation below changes in a way that must rebuild caches.
SCRIPT_VERSION = 1

CACHE_DIR = Path(os.environ.get("OVERLAYNET_LAB_CACHE", "/var/cache/overlaynet-lab"))


@dataclass(frozen=True)
class Release:
    """A Debian release the machines can run: its suite and its python3, which the wheels
    are fetched for."""

    suite: str
    version: str  # Debian's number, as ansible_distribution_major_version says it
    python: tuple[str, str]  # (python3's version, its wheel ABI tag)
    packages: tuple[str, ...] = ()  # besides APT_PACKAGES: what this release split out


RELEASES: dict[str, Release] = {
    "bookworm": Release("bookworm", "12", ("3.11", "cp311")),
    # trixie's docker.io has the client in docker-cli, only recommended (debootstrap skips that)
    "trixie": Release("trixie", "13", ("3.13", "cp313"), packages=("docker-cli",)),
}
DEFAULT_RELEASE = "bookworm"

APT_PACKAGES: tuple[str, ...] = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "python3-venv",
    "iproute2",
    "iputils-ping",
    "docker.io",
    "iperf3",
    "iptables",
    "ca-certificates",
    "netcat-openbsd",
)

#: Installed from the wheel directory by the roles; top-level names only.
PYTHON_PACKAGES: tuple[str, ...] = ("python3-etcd3", "pyroute2", "netaddr")
#: Import names that must work after an offline install (checked at build time).
PYTHON_IMPORTS: tuple[str, ...] = ("etcd3", "pyroute2", "netaddr")

WHEEL_DIR = "/opt/overlaynet-wheels"  # inside the rootfs
MANIFEST = "/etc/overlaynet-lab-rootfs.json"  # inside the rootfs

WHEEL_PLATFORMS: tuple[str, ...] = (
    "manylinux2014_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux_2_28_x86_64",
    "linux_x86_64",
    "any",
)

#: Units masked for a fast, quiet container boot.
MASKED_UNITS: tuple[str, ...] = (
    "apt-daily.timer",
    "apt-daily.service",
    "apt-daily-upgrade.timer",
    "apt-daily-upgrade.service",
    "dpkg-db-backup.timer",
    "dpkg-db-backup.service",
    "e2scrub_all.timer",
    "e2scrub_all.service",
    "e2scrub_reap.service",
    "fstrim.timer",
    "fstrim.service",
    "man-db.timer",
    "systemd-networkd-wait-online.service",
    "systemd-pstore.service",
    "systemd-modules-load.service",  # no module loading in a container (trixie's fails: degraded)
    "systemd-timesyncd.service",
    "console-getty.service",
    "getty@tty1.service",
    "getty.target",
)

#: Units that must be enabled (symlink into <target>.wants).
ENABLED_UNITS: tuple[tuple[str, str], ...] = (
    ("ssh.service", "multi-user.target"),
    ("containerd.service", "multi-user.target"),
    ("docker.service", "multi-user.target"),
    ("docker.socket", "sockets.target"),
)

SSHD_DROPIN = """\
# overlaynet lab machine (written by lab/rootfs.py)
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
PrintMotd no
PrintLastLog no
"""

JOURNALD_DROPIN = """\
[Journal]
Storage=volatile
RuntimeMaxUse=16M
ForwardToConsole=no
"""

SYSTEM_DROPIN = """\
[Manager]
DefaultTimeoutStartSec=30s
DefaultTimeoutStopSec=5s
"""

#: A clean environment for commands run inside the rootfs (the root namespace's
#: PIP_* variables and pyenv PATH must not leak in).
CHROOT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
}

Log = Callable[[str], None]


class RootfsError(RuntimeError):
    """The rootfs could not be built; the message names the step and the fix."""


def _stderr_log(msg: str) -> None:
    print(f"[rootfs] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- mirror


def _deb822_stanzas(text: str) -> Iterator[dict[str, str]]:
    stanza: dict[str, str] = {}
    key = None
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.lstrip().startswith("#"):
            continue
        if not line.strip():
            if stanza:
                yield stanza
            stanza, key = {}, None
            continue
        if line[0] in " \t" and key:
            stanza[key] += " " + line.strip()
            continue
        if ":" in line:
            key, _, value = line.partition(":")
            key = key.strip().lower()
            stanza[key] = value.strip()
    if stanza:
        yield stanza


def _source_files(apt_dir: Path) -> list[Path]:
    """sources.list, then sources.list.d/*.list and *.sources by name: apt's order."""
    files: list[Path] = []
    if (apt_dir / "sources.list").is_file():
        files.append(apt_dir / "sources.list")
    d = apt_dir / "sources.list.d"
    if d.is_dir():
        files += sorted(p for p in d.iterdir() if p.suffix in (".list", ".sources"))
    return files


def _deb822_sources(text: str) -> list[tuple[str, list[str], list[str]]]:
    found = []
    for st in _deb822_stanzas(text):
        if "deb" not in st.get("types", "").split() or st.get("enabled", "yes").lower() == "no":
            continue
        for uri in st.get("uris", "").split():
            found.append((uri, st.get("suites", "").split(), st.get("components", "").split()))
    return found


def _one_line_sources(text: str) -> list[tuple[str, list[str], list[str]]]:
    found = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        line = re.sub(r"\[[^\]]*\]", " ", line)  # drop [options]
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "deb":
            found.append((parts[1], [parts[2]], parts[3:]))
    return found


def _apt_sources(apt_dir: Path) -> list[tuple[str, list[str], list[str]]]:
    """(uri, suites, components) of every enabled ``deb`` source, in apt's order."""
    found: list[tuple[str, list[str], list[str]]] = []
    for f in _source_files(apt_dir):
        try:
            text = f.read_text(errors="replace")
        except OSError:
            continue
        found += _deb822_sources(text) if f.suffix == ".sources" else _one_line_sources(text)
    return found


def debian_mirror(suite: str = DEFAULT_RELEASE, apt_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror this machine's apt uses (``$OVERLAYNET_LAB_MIRROR`` wins).

    Prefers a source that carries ``suite`` itself; else any source of Debian's main
    archive (a ``main`` component, not ``-security``/``-updates``), since a mirror of
    one Debian release serves the others too.
    """
    env = os.environ.get("OVERLAYNET_LAB_MIRROR")
    if env:
        return env
    sources = [s for s in _apt_sources(apt_dir) if s[0].startswith(("http://", "https://", "file:/"))]
    for uri, suites, comps in sources:
        if suite in suites and "main" in comps:
            return uri
    for uri, suites, comps in sources:
        if "main" in comps and any(s and "-" not in s and "/" not in s for s in suites):
            return uri
    raise RootfsError(
        f"no Debian mirror found in {apt_dir}/sources.list or {apt_dir}/sources.list.d/*.sources; "
        "set OVERLAYNET_LAB_MIRROR=<mirror URL> or pass mirror=..."
    )


# ----------------------------------------------------------------------------- keys


def release_of(name: str) -> Release:
    """The release called *name*; a clear error naming the known ones for anything else."""
    try:
        return RELEASES[name]
    except KeyError:
        raise RootfsError(f"unknown Debian release {name!r} for the lab machines; "
                          f"known: {', '.join(RELEASES)}") from None


def cache_key(
    packages: Sequence[str] = APT_PACKAGES,
    python_packages: Sequence[str] = PYTHON_PACKAGES,
    release: str = DEFAULT_RELEASE,
) -> str:
    """A short hash of everything that shapes the rootfs (bookworm's as before releases were
    a choice: its cache stays valid)."""
    rel = release_of(release)
    blob = json.dumps(
        {
            "suite": rel.suite,
            "packages": sorted((*packages, *rel.packages)),
            "python": sorted(python_packages),
            "python_target": rel.python,
            "script": SCRIPT_VERSION,
            "masked": sorted(MASKED_UNITS),
            "sshd": SSHD_DROPIN,
            "journald": JOURNALD_DROPIN,
            "system": SYSTEM_DROPIN,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def rootfs_path(cache_dir: Path = CACHE_DIR, key: str | None = None, release: str = DEFAULT_RELEASE) -> Path:
    return Path(cache_dir) / f"rootfs-{key or cache_key(release=release)}"


def is_complete(path: Path) -> bool:
    return (Path(path) / MANIFEST.lstrip("/")).is_file()


def manifest(path: Path | None = None) -> dict:
    """The build record of a cached rootfs (key, packages, wheels, build time...)."""
    p = Path(path or rootfs_path()) / MANIFEST.lstrip("/")
    return json.loads(p.read_text())


# ---------------------------------------------------------------------------- mounts


def _mountpoints_below(path: Path) -> list[str]:
    """Mount points at or below ``path`` in this mount namespace, deepest first."""
    root = os.path.realpath(path)
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].encode().decode("unicode_escape")
            if mp == root or mp.startswith(root + "/"):
                out.append(mp)
    return sorted(out, key=len, reverse=True)


def umount_below(path: Path) -> None:
    """Unmount everything at or below ``path`` (lazy as a last resort)."""
    for mp in _mountpoints_below(path):
        r = subprocess.run(["umount", mp], capture_output=True)
        if r.returncode != 0:
            subprocess.run(["umount", "-l", mp], capture_output=True)
    left = _mountpoints_below(path)
    if left:
        raise RootfsError(f"could not unmount {left}; unmount them by hand")


def remove_tree(path: Path) -> None:
    """Remove a directory tree after making sure nothing is mounted inside it."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    umount_below(path)
    shutil.rmtree(path)


# ---------------------------------------------------------------------------- chroot


def chroot_run(
    root: Path,
    argv: Sequence[str],
    *,
    check: bool = True,
    capture: bool = True,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` chrooted into ``root`` with /proc, /dev/pts and a /tmp tmpfs.

    The mounts are made in a private mount namespace (``unshare --mount``) and vanish
    with it, so nothing can be left mounted in the rootfs, even on a crash.
    """
    script = (
        'r="$1"; shift; '
        'mount -t proc proc "$r/proc" && '
        'mount -t tmpfs -o mode=1777 tmpfs "$r/tmp" && '
        'exec chroot "$r" "$@"'
    )
    cmd = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh", str(root), *argv]
    r = subprocess.run(cmd, env=CHROOT_ENV, capture_output=capture, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RootfsError(
            f"in the rootfs, {' '.join(argv)!r} failed with exit code {r.returncode}:\n"
            f"{(r.stdout or '')[-2000:]}{(r.stderr or '')[-3000:]}"
        )
    return r


# --------------------------------------------------------------------------- steps


def _run(argv: Sequence[str], *, log: Log, what: str, timeout: float, env: dict | None = None) -> str:
    log(f"{what}: {' '.join(argv)}")
    try:
        r = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, env=env)
    except FileNotFoundError as e:
        raise RootfsError(f"{what}: {argv[0]} is not installed ({e}); apt-get install it") from e
    except subprocess.TimeoutExpired as e:
        raise RootfsError(f"{what}: timed out after {timeout:.0f} s") from e
    if r.returncode != 0:
        raise RootfsError(
            f"{what} failed (exit code {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        )
    return r.stdout


def _debootstrap(target: Path, mirror: str, packages: Sequence[str], suite: str, log: Log) -> None:
    _run(
        [
            "debootstrap",
            "--variant=minbase",
            "--include=" + ",".join(packages),
            suite,
            str(target),
            mirror,
        ],
        log=log,
        what="debootstrap",
        timeout=1800,
    )


def _pip_download(dest: Path, python_packages: Sequence[str], python: tuple[str, str], log: Log) -> list[str]:
    dest.mkdir(parents=True, exist_ok=True)
    version, abi = python
    argv = [
        sys.executable, "-m", "pip", "download",
        "--only-binary=:all:",
        "--python-version", version,
        "--implementation", "cp",
        "--abi", abi,
        "--abi", "abi3",
        "--abi", "none",
    ]
    for plat in WHEEL_PLATFORMS:
        argv += ["--platform", plat]
    argv += ["--dest", str(dest), *python_packages]
    _run(argv, log=log, what="pip download (wheels for the machines)", timeout=900)
    wheels = sorted(p.name for p in dest.iterdir() if p.suffix == ".whl")
    if not wheels:
        raise RootfsError("pip download produced no wheel; check the package index settings of pip")
    return wheels


def _write(root: Path, rel: str, text: str, mode: int = 0o644) -> None:
    p = root / rel.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.is_symlink() or p.exists():
        p.unlink()
    p.write_text(text)
    p.chmod(mode)


def _mask(root: Path, unit: str) -> None:
    link = root / "etc/systemd/system" / unit
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to("/dev/null")
    # an enablement symlink left in some *.wants would drag the masked unit in anyway
    for wants in (root / "etc/systemd/system").glob("*.wants"):
        w = wants / unit
        if w.is_symlink():
            w.unlink()


def _enable(root: Path, unit: str, target: str) -> None:
    for base in ("lib/systemd/system", "usr/lib/systemd/system"):
        if (root / base / unit).exists():
            src = f"/{base}/{unit}"
            break
    else:
        raise RootfsError(f"unit {unit} is not installed in the rootfs; is its package in APT_PACKAGES?")
    wants = root / "etc/systemd/system" / f"{target}.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / unit
    if not (link.is_symlink() or link.exists()):
        link.symlink_to(src)


def _reset_identity(root: Path) -> None:
    """Identity: per machine, written at boot by lab.machines."""
    for rel in ("etc/hostname", "etc/resolv.conf"):
        p = root / rel
        if p.is_symlink() or p.exists():
            p.unlink()
    (root / "etc/machine-id").write_text("")
    dbus_id = root / "var/lib/dbus/machine-id"
    if dbus_id.is_symlink() or dbus_id.exists():
        dbus_id.unlink()
    dbus_id.parent.mkdir(parents=True, exist_ok=True)
    dbus_id.symlink_to("/etc/machine-id")
    _write(root, "/etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")


def _configure_sshd(root: Path) -> None:
    """sshd: per-machine ed25519 host key, root by key only, internal sftp."""
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    _write(root, "/etc/ssh/sshd_config.d/overlaynet-lab.conf", SSHD_DROPIN)
    cfg = root / "etc/ssh/sshd_config"
    text = cfg.read_text()
    text = re.sub(r"(?m)^Subsystem\s+sftp\s+.*$", "Subsystem sftp internal-sftp", text)
    if "internal-sftp" not in text:
        text += "\nSubsystem sftp internal-sftp\n"
    cfg.write_text(text)
    rootssh = root / "root/.ssh"
    rootssh.mkdir(mode=0o700, exist_ok=True)
    rootssh.chmod(0o700)
    ak = rootssh / "authorized_keys"
    if ak.exists():
        ak.unlink()


def _configure_systemd(root: Path) -> None:
    """systemd: fast boot and shutdown, volatile journal, no timers."""
    _write(root, "/etc/systemd/journald.conf.d/overlaynet-lab.conf", JOURNALD_DROPIN)
    _write(root, "/etc/systemd/system.conf.d/overlaynet-lab.conf", SYSTEM_DROPIN)
    for unit in MASKED_UNITS:
        _mask(root, unit)
    for unit, target in ENABLED_UNITS:
        _enable(root, unit, target)
    # docker needs /var/lib/docker on a plain filesystem: lab.machines bind-mounts it
    (root / "var/lib/docker").mkdir(parents=True, exist_ok=True)


def _drop_caches(root: Path) -> None:
    """No registries reachable from a machine: drop the package caches; empty the logs."""
    for p in (root / "var/cache/apt/archives").glob("*.deb"):
        p.unlink()
    lists = root / "var/lib/apt/lists"
    for p in lists.glob("*"):
        if p.is_file() and p.name != "lock":
            p.unlink()
    for p in (root / "var/log").rglob("*"):
        if p.is_file():
            p.write_bytes(b"")


def _customise(root: Path, log: Log) -> None:
    log("customising the rootfs")
    _reset_identity(root)
    _configure_sshd(root)
    _configure_systemd(root)
    _drop_caches(root)


def _verify_wheels(root: Path, python_packages: Sequence[str], log: Log) -> None:
    log("checking that the wheels install offline in the rootfs")
    venv = "/tmp/overlaynet-wheel-check"  # on the tmpfs of chroot_run: leaves nothing
    script = (
        f"set -e; python3 -m venv {venv}; "
        f"{venv}/bin/pip install -q --no-index --find-links {WHEEL_DIR} {' '.join(python_packages)}; "
        f"{venv}/bin/python -c 'import {', '.join(PYTHON_IMPORTS)}; print(\"ok\")'"
    )
    r = chroot_run(root, ["sh", "-c", script], check=False)
    if r.returncode != 0 or "ok" not in r.stdout:
        raise RootfsError(
            "the wheel directory does not install offline in the rootfs "
            f"(exit code {r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
        )


def _tree_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
    return total


@contextlib.contextmanager
def _lock(cache_dir: Path) -> Iterator[None]:
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def build_rootfs(
    target: Path,
    *,
    mirror: str | None = None,
    packages: Sequence[str] = APT_PACKAGES,
    python_packages: Sequence[str] = PYTHON_PACKAGES,
    release: str = DEFAULT_RELEASE,
    log: Log = _stderr_log,
) -> dict:
    """Build a rootfs of *release* into ``target`` (which must not exist). Returns the manifest.

    Low level: no caching, no atomic rename (``ensure_rootfs`` adds those).
    """
    target = Path(target)
    rel = release_of(release)
    if target.exists():
        raise RootfsError(f"{target} exists already")
    mirror = mirror or debian_mirror(rel.suite)
    t0 = time.monotonic()
    # wheels first: a bad Python package list fails in seconds, not after debootstrap
    wheel_tmp = target.parent / f"{target.name}.wheels"
    try:
        wheels = _pip_download(wheel_tmp, python_packages, rel.python, log)
        t1 = time.monotonic()
        _debootstrap(target, mirror, (*packages, *rel.packages), rel.suite, log)
        t_deb = time.monotonic() - t1
        wheel_dir = target / WHEEL_DIR.lstrip("/")
        wheel_dir.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(wheel_tmp), wheel_dir)
        wheel_dir.chmod(0o755)
    finally:
        if wheel_tmp.exists():
            shutil.rmtree(wheel_tmp)
    _customise(target, log)
    _verify_wheels(target, python_packages, log)
    info = {
        "key": cache_key(packages, python_packages, release),
        "suite": rel.suite,
        "release": release,
        "mirror": mirror,
        "packages": [*packages, *rel.packages],
        "python_packages": list(python_packages),
        "wheel_dir": WHEEL_DIR,
        "wheels": wheels,
        "script_version": SCRIPT_VERSION,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "debootstrap_seconds": round(t_deb, 1),
        "build_seconds": round(time.monotonic() - t0, 1),
    }
    size = info["size_bytes"] = _tree_size(target)
    _write(target, MANIFEST, json.dumps(info, indent=2) + "\n")
    log(
        f"rootfs built in {info['build_seconds']} s (debootstrap {info['debootstrap_seconds']} s), "
        f"{size / 2**20:.0f} MiB"
    )
    return info


def ensure_rootfs(
    cache_dir: Path = CACHE_DIR,
    *,
    mirror: str | None = None,
    packages: Sequence[str] = APT_PACKAGES,
    python_packages: Sequence[str] = PYTHON_PACKAGES,
    release: str = DEFAULT_RELEASE,
    rebuild: bool = False,
    log: Log = _stderr_log,
) -> Path:
    """Return the cached rootfs of *release* for the current key, building it first if needed.

    Concurrent callers serialise on a lock file; the build goes to a temporary
    directory that is renamed into place only on success.
    """
    cache_dir = Path(cache_dir)
    key = cache_key(packages, python_packages, release)
    final = rootfs_path(cache_dir, key)
    if is_complete(final) and not rebuild:
        return final
    with _lock(cache_dir):
        if is_complete(final) and not rebuild:
            return final  # built by someone else while we waited
        # leftovers of builds that died (we hold the lock: nobody is building now)
        for stale in cache_dir.glob(".build-*"):
            log(f"removing a failed build {stale}")
            remove_tree(stale)
        tmp = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=cache_dir))
        try:
            tmp.rmdir()  # debootstrap wants to create it
            build_rootfs(tmp, mirror=mirror, packages=packages, python_packages=python_packages, release=release,
                         log=log)
            os.chmod(tmp, 0o755)
            if final.exists():
                old = cache_dir / f".old-{key}-{os.getpid()}"
                final.rename(old)
                tmp.rename(final)
                remove_tree(old)
            else:
                tmp.rename(final)
        except BaseException:
            remove_tree(tmp)
            raise
    return final


def in_use_lowerdirs() -> set[str]:
    """Lower directories of overlay mounts in this mount namespace."""
    used: set[str] = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if not right.startswith("overlay "):
                continue
            for opt in right.split()[2].split(","):
                if opt.startswith("lowerdir="):
                    used.update(opt[len("lowerdir="):].split(":"))
    return used


def prune(cache_dir: Path = CACHE_DIR, log: Log = _stderr_log) -> list[Path]:
    """Remove cached rootfs that no mounted overlay uses and that are not the current key of
    a release (every release's cache is kept)."""
    cache_dir = Path(cache_dir)
    keep = {rootfs_path(cache_dir, release=name) for name in RELEASES}
    used = in_use_lowerdirs()
    removed = []
    with _lock(cache_dir):
        for p in sorted(cache_dir.glob("rootfs-*")):
            if p in keep or str(p) in used:
                continue
            log(f"removing old rootfs cache {p}")
            remove_tree(p)
            removed.append(p)
    return removed


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.rootfs", description=__doc__.split("\n")[0])
    ap.add_argument("--cache-dir", type=Path, default=CACHE_DIR)
    ap.add_argument("--mirror", help="Debian mirror (default: the one apt uses)")
    ap.add_argument("--release", choices=sorted(RELEASES), default=DEFAULT_RELEASE,
                    help=f"Debian release of the rootfs (default: {DEFAULT_RELEASE})")
    ap.add_argument("--rebuild", action="store_true", help="build even if the cache exists")
    ap.add_argument("--prune", action="store_true", help="remove caches of other keys")
    ap.add_argument("--path", action="store_true", help="only print the cache path")
    args = ap.parse_args(argv)
    if args.path:
        print(rootfs_path(args.cache_dir, release=args.release))
        return 0
    try:
        path = ensure_rootfs(args.cache_dir, mirror=args.mirror, release=args.release, rebuild=args.rebuild)
        if args.prune:
            prune(args.cache_dir)
    except RootfsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
