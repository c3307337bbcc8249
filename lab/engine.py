"""The engine (this checkout's plugins/module_utils), importable from the lab and the tests.

The engine's modules import each other as ``ansible_collections.overlaynet.flannel...``:
a symlink ``build/collections/ansible_collections/overlaynet/flannel`` -> the checkout makes
that name point here, and ``build/collections`` goes on ``sys.path``. The same directory is
the ``ANSIBLE_COLLECTIONS_PATH`` of the tests' ansible runs, so modules, tests and the lab
import one copy of the engine. :func:`link_collection` sets it up; :func:`module` does so
before it imports.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any, cast

REPO = Path(__file__).resolve().parent.parent
COLLECTIONS = REPO / "build" / "collections"
ENGINE = "ansible_collections.overlaynet.flannel.plugins.module_utils"


def link_collection() -> Path:
    """Make the symlink (if missing) and put ``build/collections`` on ``sys.path``."""
    link = COLLECTIONS / "ansible_collections" / "overlaynet" / "flannel"
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        try:
            link.symlink_to(os.path.relpath(REPO, link.parent))
        except FileExistsError:
            pass  # a parallel process made it
    if str(COLLECTIONS) not in sys.path:
        sys.path.insert(0, str(COLLECTIONS))
    return COLLECTIONS


def module(name: str) -> Any:
    """The engine module *name* (e.g. ``"subnet.env"``), imported by its collection name."""
    link_collection()
    return importlib.import_module(f"{ENGINE}.{name}")


def parse_env_text(text: str) -> dict[str, str]:
    """subnet.env's KEY=VALUE lines, read with the engine's own (tolerant) parser."""
    return cast(dict[str, str], module("subnet.env").parse_env_text(text))
