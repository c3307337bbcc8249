"""Build the agent bundle on the controller: a reproducible tar of

    VERSION
    bin/flannel-agent      (the collection's launcher)
    lib/engine/...         (the collection's plugins/module_utils, without caches)

Same inputs give the same bytes, so ``ansible.builtin.unarchive`` on the host changes
nothing when the engine did not change. Prints ``{"path": ..., "sha256": ...}``.

Usage: bundle_engine.py <module_utils dir> <launcher> <version> <output dir>
"""

from __future__ import annotations

import hashlib
import io
import json
import os
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


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    engine, launcher, version, out = Path(argv[0]), Path(argv[1]), argv[2], Path(argv[3])
    data = build(engine.resolve(), launcher.resolve(), version)
    digest = hashlib.sha256(data).hexdigest()
    out.mkdir(parents=True, exist_ok=True)
    dest = out / f"flannel-agent-{version}-{digest[:16]}.tar"
    if not dest.is_file():
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, dest)
    print(json.dumps({"path": str(dest), "sha256": digest, "version": version}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
