"""A cgroup v2 directory of its own for each lab machine.

systemd-nspawn without a systemd on the host (``--keep-unit --register=no``) splits the
cgroup it was started in into ``payload/`` (the machine) and ``supervisor/`` (itself).
Machines started from the same cgroup therefore shared one ``payload/``: every machine's
systemd created and removed ``system.slice/<unit>`` in the same directories, so a unit
could fail to start (``status=219/CGROUP``, "No such file or directory") when another
machine's copy of that unit had just finished, leaving the machine "degraded" (2 of 90
boots under CPU load here, and one in CI). Starting each nspawn in its own directory
(``<our cgroup>/overlaynet-lab-<name>-<hash of the state dir>``) keeps machines apart.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import time
from pathlib import Path

PREFIX = "overlaynet-lab-"


class CgroupError(RuntimeError):
    """The machine's cgroup could not be made or removed; the message says why."""


def v2_mount() -> Path:
    """Mount point of the cgroup v2 hierarchy (``/sys/fs/cgroup`` or ``.../unified``)."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if fields[sep + 1] == "cgroup2" and fields[3] == "/":
                return Path(fields[4])
    raise CgroupError("no cgroup2 hierarchy is mounted (with its root at the mount point); nspawn machines need one")


def own_path() -> str:
    """This process's cgroup v2 path, e.g. ``/`` or ``/user.slice/session-1.scope``."""
    with open("/proc/self/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                return line[3:].strip()
    raise CgroupError("this process is in no cgroup v2 (no 0:: line in /proc/self/cgroup)")


def machine_cgroup(name: str, state_dir: str | Path) -> Path:
    """The directory a machine's nspawn starts in: stable for a name and state dir, so a
    later process (``down`` after a crash) finds it again."""
    tag = hashlib.sha256(str(Path(state_dir).resolve()).encode()).hexdigest()[:8]
    return v2_mount() / own_path().lstrip("/") / f"{PREFIX}{name}-{tag}"


def create(path: Path) -> None:
    """Make the directory; one left by a crashed run is removed first (it must be empty)."""
    if path.exists():
        remove(path)
    try:
        path.mkdir()
    except OSError as e:
        raise CgroupError(f"cannot create cgroup {path}: {e.strerror}") from e


def exec_in_argv(path: Path, argv: list[str]) -> list[str]:
    """``argv`` wrapped so the process joins ``path`` before it execs: nspawn must already
    be there when it reads its own cgroup."""
    script = 'echo 0 > "$1/cgroup.procs" && shift && exec "$@"'
    return ["sh", "-c", script, "sh", str(path), *argv]


def pids(path: Path) -> list[int]:
    """PIDs in ``path`` and below."""
    found: list[int] = []
    for procs in path.rglob("cgroup.procs"):
        with contextlib.suppress(OSError):
            found += [int(p) for p in procs.read_text().split()]
    return found


def remove(path: Path, timeout: float = 10.0) -> None:
    """Remove the machine's cgroup tree (after the machine stopped). Processes still in it
    (exiting, or leaked by a crashed run) are killed through ``cgroup.kill``, which
    reaches exactly this tree and nothing else."""
    if not path.exists():
        return
    deadline = time.monotonic() + timeout
    killed = False
    while True:
        busy = _rmdir_tree(path)
        if not busy:
            return
        if time.monotonic() > deadline:
            raise CgroupError(f"cgroup {path} still holds processes {pids(path)} after {timeout:.0f} s")
        if not killed and time.monotonic() > deadline - timeout / 2:
            with contextlib.suppress(OSError):
                (path / "cgroup.kill").write_text("1")
            killed = True
        time.sleep(0.05)


def _rmdir_tree(path: Path) -> bool:
    """rmdir children first; True while something is still busy."""
    busy = False
    for child in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        busy |= _rmdir(child)
    return _rmdir(path) or busy


def _rmdir(path: Path) -> bool:
    try:
        os.rmdir(path)
    except FileNotFoundError:
        return False
    except OSError as e:
        if e.errno == errno.EBUSY:
            return True
        raise CgroupError(f"cannot remove cgroup {path}: {e.strerror}") from e
    return False
