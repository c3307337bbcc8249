"""The keeper outside systemd: a private filesystem socket, descriptors only between root
processes, only after the agent went away."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.udp import keeper as k

NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3"  # stdlib only, and executable by nobody (the venv's may not be)
needs_root = pytest.mark.skipif(os.geteuid() != 0 or not os.access(SYSTEM_PYTHON, os.X_OK),
                                reason="SO_PEERCRED checks need root, a non-root process and /usr/bin/python3")


@pytest.fixture
def descriptors():
    """A pipe (stands in for the TUN queue: the keeper never looks inside) and a UDP socket."""
    r, w = os.pipe()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    yield r, udp
    for fd in (r, w):
        os.close(fd)
    udp.close()


@pytest.fixture
def reachable_dir() -> Iterator[Path]:
    """A directory a non-root process can reach (pytest's tmp_path sits under a 0700 one)."""
    path = Path(tempfile.mkdtemp(prefix="oflu-keeper-", dir="/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def wait_gone(path: str, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_private_socket_refused_while_the_agent_lives_then_handed_over(tmp_path: Path, descriptors):
    r, udp = descriptors
    directory = str(tmp_path / "keeper")
    port = udp.getsockname()[1]
    keeper = k.Keeper(directory)
    keeper.start(r, udp.fileno(), "flannel0", port, {"vnet_hdr": True})
    path = k.socket_path("flannel0", port, directory)
    try:
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
        assert stat.S_ISSOCK(os.stat(path).st_mode) and stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert str(os.stat("/proc/self/ns/net").st_ino) in os.path.basename(path)
        assert k.take_over("flannel0", port, directory=directory) is None  # the agent still lives
        keeper.release()  # the agent goes: the keeper now hands over
        got = k.take_over("flannel0", port, directory=directory)
        assert got is not None
        tun_fd, sock_fd, meta = got
        assert meta == {"vnet_hdr": True}
        assert os.fstat(tun_fd).st_ino == os.fstat(r).st_ino
        assert os.fstat(sock_fd).st_ino == os.fstat(udp.fileno()).st_ino
        os.close(tun_fd)
        os.close(sock_fd)
        assert wait_gone(path), "the keeper left its socket behind"
    finally:
        keeper.stop()


def test_a_stale_socket_file_from_a_crashed_keeper_is_replaced(tmp_path: Path, descriptors):
    r, udp = descriptors
    directory = tmp_path / "keeper"
    directory.mkdir(mode=0o755)  # made too open by hand: the keeper tightens it
    port = udp.getsockname()[1]
    path = k.socket_path("flannel0", port, str(directory))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(path)  # closed without unlink, as after kill -9
    keeper = k.Keeper(str(directory))
    try:
        keeper.start(r, udp.fileno(), "flannel0", port, {})
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
        keeper.release()
        got = k.take_over("flannel0", port, directory=str(directory))
        assert got is not None
        os.close(got[0])
        os.close(got[1])
    finally:
        keeper.stop()


def test_a_symlinked_directory_is_never_used(tmp_path: Path, descriptors):
    r, udp = descriptors
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    (tmp_path / "keeper").symlink_to(tmp_path / "elsewhere")
    keeper = k.Keeper(str(tmp_path / "keeper"))
    keeper.start(r, udp.fileno(), "flannel0", 8285, {})
    assert keeper._proc is None and os.listdir(tmp_path / "elsewhere") == []


TAKER = """
import array, socket, sys
conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
conn.settimeout(3)
conn.connect(sys.argv[1])
fds = array.array("i")
try:
    msg, anc, _f, _a = conn.recvmsg(4096, socket.CMSG_SPACE(8))
except OSError:
    anc = []
print(sum(len(data) // 4 for _l, _k, data in anc))
"""


@needs_root
def test_the_keeper_hands_nothing_to_a_non_root_process(reachable_dir: Path, descriptors):
    r, udp = descriptors
    directory = str(reachable_dir / "keeper")
    port = udp.getsockname()[1]
    keeper = k.Keeper(directory)
    try:
        keeper.start(r, udp.fileno(), "flannel0", port, {})
        path = k.socket_path("flannel0", port, directory)
        # Rights loosened by mistake: the peer check still holds.
        os.chmod(directory, 0o755)
        os.chmod(path, 0o666)
        keeper.release()
        out = subprocess.run([SYSTEM_PYTHON, "-c", TAKER, path], user=NOBODY, capture_output=True, text=True,
                             timeout=10, check=True)
        assert out.stdout.strip() == "0"
        got = k.take_over("flannel0", port, directory=directory)  # root still gets them
        assert got is not None
        os.close(got[0])
        os.close(got[1])
    finally:
        keeper.stop()


FAKE_KEEPER = """
import array, os, socket, sys
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(sys.argv[1]); listener.listen(1)
print("listening", flush=True)
conn, _ = listener.accept()
r, w = os.pipe()
conn.sendmsg([b"{}"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [r, w]))])
conn.close()
"""


@needs_root
def test_the_agent_takes_nothing_from_a_non_root_keeper(reachable_dir: Path):
    directory = reachable_dir / "keeper"
    directory.mkdir()
    os.chmod(directory, 0o777)  # lets nobody bind there: only the peer check is left
    path = k.socket_path("flannel0", 8285, str(directory))
    fake = subprocess.Popen([SYSTEM_PYTHON, "-c", FAKE_KEEPER, path], user=NOBODY, stdout=subprocess.PIPE, text=True)
    try:
        assert fake.stdout is not None and fake.stdout.readline().strip() == "listening"
        before = set(os.listdir("/proc/self/fd"))
        assert k.take_over("flannel0", 8285, directory=str(directory)) is None
        assert set(os.listdir("/proc/self/fd")) <= before  # nothing it sent stayed open here
    finally:
        fake.kill()
        fake.wait(5)
