"""subnet_env: /run/flannel/subnet.env as flannel writes it (atomically, 0644) and a tolerant reader."""

from __future__ import annotations

import os
import stat

import netaddr
import pytest

from ansible_collections.overlaynet.flannel.plugins.module_utils.files import write_file_atomic
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.env import (
    SubnetEnv,
    parse_env_text,
    read_subnet_env,
    write_subnet_env,
)

N = netaddr.IPNetwork

FLANNEL_TEXT = "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.72.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"


def _env(**kwargs) -> SubnetEnv:
    args = {"network": N("10.5.0.0/16"), "lease_subnet": N("10.5.72.0/24"), "mtu": 1450, "ip_masq": False}
    args.update(kwargs)
    return SubnetEnv.for_lease(**args)


# --------------------------------------------------------------------------- render


def test_render_is_flannels_text():
    assert _env().render() == FLANNEL_TEXT


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"ip_masq": True, "mtu": 1472},
         "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.72.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n"),
        ({"network": N("10.1.0.0/16"), "lease_subnet": N("10.1.74.0/24"), "mtu": 1472},
         "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n"),
        ({"network": N("10.4.0.0/28"), "lease_subnet": N("10.4.0.12/30"), "mtu": 1500},
         "FLANNEL_NETWORK=10.4.0.0/28\nFLANNEL_SUBNET=10.4.0.13/30\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=false\n"),
        ({"ipv6_network": N("fc00::/48"), "ipv6_lease_subnet": N("fc00:0:0:5::/64")},
         "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.72.1/24\n"
         "FLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00:0:0:5::1/64\n"
         "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"),
    ],
)
def test_render_variants(kwargs, text):
    assert _env(**kwargs).render() == text


def test_subnet_is_first_host_and_lease_subnet_is_the_network():
    env = _env()
    assert str(env.subnet) == "10.5.72.1/24"
    assert str(env.lease_subnet) == "10.5.72.0/24"
    env6 = _env(ipv6_network=N("fc00::/48"), ipv6_lease_subnet=N("fc00:0:0:5::/64"))
    assert str(env6.ipv6_subnet) == "fc00:0:0:5::1/64"


# --------------------------------------------------------------------------- write


def _listing(directory) -> list[str]:
    return sorted(os.listdir(directory))


def test_write_creates_directory_file_0644_and_nothing_else(tmp_path):
    path = tmp_path / "run" / "flannel" / "subnet.env"
    assert write_subnet_env(str(path), _env()) is True
    assert path.read_text() == FLANNEL_TEXT
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert _listing(path.parent) == ["subnet.env"]


def test_write_is_0644_whatever_the_umask(tmp_path):
    path = tmp_path / "subnet.env"
    old = os.umask(0o077)
    try:
        assert write_subnet_env(str(path), _env()) is True
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_unchanged_returns_false_and_does_not_touch_the_file(tmp_path):
    path = tmp_path / "subnet.env"
    assert write_subnet_env(str(path), _env()) is True
    before = path.stat()
    assert write_subnet_env(str(path), _env()) is False
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert _listing(tmp_path) == ["subnet.env"]


def test_change_replaces_through_a_rename(tmp_path):
    path = tmp_path / "subnet.env"
    write_subnet_env(str(path), _env())
    inode = path.stat().st_ino
    assert write_subnet_env(str(path), _env(mtu=1400)) is True
    assert "FLANNEL_MTU=1400\n" in path.read_text()
    assert path.stat().st_ino != inode  # a new file renamed over the old one, not rewritten in place
    assert _listing(tmp_path) == ["subnet.env"]


@pytest.mark.parametrize("same_content", [True, False])
def test_replaces_a_read_only_mode_file(tmp_path, same_content):
    path = tmp_path / "subnet.env"
    path.write_text(FLANNEL_TEXT if same_content else "FLANNEL_SUBNET=10.9.9.1/24\n")
    path.chmod(0o444)
    assert write_subnet_env(str(path), _env()) is True
    assert path.read_text() == FLANNEL_TEXT
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert _listing(tmp_path) == ["subnet.env"]


