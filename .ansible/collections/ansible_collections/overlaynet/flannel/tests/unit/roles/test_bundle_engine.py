"""The role's engine bundle, built on the controller: reproducible, cached only in a private
directory, and never reused unchecked (the tar is unpacked as root on every host)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import stat
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "roles" / "flannel" / "files" / "bundle_engine.py"
ENGINE, LAUNCHER = REPO / "plugins" / "module_utils", REPO / "bin" / "flannel-agent"


def load():
    spec = importlib.util.spec_from_file_location("bundle_engine", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bundle = load()


def run(cache: Path | str, capsys) -> dict:
    assert bundle.main([str(ENGINE), str(LAUNCHER), "9.9.9", str(cache)]) == 0
    return json.loads(capsys.readouterr().out)


def test_same_inputs_give_the_same_bytes():
    assert bundle.build(ENGINE, LAUNCHER, "9.9.9") == bundle.build(ENGINE, LAUNCHER, "9.9.9")


def test_the_default_cache_is_private_and_not_in_tmp_even_without_home(monkeypatch):
    monkeypatch.setenv("HOME", "")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    path = bundle.default_cache_dir()
    assert not str(path).startswith("/tmp") and path.is_absolute() and path.name == "overlaynet-flannel"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # not absolute: ignored, as XDG says
    assert bundle.default_cache_dir() == path


def test_a_new_cache_dir_is_created_0700(tmp_path, capsys):
    out = run(tmp_path / "cache", capsys)
    assert stat.S_IMODE((tmp_path / "cache").stat().st_mode) == 0o700
    assert stat.S_IMODE(Path(out["path"]).stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o1777])
def test_a_cache_others_can_write_to_is_refused(tmp_path, mode):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    with pytest.raises(SystemExit, match="is not private"):
        bundle.main([str(ENGINE), str(LAUNCHER), "9.9.9", str(shared)])


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the directory away")
def test_a_cache_owned_by_another_user_is_refused(tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, 65534, 65534)
    with pytest.raises(SystemExit, match="owner uid 65534"):
        bundle.main([str(ENGINE), str(LAUNCHER), "9.9.9", str(theirs)])


def test_a_tampered_cached_bundle_is_rebuilt_not_reused(tmp_path, capsys):
    first = run(tmp_path / "cache", capsys)
    path = Path(first["path"])
    good = path.read_bytes()
    path.write_bytes(good[:-512] + b"\0" * 511 + b"X")  # same name, other bytes
    second = run(tmp_path / "cache", capsys)
    assert second == first and path.read_bytes() == good
    assert hashlib.sha256(path.read_bytes()).hexdigest() == first["sha256"]
