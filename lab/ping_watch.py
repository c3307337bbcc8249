"""A ping that runs while something happens (a backend switch, an agent killed), then says
how many replies were lost and the longest stretch without one.

The ping runs inside a lab machine (iputils ``ping -i 0.1``: one request every 100 ms, as
root may) and is stopped by its PID inside the machine (``kill -INT``, so it prints its
summary); every reply line carries its ``icmp_seq``, the gaps between them are the losses.
Its output goes to a file, not a pipe: a pipe nobody reads fills after ~1,100 lines (about
two minutes), and then ping blocks, sends nothing and the stretch is never measured.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Protocol

_SEQ = re.compile(r"icmp_seq=(\d+)")
# iputils: "10 packets transmitted, 9 received"; busybox: "10 packets transmitted, 9 packets received"
_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received")


def sent_and_received(output: str) -> tuple[int, int] | None:
    """The counts of ping's summary line (None: no summary, e.g. ping was killed)."""
    match = _SUMMARY.search(output)
    return (int(match.group(1)), int(match.group(2))) if match else None


class Runner(Protocol):
    """A lab machine: where the ping runs (``lab.machines.Machine``)."""

    name: str

    @property
    def leader_pid(self) -> int: ...

    def run(self, cmd: list[str], *, check: bool = ...) -> subprocess.CompletedProcess[str]: ...


@dataclass(frozen=True)
class PingLoss:
    source: str
    target: str
    sent: int
    received: int
    longest_gap: float  # seconds without a reply (interval x the longest run of missing seqs)

    @property
    def lost(self) -> int:
        return self.sent - self.received

    def __str__(self) -> str:
        return (f"{self.source} -> {self.target}: {self.lost} of {self.sent} lost, "
                f"longest gap {self.longest_gap:.1f} s")


def summarize(output: str, interval: float, source: str = "", target: str = "") -> PingLoss:
    """Losses from ping's output: replies by icmp_seq, requests from its summary line."""
    seqs = sorted({int(m) for m in _SEQ.findall(output)})
    counts = sent_and_received(output)
    sent = counts[0] if counts else (seqs[-1] if seqs else 0)
    # seqs start at 1; a missing first reply counts from 0, missing last ones up to sent
    edges = [0, *seqs, sent + 1]
    longest = max((b - a - 1 for a, b in zip(edges, edges[1:], strict=False)), default=0)
    return PingLoss(source, target, sent, len(seqs), longest * interval)


class PingWatch:
    def __init__(self, machine: Runner, target: str, interval: float = 0.1) -> None:
        self.machine, self.target, self.interval = machine, target, interval
        self._proc: subprocess.Popen[str] | None = None
        self._pid: str = ""

    def start(self) -> PingWatch:
        # sh prints its PID and execs ping: that PID is ping's, inside the machine
        argv = ["nsenter", f"--target={self.machine.leader_pid}", "--all", "--", "sh", "-c",
                f'echo "$$"; exec ping -n -i {self.interval:g} -W 1 {self.target}']
        self._out = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed by stop()
        self._proc = subprocess.Popen(argv, stdout=self._out, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 10
        while not self._first_line().endswith("\n") and self._proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        self._pid = self._first_line().strip()
        if not self._pid.isdigit():
            raise RuntimeError(f"ping on {self.machine.name} did not start: {self._output()}")
        return self

    def _first_line(self) -> str:
        self._out.seek(0)
        return self._out.readline()

    def _output(self) -> str:
        self._out.seek(0)
        return self._out.read()

    def stop(self) -> PingLoss:
        assert self._proc is not None
        self.machine.run(["kill", "-INT", self._pid], check=False)
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        output = self._output()
        self._out.close()
        return summarize(output, self.interval, self.machine.name, self.target)
