"""Where a lab keeps its state, and the state file itself.

One lab = one state directory (default ``lab/.state/``, or ``$OFL_LAB_STATE``) and one
namespace prefix (default ``ofl-``, or ``$OFL_LAB_PREFIX``). The state file
``<state dir>/state.json`` lists everything the lab created; it is written *before* each
namespace or process is created, so ``down`` can undo a run that crashed half-way.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_STATE_DIR = REPO / "lab" / ".state"
DEFAULT_INVENTORY = REPO / "lab" / "inventory.yml"
DEFAULT_PREFIX = "ofl-"
DEFAULT_SUBNET = "192.168.81.0/24"

# A prefix has no inner dash, so the name sets of two prefixes never overlap:
# "oflt-h1" does not start with "ofl-".
PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,5}-$")

STATE_VERSION = 1


class LabError(RuntimeError):
    """A lab operation failed; the message says what and what to do."""


def default_python() -> str:
    """The interpreter the inventory gives Ansible: ``<repo>/.venv/bin/python``.

    Absolute but *not* symlink-resolved (resolving would leave the venv).
    """
    env = os.environ.get("OFL_LAB_PYTHON")
    if env:
        return env
    venv = REPO / ".venv" / "bin" / "python"
    if venv.exists():
        return os.path.abspath(venv)
    return "/usr/bin/python3"


def resolve_paths(
    state_dir: str | os.PathLike[str] | None = None,
    inventory: str | os.PathLike[str] | None = None,
    prefix: str | None = None,
) -> tuple[Path, Path, str]:
    """Apply the defaults and environment overrides; validate the prefix."""
    if state_dir is None:
        state_dir = os.environ.get("OFL_LAB_STATE") or DEFAULT_STATE_DIR
    sdir = Path(os.path.abspath(state_dir))
    if inventory is None:
        inventory = os.environ.get("OFL_LAB_INVENTORY")
    if inventory is None:
        inventory = DEFAULT_INVENTORY if sdir == DEFAULT_STATE_DIR else sdir / "inventory.yml"
    inv = Path(os.path.abspath(inventory))
    if prefix is None:
        prefix = os.environ.get("OFL_LAB_PREFIX") or DEFAULT_PREFIX
    if not PREFIX_RE.match(prefix):
        raise LabError(
            f"bad namespace prefix {prefix!r}: use 1-6 lower-case letters/digits followed by "
            f"'-' (e.g. 'ofl-', 'oflt-'); no inner '-', so two labs' names never overlap"
        )
    return sdir, inv, prefix


class StateStore:
    """The state file of one lab, with an exclusive lock for mutations."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        self.path = state_dir / "state.json"
        self.lock_path = state_dir / ".lock"

    def exists(self) -> bool:
        return self.path.exists()

    def load(self) -> dict[str, Any] | None:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LabError(
                f"state file {self.path} is not valid JSON ({exc}); "
                f"run `python3 -m lab down` to clean up by prefix"
            ) from exc
        if not isinstance(data, dict):
            raise LabError(f"state file {self.path} does not hold an object; run `down`")
        return data

    def save(self, data: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".state.json.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.path)

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the lab's lock (flock on ``<state dir>/.lock``); re-entrant per process."""
        depth = getattr(self, "_depth", 0)
        if depth:
            self._depth = depth + 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._depth = 1
            try:
                yield
            finally:
                self._depth = 0
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def new_state(prefix: str, subnet: str, state_dir: Path, inventory: Path, python: str,
              lab_id: str) -> dict[str, Any]:
    return {
        "version": STATE_VERSION,
        "lab_id": lab_id,
        "status": "building",
        "prefix": prefix,
        "subnet": subnet,
        "state_dir": str(state_dir),
        "inventory": str(inventory),
        "python": python,
        "namespaces": [],  # every namespace, recorded before it is created
        "processes": {},  # key -> {"pid", "start_time", "argv0"}; killed by PID on down
        "underlay": None,
        "etcd": [],
        "hosts": {},
        "containers": {},
    }
