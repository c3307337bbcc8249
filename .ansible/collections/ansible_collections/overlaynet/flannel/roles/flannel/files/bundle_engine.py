"""Build the agent bundle on the controller: a reproducible tar of

    VERSION
    bin/flannel-agent      (the collection's launcher)
    lib/engine/...         (the collection's plugins/module_utils, without caches)

Same inputs give the same bytes, so ``ansible.builtin.unarchive`` on the host changes
nothing when the engine did not change. Prints ``{"path": ..., "sha256": ...}``.

Usage: bundle_engine.py <module_utils dir> <launcher> <version> [<cache dir>]

The tar is unpacked as root on every host, so the cache is private: the given directory,
or $XDG_CACHE_HOME/overlaynet-flannel, or ~/.cache/overlaynet-flannel of the user running
the play (from the password database, not $HOME, and never /tmp). It is created 0700 and
must be owned by that user and writable by nobody else; a cached tar is used only when its
bytes hash to the digest its name and this build say, and is rebuilt otherwise.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pwd
import stat
import sys
import tarfile
from pathlib import Path

MTIME = 1700000000


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    tar.addfile(info, io.BytesIO(data))


def build(engine: Path, launcher: Path, version: str) -> bytes:
    if not (engine / "__init__.py").is_file():
        raise SystemExit(f"error: {engine} is not the engine package (no __init__.py)")
    if not launcher.is_file():
        raise SystemExit(f"error: the agent launcher {launcher} does not exist")
    files: list[tuple[str, Path]] = []
    for root, dirs, names in os.walk(engine):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        for n in sorted(names):
            if n.endswith((".py", ".json", ".txt")):
                p = Path(root) / n
                files.append(("lib/engine/" + p.relative_to(engine).as_posix(), p))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        _add(tar, "VERSION", f"{version}\n".encode(), 0o644)
        _add(tar, "bin/flannel-agent", launcher.read_bytes(), 0o755)
        for name, path in sorted(files):
            _add(tar, name, path.read_bytes(), 0o644)
    return buf.getvalue()


def default_cache_dir() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "overlaynet-flannel"
    return Path(pwd.getpwuid(os.getuid()).pw_dir) / ".cache" / "overlaynet-flannel"


def private_dir(path: Path) -> Path:
    """path, created 0700 if missing; refused unless it is ours and nobody else can write it."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode):
        raise SystemExit(f"error: bundle cache {path} is not a directory")
    if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise SystemExit(f"error: bundle cache {path} is not private (owner uid {info.st_uid}, mode "
                         f"{stat.S_IMODE(info.st_mode):04o}); use a directory of your own with mode 0700 "
                         "(flannel_bundle_cache_dir)")
    return path


def cached(dest: Path, digest: str) -> bool:
    """A cached tar is used only when it is a regular file of ours whose bytes hash to digest."""
    try:
        info = dest.lstat()
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
        return False
    return hashlib.sha256(dest.read_bytes()).hexdigest() == digest


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        return 2
    engine, launcher, version = Path(argv[0]), Path(argv[1]), argv[2]
    out = private_dir(Path(argv[3]).expanduser() if len(argv) == 4 and argv[3] else default_cache_dir())
    data = build(engine.resolve(), launcher.resolve(), version)
    digest = hashlib.sha256(data).hexdigest()
    dest = out / f"flannel-agent-{version}-{digest[:16]}.tar"
    if not cached(dest, digest):
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, dest)
    print(json.dumps({"path": str(dest), "sha256": digest, "version": version}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