def test_wrong_mode_alone_is_a_change(tmp_path):
    path = tmp_path / "subnet.env"
    path.write_text(FLANNEL_TEXT)
    path.chmod(0o600)
    assert write_subnet_env(str(path), _env()) is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_write_file_atomic_custom_mode(tmp_path):
    path = tmp_path / "docker_opts.env"
    assert write_file_atomic(str(path), "X=1\n", mode=0o600) is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert write_file_atomic(str(path), "X=1\n", mode=0o600) is False


def test_failed_write_leaves_no_temp_file(tmp_path):
    target = tmp_path / "subnet.env"
    target.mkdir()  # a directory cannot be replaced by a file
    with pytest.raises(OSError):
        write_file_atomic(str(target), FLANNEL_TEXT)
    assert _listing(tmp_path) == ["subnet.env"]
    assert target.is_dir() and _listing(target) == []


# --------------------------------------------------------------------------- read


def test_read_back_what_was_written(tmp_path):
    path = tmp_path / "subnet.env"
    env = _env(ip_masq=True, ipv6_network=N("fc00::/48"), ipv6_lease_subnet=N("fc00:0:0:5::/64"))
    write_subnet_env(str(path), env)
    got = read_subnet_env(str(path))
    assert got is not None
    assert (str(got.network), str(got.subnet), got.mtu, got.ip_masq) == ("10.5.0.0/16", "10.5.72.1/24", 1450, True)
    assert (str(got.ipv6_network), str(got.ipv6_subnet)) == ("fc00::/48", "fc00:0:0:5::1/64")
    assert str(got.lease_subnet) == "10.5.72.0/24"
    assert got.render() == env.render()


def test_read_flannels_own_file(tmp_path):
    path = tmp_path / "subnet.env"
    path.write_text(FLANNEL_TEXT)
    got = read_subnet_env(str(path))
    assert got is not None and got.render() == FLANNEL_TEXT
    assert got.ipv6_network is None and got.ipv6_subnet is None


def test_read_is_tolerant(tmp_path):
    path = tmp_path / "subnet.env"
    path.write_text(
        "# written by hand\n"
        "\n"
        "   \n"
        "export FLANNEL_NETWORK=10.5.0.0/16\n"
        'FLANNEL_SUBNET="10.5.72.1/24"\n'
        "  FLANNEL_MTU='1450'  \n"
        "FLANNEL_IPMASQ=TRUE\n"
        "SOMETHING_ELSE=whatever\n"
        "not a key value line\n"
    )
    got = read_subnet_env(str(path))
    assert got is not None
    assert (str(got.network), str(got.subnet), got.mtu, got.ip_masq) == ("10.5.0.0/16", "10.5.72.1/24", 1450, True)


def test_read_crlf_file(tmp_path):
    path = tmp_path / "subnet.env"
    path.write_bytes(FLANNEL_TEXT.replace("\n", "\r\n").encode())
    got = read_subnet_env(str(path))
    assert got is not None and got.render() == FLANNEL_TEXT


@pytest.mark.parametrize(
    "content",
    [
        "",
        "garbage\n",
        "FLANNEL_NETWORK=10.5.0.0/16\n",  # no subnet
        "FLANNEL_SUBNET=10.5.72.1/24\n",  # no network
        "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=banana\n",
        "FLANNEL_NETWORK=banana\nFLANNEL_SUBNET=10.5.72.1/24\n",
        "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.72.1/24\nFLANNEL_MTU=big\n",
        "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.72.1/24\nFLANNEL_IPV6_NETWORK=nope\n",
        b"\xff\xfe\x00garbage",
    ],
)
def test_unusable_file_reads_as_none(tmp_path, content):
    path = tmp_path / "subnet.env"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    assert read_subnet_env(str(path)) is None


def test_missing_file_or_directory_reads_as_none(tmp_path):
    assert read_subnet_env(str(tmp_path / "absent.env")) is None
    assert read_subnet_env(str(tmp_path)) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A=1\nB=2\n", {"A": "1", "B": "2"}),
        ("# c\n\nA=1", {"A": "1"}),
        ("export A=1", {"A": "1"}),
        ('A="x y"', {"A": "x y"}),
        ("A='x'", {"A": "x"}),
        ('A="', {"A": '"'}),
        ("A=a=b", {"A": "a=b"}),
        ("A=", {"A": ""}),
        ("A=1\nA=2", {"A": "2"}),
        ("no equals sign", {}),
    ],
)
def test_parse_env_text(text, expected):
    assert parse_env_text(text) == expected
