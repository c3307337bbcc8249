"""Read a lab host's data plane (pyroute2 dumps), and watch it for netlink changes."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pyroute2 import IPRoute

RTPROT = 70  # the protocol our routes carry (netlink.RTPROT_OVERLAYNET)


@dataclass
class Plane:
    link: Any | None  # the device's link message, None if absent
    routes: dict[str, tuple[str | None, str | None, bool]] = field(default_factory=dict)  # dst -> (via, dev, onlink)
    foreign_routes: set[str] = field(default_factory=set)
    neighbours: dict[str, str] = field(default_factory=dict)  # permanent, on the device
    fdb: set[tuple[str, str]] = field(default_factory=set)  # (mac, dst), on the device
    addresses: list[str] = field(default_factory=list)  # on the device

    def vxlan(self, name: str) -> Any:
        return self.link.get(("IFLA_LINKINFO", "IFLA_INFO_DATA")).get(name)


def plane(ns: str, device: str = "flannel.1") -> Plane:
    with IPRoute(netns=ns, flags=0) as ipr:
        names = {link["index"]: link.get("ifname") for link in ipr.get_links()}
        found = ipr.link_lookup(ifname=device)
        index = found[0] if found else None
        result = Plane(ipr.get_links(index)[0] if index else None)
        for r in ipr.route("dump", family=2):
            if r.get("table") != 254:
                continue
            dst = f"{r.get('dst') or '0.0.0.0'}/{r['dst_len']}"
            if r["proto"] == RTPROT:
                result.routes[dst] = (r.get("gateway"), names.get(r.get("oif")), bool(r["flags"] & 4))
            else:
                result.foreign_routes.add(dst)
        if index:
            result.neighbours = {n.get("dst"): n.get("lladdr") for n in ipr.neigh("dump", family=2)
                                 if n["ifindex"] == index and n["state"] & 0x80}
            result.fdb = {(f.get("lladdr"), f.get("dst")) for f in ipr.fdb("dump")
                          if f["ifindex"] == index and f.get("dst")}
            result.addresses = [f"{a.get('address')}/{a['prefixlen']}" for a in ipr.get_addr(family=2, index=index)]
        return result


def ip(ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
    """An operator's `ip`/`bridge` command in a lab namespace (to cause drift)."""
    tool = "bridge" if argv[0] == "fdb" else "ip"
    return subprocess.run([tool, "-n", ns, *argv], check=check, capture_output=True, text=True, timeout=30)


@contextmanager
def netlink_changes(ns: str, needles: tuple[str, ...] = ("flannel", f"proto {RTPROT}")):
    """Collect `ip monitor` lines mentioning our objects while the block runs."""
    with tempfile.NamedTemporaryFile("w+", prefix="oflb-mon-") as out:
        proc = subprocess.Popen(["ip", "-n", ns, "monitor", "all"], stdout=out, stderr=subprocess.STDOUT)
        lines: list[str] = []
        try:
            time.sleep(0.2)  # let it subscribe
            yield lines
            time.sleep(0.3)  # let late events arrive
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=5)
        out.seek(0)
        lines.extend(line.rstrip() for line in out if any(n in line for n in needles))
