"""The Debian releases of the machine lab: one rootfs cache per release, the machines' release
list, and the roles' platforms, which must be exactly the releases molecule boots."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lab import rootfs
from lab.machine_lab import parse_releases
from lab.state import LabError

REPO = Path(__file__).resolve().parents[3]
ROLES = ("docker_bridge", "flannel", "os_packages")


def test_each_release_has_its_own_cache() -> None:
    keys = {name: rootfs.cache_key(release=name) for name in rootfs.RELEASES}
    assert len(set(keys.values())) == len(rootfs.RELEASES)
    assert rootfs.cache_key() == keys[rootfs.DEFAULT_RELEASE]
    assert rootfs.rootfs_path(Path("/c"), release="trixie") == Path(f"/c/rootfs-{keys['trixie']}")


def test_a_release_s_python_and_packages_shape_its_key() -> None:
    trixie = rootfs.RELEASES["trixie"]
    assert trixie.python == ("3.13", "cp313") and "docker-cli" in trixie.packages
    assert rootfs.cache_key(release="trixie") != rootfs.cache_key(
        packages=(*rootfs.APT_PACKAGES, "tcpdump"), release="trixie")


def test_an_unknown_release_names_the_known_ones() -> None:
    with pytest.raises(rootfs.RootfsError, match="'sid'.*known: bookworm, trixie"):
        rootfs.cache_key(release="sid")
    with pytest.raises(LabError, match="'buster'.*known: bookworm, trixie"):
        parse_releases("bookworm,buster")
    with pytest.raises(LabError, match="no Debian release"):
        parse_releases(" , ")


def test_machines_take_the_releases_in_turn() -> None:
    assert parse_releases("trixie") == ["trixie"]
    assert parse_releases(" bookworm, trixie ") == ["bookworm", "trixie"]
    assert parse_releases(("trixie", "bookworm")) == ["trixie", "bookworm"]


def test_prune_keeps_every_release_s_cache(tmp_path: Path) -> None:
    current = [rootfs.rootfs_path(tmp_path, release=name) for name in rootfs.RELEASES]
    old = tmp_path / "rootfs-0000000000000000"
    for path in (*current, old):
        path.mkdir()
    assert rootfs.prune(tmp_path, log=lambda _m: None) == [old]
    assert all(path.is_dir() for path in current)


def test_the_roles_platforms_are_the_releases_molecule_boots() -> None:
    scenario = yaml.safe_load((REPO / "extensions/molecule/default/molecule.yml").read_text())
    booted = {platform["release"] for platform in scenario["platforms"]}
    assert booted == set(rootfs.RELEASES)
    for role in ROLES:
        meta = yaml.safe_load((REPO / "roles" / role / "meta/main.yml").read_text())
        platforms = meta["galaxy_info"]["platforms"]
        assert platforms == [{"name": "Debian", "versions": sorted(booted)}], role
