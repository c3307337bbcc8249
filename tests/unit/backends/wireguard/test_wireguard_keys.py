"""This host's key pair: made once with wireguard-tools, kept 0600 in a 0700 directory,
reused after a restart, and never shown."""

from __future__ import annotations

import base64
import os
import stat

import pytest

from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.wireguard.key_text import (
    from_hex,
    key_bytes,
    to_hex,
)
from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.wireguard.keys import (
    DEFAULT_KEY_FILE,
    key_file_path,
    load_or_create,
)
from ansible_collections.overlaynet.flannel.plugins.module_utils.errors import HostNetworkError


def test_a_key_is_made_once_and_reused(tmp_path):
    path = str(tmp_path / "flannel" / "wgkey")
    first, new = load_or_create(path)
    assert new and key_bytes(first.public) is not None and key_bytes(first.private) is not None
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    again, new_again = load_or_create(path)
    assert not new_again and again == first  # a restarted agent: same keys, peers need no update
    with open(path) as handle:
        assert handle.read().strip() == first.private


def test_the_private_key_is_not_in_repr(tmp_path):
    pair, _new = load_or_create(str(tmp_path / "wgkey"))
    assert pair.private not in repr(pair) and pair.public in repr(pair)


def test_a_key_file_written_by_hand_loosely_is_made_private(tmp_path):
    path = tmp_path / "wgkey"
    made, _new = load_or_create(str(path))
    os.chmod(path, 0o644)
    again, new = load_or_create(str(path))
    assert not new and again == made and stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_a_key_file_without_a_key_is_a_clear_error_and_kept(tmp_path):
    path = tmp_path / "wgkey"
    path.write_text("not a key\n")
    with pytest.raises(HostNetworkError) as info:
        load_or_create(str(path))
    assert str(path) in str(info.value) and "remove it" in str(info.value)
    assert path.read_text() == "not a key\n"


def test_the_key_file_is_upstreams_unless_the_environment_names_another(monkeypatch):
    monkeypatch.delenv("WIREGUARD_KEY_FILE", raising=False)
    assert key_file_path() == DEFAULT_KEY_FILE == "/run/flannel/wgkey"
    monkeypatch.setenv("WIREGUARD_KEY_FILE", "/var/lib/flannel/key")
    assert key_file_path() == "/var/lib/flannel/key"


def test_without_wg_the_error_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(HostNetworkError) as info:
        load_or_create(str(tmp_path / "wgkey"))
    assert "install wireguard-tools" in str(info.value)
    assert not (tmp_path / "wgkey").exists()


def test_a_hand_written_unclamped_key_is_used_as_the_device_reports_it(tmp_path):
    path = tmp_path / "wgkey"
    path.write_text(base64.b64encode(bytes([255]) * 32).decode() + "\n")
    pair, new = load_or_create(str(path))
    raw = base64.b64decode(pair.private)
    assert not new and raw[0] == 248 and raw[31] == 127 and raw[1:31] == bytes([255]) * 30


def test_key_text_forms():
    pair = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
    assert from_hex(to_hex(pair)) == pair and len(to_hex(pair)) == 64
    for bad in ("", "abc", pair[:-1], pair.replace("=", "!"), 5, None):
        assert key_bytes(bad) is None
