"""A tiny container image without a registry: busybox-static (DESIGN §6).

The image is a tar of a root with ``/bin/busybox`` and one RELATIVE symlink per applet
(``/bin/sh -> busybox``), so it works wherever docker mounts it. It is built once from
the root namespace's ``busybox-static`` and cached next to the rootfs; importing it is
``docker import -c 'ENV PATH=/bin' - ofl-busybox`` with the tar on stdin.

Python API::

    from lab import busybox_image
    tar = busybox_image.ensure_tarball()                 # cached tar, built once
    busybox_image.import_into(machine)                   # docker import inside a Machine
    busybox_image.import_image(run, tar)                 # any runner: run(argv, input=bytes)
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .rootfs import CACHE_DIR

IMAGE_NAME = "ofl-busybox"
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
#: Bump when the tar layout changes.
LAYOUT_VERSION = 1

PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"


class BusyboxError(RuntimeError):
    pass


def find_busybox() -> Path:
    for c in BUSYBOX_CANDIDATES:
        p = Path(c)
        if p.is_file():
            return p
    raise BusyboxError("busybox not found; apt-get install busybox-static")


def _check_static(busybox: Path) -> None:
    with open(busybox, "rb") as f:
        head = f.read(4096)
    if head[:4] != b"\x7fELF":
        raise BusyboxError(f"{busybox} is not an ELF binary")
    # a dynamically linked binary carries a PT_INTERP path to the loader
    if b"/lib64/ld-linux" in head or b"/lib/ld-linux" in head:
        raise BusyboxError(f"{busybox} is dynamically linked; apt-get install busybox-static")


def applets(busybox: Path) -> list[str]:
    out = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True).stdout
    return sorted({a.strip() for a in out.split() if a.strip() and a.strip() != "busybox"})


def _add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.DIRTYPE
    ti.mode = mode
    ti.mtime = 0
    tar.addfile(ti)


def _add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mode = mode
    ti.mtime = 0
    tar.addfile(ti, io.BytesIO(data))


def write_tarball(dest: Path, busybox: Path | None = None) -> Path:
    """Write the image tar to ``dest`` (atomically). Returns ``dest``."""
    busybox = Path(busybox or find_busybox())
    _check_static(busybox)
    data = busybox.read_bytes()
    names = applets(busybox)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".busybox-", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for d in ("bin", "etc", "root", "proc", "sys", "dev", "run", "var"):
                _add_dir(tar, d, 0o700 if d == "root" else 0o755)
            _add_dir(tar, "tmp", 0o1777)
            _add_file(tar, "bin/busybox", data, 0o755)
            for a in names:
                ti = tarfile.TarInfo(f"bin/{a}")
                ti.type = tarfile.SYMTYPE
                ti.linkname = "busybox"  # relative: resolves inside any mount
                ti.mode = 0o777
                ti.mtime = 0
                tar.addfile(ti)
            _add_file(tar, "etc/passwd", PASSWD.encode())
            _add_file(tar, "etc/group", GROUP.encode())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return dest


def ensure_tarball(cache_dir: Path = CACHE_DIR, busybox: Path | None = None) -> Path:
    """The cached image tar for this busybox binary, built on first use."""
    busybox = Path(busybox or find_busybox())
    digest = hashlib.sha256(busybox.read_bytes() + f"v{LAYOUT_VERSION}".encode()).hexdigest()[:16]
    dest = Path(cache_dir) / f"ofl-busybox-{digest}.tar"
    if not dest.is_file():
        write_tarball(dest, busybox)
    return dest


def import_argv(name: str = IMAGE_NAME, docker: Sequence[str] = ("docker",)) -> list[str]:
    """The ``docker import`` command that reads the tar from stdin."""
    return [*docker, "import", "-c", "ENV PATH=/bin", "-", name]


Runner = Callable[..., Any]


def import_image(
    run: Runner,
    tarball: Path | None = None,
    name: str = IMAGE_NAME,
    docker: Sequence[str] = ("docker",),
) -> str:
    """Import the image through ``run(argv, input=bytes)`` (e.g. ``Machine.run``).

    ``docker`` is the client argv, e.g. ``("docker", "-H", "unix:///run/x/docker.sock")``
    for a per-namespace dockerd. Returns the image id that docker printed.
    """
    tar = Path(tarball or ensure_tarball())
    r = run(import_argv(name, docker), input=tar.read_bytes())
    out = r.stdout.decode() if isinstance(r.stdout, bytes) else r.stdout
    return out.strip()


def import_into(machine: Any, name: str = IMAGE_NAME, tarball: Path | None = None, timeout: float = 60) -> str:
    """Import the image into a ``lab.machines.Machine``'s docker (waits for dockerd)."""
    deadline = time.monotonic() + timeout
    while True:
        r = machine.run(["docker", "version", "--format", "{{.Server.Version}}"], check=False)
        if r.returncode == 0:
            break
        if time.monotonic() > deadline:
            raise BusyboxError(f"{machine.name}: dockerd did not answer within {timeout:.0f} s: {r.stderr}")
        time.sleep(0.2)
    return import_image(machine.run, tarball, name)
