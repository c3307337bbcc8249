"""What the next agent accepts from the fd store or a keeper: socket checks, and a non-TUN
descriptor turned away (the TUN cases need a device: tests/integration/backends/test_udp.py)."""

from __future__ import annotations

import logging
import os
import socket

from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.udp import handover


def udp(host: str = "127.0.0.1", family: int = socket.AF_INET, kind: int = socket.SOCK_DGRAM) -> socket.socket:
    sock = socket.socket(family, kind)
    sock.bind((host, 0))
    return sock


def test_the_bound_udp_socket_passes_and_every_other_socket_says_why():
    with udp() as good, udp() as other, udp("::1", socket.AF_INET6) as v6, \
            udp(kind=socket.SOCK_STREAM) as tcp:
        address = good.getsockname()
        assert handover.socket_problem(good.fileno(), address) is None
        assert "not 127.0.0.1:" in str(handover.socket_problem(other.fileno(), address))
        assert "AF_INET6" in str(handover.socket_problem(v6.fileno(), address))
        assert "SOCK_STREAM" in str(handover.socket_problem(tcp.fileno(), address))
        assert good.fileno() >= 0  # the check used a duplicate, ours stays open


def test_a_pipe_is_neither_a_tun_queue_nor_a_socket():
    r, w = os.pipe()
    try:
        assert "not an attached TUN queue" in str(handover.tun_problem(r, "flannel0", True))
        assert "not a socket" in str(handover.socket_problem(w, ("127.0.0.1", 8285)))
    finally:
        os.close(r)
        os.close(w)


def test_rejected_descriptors_are_closed_with_a_log_line(caplog):
    r, w = os.pipe()
    sock = udp()
    fd = sock.detach()
    with caplog.at_level(logging.WARNING):
        assert not handover.accept(r, fd, name="flannel0", vnet_hdr=True, address=("127.0.0.1", 8285),
                                   source="systemd's fd store")
    assert "ignoring the descriptors from systemd's fd store" in caplog.text
    assert "TUN fd: not an attached TUN queue" in caplog.text and "socket fd: bound to 127.0.0.1:" in caplog.text
    for closed in (r, fd):
        assert not os.path.exists(f"/proc/self/fd/{closed}")
    os.close(w)
