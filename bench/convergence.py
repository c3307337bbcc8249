"""Convergence: how long a lease put in etcd takes to become a route on every host.

3 hosts run the agent (vxlan). A writer process inside the etcd namespace creates a fake
lease (PublicIP in the underlay subnet, vxlan BackendData, TTL lease) and stamps
time.time() right before the put; a watcher per host (``ip -4 monitor route``, lines
stamped on receipt) sees the route appear. The latency of a join is the time until the
route is present on every host; p50/p99 (nearest rank) over the joins, after one warm-up
join that is not counted. The fake leases are deleted afterwards (their removal latency is
reported as information).
"""

from __future__ import annotations

import contextlib
import json
import math
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab import Lab
from lab.overlay import PREFIX, Overlay
from lab.wait import wait_for

from .measure import NETWORK, Bench, leases_by_host, log, start_agents
from .throughput import VNI

WRITER = r"""
import json, sys, time
import etcd3
host, port = sys.argv[1], int(sys.argv[2])
client = etcd3.client(host=host, port=port, timeout=10)
client.status()
leases = {}
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    try:
        if req["op"] == "put":
            lease = client.lease(req["ttl"])
            leases[req["key"]] = lease
            key, value = req["key"], req["value"]
            t = time.time()
            ok, _ = client.transaction(compare=[client.transactions.version(key) == 0],
                                       success=[client.transactions.put(key, value, lease=lease)], failure=[])
            print(json.dumps({"ok": ok, "t": t}), flush=True)
        elif req["op"] == "del":
            t = time.time()
            client.delete(req["key"])
            lease = leases.pop(req["key"], None)
            if lease is not None:
                lease.revoke()
            print(json.dumps({"ok": True, "t": t}), flush=True)
        else:
            break
    except Exception as exc:
        print(json.dumps({"ok": False, "error": repr(exc)}), flush=True)
for lease in leases.values():
    try:
        lease.revoke()
    except Exception:
        pass
"""
EVENT_TIMEOUT = 10.0  # seconds a route may take to appear (or go) on every host


