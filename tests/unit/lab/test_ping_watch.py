"""Losses and the longest gap from ping's output (lab.ping_watch)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from lab.ping_watch import PingWatch, summarize


def ping_output(replies: list[int], sent: int) -> str:
    lines = [f"64 bytes from 10.5.2.1: icmp_seq={seq} ttl=63 time=0.3 ms" for seq in replies]
    lines += ["", "--- 10.5.2.1 ping statistics ---",
              f"{sent} packets transmitted, {len(replies)} received, {100 - 100 * len(replies) // sent}% packet loss"]
    return "\n".join(lines)


@pytest.mark.parametrize(("replies", "sent", "lost", "gap"), [
    (list(range(1, 101)), 100, 0, 0.0),
    ([*range(1, 41), *range(51, 101)], 100, 10, 1.0),  # seq 41..50 lost: 1 s
    ([*range(1, 11), *range(13, 21), *range(61, 101)], 100, 42, 4.0),  # the longest of two gaps
    (list(range(4, 91)), 100, 13, 1.0),  # lost at both ends: the last 10 are the longest stretch
    ([], 20, 20, 2.0),
])
def test_losses_and_the_longest_gap(replies, sent, lost, gap):
    loss = summarize(ping_output(replies, sent), 0.1, "m1", "10.5.2.1")
    assert (loss.sent, loss.lost) == (sent, lost)
    assert loss.longest_gap == pytest.approx(gap)
    assert str(loss).startswith(f"m1 -> 10.5.2.1: {lost} of {sent} lost")


class ThisHost:
    """The Runner of a PingWatch as this host: nsenter into our own namespaces (real ping)."""

    name = "here"
    leader_pid = os.getpid()

    def run(self, cmd: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cmd, capture_output=True, text=True, check=check)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ping") or not shutil.which("nsenter"),
                    reason="needs root, ping and nsenter")
def test_a_long_watch_keeps_pinging_past_a_pipe_s_worth_of_output():
    """Over 64 KiB of ping output (a pipe would fill, blocking ping): every request counted."""
    watch = PingWatch(ThisHost(), "127.0.0.1", interval=0.002).start()
    time.sleep(4)  # ~2,000 replies of ~60 bytes each
    loss = watch.stop()
    assert loss.sent > 1500 and loss.received == loss.sent, loss
