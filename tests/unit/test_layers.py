"""The engine's import direction (ARCHITECTURE.md): read from the source, so a new upward
import, an Ansible import or a third-party import outside deps.py fails here."""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[2] / "plugins" / "module_utils"
BASE = {"deps", "errors", "defaults", "files"}
# package -> the packages its files may import (besides their own and the base)
ALLOWED = {
    "base": set(),
    "backend facts": set(),
    "subnet": {"backend facts"},
    "host": set(),
    "etcd": {"subnet", "backend facts"},
    "backends": {"host", "subnet", "backend facts"},
    "ops": {"etcd", "host", "subnet", "backend facts"},
    "agent": {"backends", "backend facts", "etcd", "host", "subnet"},
}
THIRD_PARTY = {"netaddr", "etcd3", "grpc", "pyroute2"}


# Plain data about the backends, read by the config model: spec.py, registry.py, each
# backend's __init__.py (its SPEC), vxlan's MAC derivation (the module writes the MAC too) and
# wireguard's key text forms (the PSK's check).
FACTS = {("backends", "spec"), ("backends", "registry"), ("backends", "vxlan", "mac"),
         ("backends", "wireguard", "key_text")}


def layer(parts: tuple[str, ...]) -> str:
    """The layer of an engine module, by its path parts below module_utils (no .py)."""
    if len(parts) == 1:
        return "base"
    if parts in FACTS or (parts[0] == "backends" and parts[-1] == "__init__"):
        return "backend facts"
    return parts[0]


def _type_checking_only(tree: ast.Module) -> set[ast.AST]:
    """Imports under `if TYPE_CHECKING:` (annotations only, never run)."""
    return {inner for node in ast.walk(tree)
            if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
            for stmt in node.body for inner in ast.walk(stmt)}


def engine_modules() -> dict[tuple[str, ...], Path]:
    return {path.relative_to(ENGINE).with_suffix("").parts: path for path in ENGINE.rglob("*.py")}


def imported(parts: tuple[str, ...], path: Path) -> list[tuple[str, tuple[str, ...] | None]]:
    """(statement, the engine module it names, or None for an outside module) per import."""
    package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
    modules = engine_modules()
    found = []
    tree = ast.parse(path.read_text())
    skip = _type_checking_only(tree)
    for node in ast.walk(tree):
        if node in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)]
            target = (*base, *(node.module.split(".") if node.module else ()))
            for alias in node.names:  # `from .. import netlink` names a module
                candidate = (*target, alias.name)
                hit = candidate if candidate in modules or (*candidate, "__init__") in modules else target
                found.append((ast.unparse(node), hit))
        elif isinstance(node, ast.ImportFrom):
            found.append((ast.unparse(node), None))
        elif isinstance(node, ast.Import):
            found.extend((ast.unparse(node), None) for _alias in node.names)
    return found


def test_imports_go_downwards_only():
    wrong = []
    for parts, path in engine_modules().items():
        mine = layer(parts)
        for statement, target in imported(parts, path):
            if target is None or not target:
                continue
            theirs = layer(target if target in engine_modules() else (*target, "__init__"))
            if theirs not in (mine, "base") and theirs not in ALLOWED[mine]:
                wrong.append(f"{'/'.join(parts)}.py ({mine}) imports {theirs}: {statement}")
    assert wrong == []


def test_no_ansible_and_third_party_only_through_deps():
    wrong = []
    for parts, path in engine_modules().items():
        for statement, target in imported(parts, path):
            if target is not None:
                continue
            top = statement.split()[1].split(".")[0]
            if top == "ansible" or top == "ansible_collections" or (top in THIRD_PARTY and parts != ("deps",)):
                wrong.append(f"{'/'.join(parts)}.py: {statement}")
    assert wrong == []


def test_the_checker_sees_a_wrong_import(tmp_path):
    """The layer test would fail on an upward import (so it can fail at all)."""
    parts = ("subnet", "config")
    sample = tmp_path / "config.py"
    sample.write_text("from typing import TYPE_CHECKING\nfrom ..agent.daemon import Agent\n"
                      "from ..etcd import registry\nif TYPE_CHECKING:\n    from ..ops import lease\n")
    targets = [target for _statement, target in imported(parts, sample) if target is not None]
    assert [layer(t if t in engine_modules() else (*t, "__init__")) for t in targets] == ["agent", "etcd"]