class LineReader:
    """Reads a process's stdout in a thread; every line stamped with time.time() on receipt."""

    def __init__(self, proc: subprocess.Popen[str], name: str) -> None:
        self.proc, self.name = proc, name
        self.lines: list[tuple[float, str]] = []
        self.queue: queue.Queue[tuple[float, str]] = queue.Queue()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, name=f"reader-{name}", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            item = (time.time(), line.rstrip("\n"))
            with self.lock:
                self.lines.append(item)
            self.queue.put(item)

    def count(self) -> int:
        with self.lock:
            return len(self.lines)

    def since(self, index: int) -> list[tuple[float, str]]:
        with self.lock:
            return self.lines[index:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # by PID (`ip netns exec` execs in place)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.thread.join(5)


class Writer(LineReader):
    """The etcd writer inside the etcd namespace: one JSON request a line, one answer."""

    def __init__(self, lab: Lab, log_path: Path) -> None:
        endpoint = lab.etcd_endpoints[0]
        found = re.match(r"https?://([^:/]+):(\d+)", endpoint)
        if not found:
            raise RuntimeError(f"cannot parse the etcd endpoint {endpoint}")
        self.log_path = log_path
        with open(log_path, "w") as errors:  # the child has its own copy
            proc = lab.popen("etcd1", [sys.executable, "-u", "-c", WRITER, *found.groups()], netns_only=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, text=True, bufsize=1)
        super().__init__(proc, "writer")
        if not self.reply().get("ready"):
            raise RuntimeError("the etcd writer did not start")

    def reply(self, timeout: float = 20.0) -> dict[str, Any]:
        try:
            _, line = self.queue.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"the etcd writer did not answer within {timeout}s (see {self.log_path})") from None
        return dict(json.loads(line))

    def send(self, req: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        answer = self.reply()
        if not answer.get("ok"):
            raise RuntimeError(f"etcd writer: {req['op']} {req['key']} failed: {answer}")
        return answer

    def quit(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        self.stop()


def first_route_event(lines: list[tuple[float, str]], subnet: str, deleted: bool) -> float | None:
    for t, line in lines:
        is_del = line.startswith("Deleted ")
        body = line[len("Deleted "):] if is_del else line
        if is_del == deleted and body.split(" ", 1)[0] == subnet:
            return t
    return None


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100): with 20 samples, p99 is the largest."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


class Convergence:
    """One convergence run on a 3-host lab: the watchers, the writer, the fake leases."""

    def __init__(self, b: Bench, lab: Lab, ov: Overlay) -> None:
        self.b, self.lab, self.ov = b, lab, ov
        self.hosts = lab.hosts
        self.watchers: dict[str, LineReader] = {}
        self.writer: Writer | None = None
        self.created: list[str] = []
        self.real: dict[str, dict[str, Any]] = {}

    def start_agents(self) -> None:
        """The agents, once every one has programmed every other host: it is watching."""
        self.ov.put_config(NETWORK)
        start_agents(self.ov, self.hosts)
        self.real = leases_by_host(self.ov, self.hosts)
        for h in self.hosts:
            for p in self.hosts:
                if p != h:
                    wait_for(self.has_route(h, self.real[p]["subnet"]), 20, what=f"route to {p} on {h}")

    def has_route(self, host: str, subnet: str) -> Callable[[], bool]:
        return lambda: subnet in self.ov.routes_to(host, subnet)

    def start_watchers(self) -> None:
        for h in self.hosts:
            proc = self.lab.popen(h, ["ip", "-4", "monitor", "route"], netns_only=True, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True, bufsize=1)
            self.watchers[h] = LineReader(proc, h)
        self.writer = Writer(self.lab, self.b.logs / "writer.log")
        time.sleep(0.5)  # the monitors are subscribed by now

    def route_events(self, marks: dict[str, int], subnet: str, deleted: bool) -> dict[str, float]:
        """host -> when its watcher saw *subnet* appear (or go), since *marks*."""
        seen: dict[str, float] = {}
        deadline = time.monotonic() + EVENT_TIMEOUT
        while len(seen) < len(self.hosts) and time.monotonic() < deadline:
            for h, w in self.watchers.items():
                if h not in seen:
                    t = first_route_event(w.since(marks[h]), subnet, deleted)
                    if t is not None:
                        seen[h] = t
            time.sleep(0.002)
        return seen

    def marks(self) -> dict[str, int]:
        return {h: w.count() for h, w in self.watchers.items()}

    def candidates(self, joins: int) -> list[str]:
        taken = {v["subnet"] for v in self.real.values()}
        return [f"10.5.{n}.0/24" for n in range(200, 255) if f"10.5.{n}.0/24" not in taken][:joins]

    def join(self, i: int, subnet: str) -> dict[str, Any]:
        """Put fake lease *i* for *subnet*; when its route is on every host."""
        assert self.writer is not None
        key = f"{PREFIX}/subnets/{subnet.replace('/', '-')}"
        mac = f"02:be:7c:00:{i // 256:02x}:{i % 256:02x}"
        base = self.lab.subnet.rsplit(".", 1)[0]  # underlay /24
        value = json.dumps({"PublicIP": f"{base}.{150 + i}", "PublicIPv6": None, "BackendType": "vxlan",
                            "BackendData": {"VNI": VNI, "VtepMAC": mac}})
        marks = self.marks()
        answer = self.writer.send({"op": "put", "key": key, "value": value, "ttl": 900})
        self.created.append(key)
        seen = self.route_events(marks, subnet, deleted=False)
        missing = [h for h in self.hosts if h not in seen]
        if missing:
            raise RuntimeError(f"convergence: route {subnet} did not appear on {missing} within 10s")
        per_host = {h: round((seen[h] - answer["t"]) * 1000, 1) for h in self.hosts}
        latency = max(per_host.values())
        log(f"  join {i}{' (warm-up)' if i == 0 else ''}: {subnet} on every host after {latency:.1f} ms "
            f"{per_host}")
        return {"subnet": subnet, "ms": latency, "per_host_ms": per_host, "warmup": i == 0}

    def remove(self, key: str) -> float | None:
        """Delete fake lease *key*; ms until its route is gone from every host (None: not)."""
        assert self.writer is not None
        subnet = key.rsplit("/", 1)[1].replace("-", "/")
        marks = self.marks()
        answer = self.writer.send({"op": "del", "key": key})
        self.created.remove(key)
        gone = self.route_events(marks, subnet, deleted=True)
        if len(gone) < len(self.hosts):
            self.b.note(f"convergence: route {subnet} still present on "
                        f"{[h for h in self.hosts if h not in gone]} 10 s after its lease was deleted")
            return None
        return round((max(gone.values()) - float(answer["t"])) * 1000, 1)

    def check_left(self) -> None:
        left = [k for k in self.ov.leases() if k.startswith("10.5.2") and int(k.split(".")[2]) >= 200]
        if left:
            self.b.note(f"convergence: fake leases left in etcd: {left}")

    def close(self) -> None:
        if self.writer is not None:
            for key in self.created:  # after a failure: remove what we made
                with contextlib.suppress(Exception):
                    self.lab.etcdctl("del", key, check=False)
            self.writer.quit()
        for w in self.watchers.values():
            w.stop()
        self.ov.stop_all()


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """p50/p99/max of the counted joins and p50/p99 of the removals, added to *result*."""
    counted = [j["ms"] for j in result["joins"] if not j["warmup"]]
    if counted:
        result.update(p50_ms=percentile(counted, 50), p99_ms=percentile(counted, 99), max_ms=max(counted),
                      n=len(counted))
    if result["removals_ms"]:
        result["removal_p50_ms"] = percentile(result["removals_ms"], 50)
        result["removal_p99_ms"] = percentile(result["removals_ms"], 99)
    return result


def bench_convergence(b: Bench) -> dict[str, Any]:
    result: dict[str, Any] = {"joins": [], "removals_ms": []}
    with b.lab(3, "conv") as lab:
        run = Convergence(b, lab, b.overlay(lab, {"Type": "vxlan"}, "conv"))
        try:
            run.start_agents()
            run.start_watchers()
            for i, subnet in enumerate(run.candidates(b.args.joins + 1)):  # the first one is a warm-up
                result["joins"].append(run.join(i, subnet))
                time.sleep(0.1)
            for key in list(run.created):  # remove the fake leases; the agents tear the routes down
                ms = run.remove(key)
                if ms is not None:
                    result["removals_ms"].append(ms)
            run.check_left()
        finally:
            run.close()
    return summary(result)
