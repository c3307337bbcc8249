"""Throughput groups, each on a fresh 2-host lab: vxlan next to a hand-made kernel VXLAN,
host-gw next to the underlay, and the udp backend's modes."""

from __future__ import annotations

import re
from typing import Any

from lab import Lab
from lab.engine import link_collection
from lab.overlay import Overlay
from lab.wait import wait_for

link_collection()

from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.udp.backend import (  # noqa: E402
    speaks_fast_path,
)

from .measure import (  # noqa: E402
    Bench,
    Series,
    agent_has_flag,
    c1_to_c2,
    iperf,
    leases_by_host,
    measured,
    start_agents,
    two_host_overlay,
    wait_ping,
)

HAND_DEV = "vxhand.1"  # the hand-made kernel VXLAN (agents stopped, flannel.1 deleted)
VXLAN_PORT = 8472
VNI = 1
PLAIN = "--udp-fast-path=false"
# mode -> extra agent flags of h1 (the sender) and of h2
UDP_MODES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "fast": ((), ()), "mixed": ((), (PLAIN,)), "plain": ((PLAIN,), (PLAIN,)),
}


# ---------------------------------------------------------------------------- vxlan


def link_details(lab: Lab, host: str, dev: str) -> str:
    return str(lab.run(host, ["ip", "-d", "link", "show", "dev", dev], netns_only=True, capture_output=True,
                       text=True, check=False).stdout.strip())


def device_tokens(details: str) -> list[str]:
    """`ip -d link show` of a device as tokens, without its index and name."""
    tokens = details.split()
    return tokens[2:] if len(tokens) > 2 else tokens


def build_hand_vxlan(lab: Lab, host: str, me: dict[str, Any], peers: list[dict[str, Any]], mtu: int) -> None:
    """A kernel VXLAN by hand, with flannel's structure, inside *host*'s namespace."""
    def run(*argv: str) -> None:
        lab.run(host, list(argv), netns_only=True, capture_output=True, text=True)

    run("ip", "link", "add", HAND_DEV, "address", me["mac"], "mtu", str(mtu), "type", "vxlan", "id", str(VNI),
        "local", me["public_ip"], "dev", "eth0", "dstport", str(VXLAN_PORT), "nolearning")
    run("ip", "addr", "add", f"{me['gateway']}/32", "dev", HAND_DEV)
    run("ip", "link", "set", HAND_DEV, "up")
    for p in peers:
        run("ip", "neigh", "replace", p["gateway"], "lladdr", p["mac"], "dev", HAND_DEV, "nud", "permanent")
        run("bridge", "fdb", "append", p["mac"], "dev", HAND_DEV, "dst", p["public_ip"], "self", "permanent")
        run("ip", "route", "replace", p["subnet"], "via", p["gateway"], "dev", HAND_DEV, "onlink")


def delete_link(lab: Lab, host: str, dev: str) -> bool:
    return bool(lab.run(host, ["ip", "link", "del", "dev", dev], netns_only=True, check=False,
                        capture_output=True).returncode == 0)


class VxlanRounds:
    """The vxlan group's three states and the moves between them: agents running
    (flannel.1), agents stopped by SIGTERM (flannel.1 left), hand-made VXLAN (flannel.1
    deleted)."""

    def __init__(self, b: Bench, lab: Lab, ov: Overlay) -> None:
        self.b, self.lab, self.ov = b, lab, ov
        self.hosts = lab.hosts
        self.state = "none"
        self.info: dict[str, Any] = {}
        self.first = {"stopped": True, "hand": True}
        self.leases: dict[str, dict[str, Any]] = {}
        self.agent_dev = ""

    def start(self) -> None:
        """Record what the running agents made (see two_host_overlay)."""
        self.state = "agents"
        self.leases = leases_by_host(self.ov, self.hosts)
        self.info["leases"] = {h: v["value"] for h, v in self.leases.items()}
        self.info["mtu"] = int(self.lab.container("c1")["mtu"])
        self.agent_dev = link_details(self.lab, "h1", "flannel.1")
        self.info["agent_device_h1"] = self.agent_dev

    def move(self, want: str) -> None:
        if want != self.state:
            {"agents": self.to_agents, "stopped": self.to_stopped, "hand": self.to_hand}[want]()
            self.state = want

    def to_agents(self) -> None:
        for h in self.hosts:
            delete_link(self.lab, h, HAND_DEV)
        start_agents(self.ov, self.hosts)
        wait_for(lambda: all(link_details(self.lab, h, "flannel.1") for h in self.hosts), 20, what="flannel.1 back")
        wait_ping(self.ov, "c1", "c2")

    def to_stopped(self) -> None:
        self.ov.stop_all()  # SIGTERM by PID: the data plane stays
        survived = self.ov.ping("c1", self.ov.containers["c2"], count=3, wait=1)
        if self.first["stopped"]:
            self.info["data_plane_survived_sigterm"] = survived
        self.first["stopped"] = False
        if not survived:
            self.b.note("vxlan: c1 could not ping c2 after the agents were stopped with SIGTERM")
            wait_ping(self.ov, "c1", "c2")

    def to_hand(self) -> None:
        self.ov.stop_all()
        for h in self.hosts:
            if link_details(self.lab, h, "flannel.1") and not delete_link(self.lab, h, "flannel.1"):
                raise RuntimeError(f"could not delete flannel.1 on {h}")
        for h in self.hosts:
            peers = [self.leases[p] for p in self.hosts if p != h]
            build_hand_vxlan(self.lab, h, self.leases[h], peers, self.info["mtu"])
        wait_ping(self.ov, "c1", "c2")
        if self.first["hand"]:
            self.first["hand"] = False
            self.compare_devices(link_details(self.lab, "h1", HAND_DEV))

    def compare_devices(self, hand_dev: str) -> None:
        self.info["hand_device_h1"] = hand_dev
        a, m = device_tokens(self.agent_dev), device_tokens(hand_dev)
        self.info["devices_identical"] = a == m
        if a != m:
            only_a = [t for t in a if t not in m]
            only_m = [t for t in m if t not in a]
            self.b.note(f"vxlan: `ip -d link` of flannel.1 (agent) and of the hand-made device differ: "
                        f"agent only {only_a}, hand-made only {only_m}")

    def finish(self) -> None:
        self.ov.stop_all()
        if self.state == "hand":
            for h in self.hosts:
                delete_link(self.lab, h, HAND_DEV)


def bench_vxlan(b: Bench) -> dict[str, Any]:
    """Rounds of: agents running (flannel.1) -> agents stopped by SIGTERM (flannel.1 left)
    -> hand-made VXLAN (flannel.1 deleted); the hand-made device is removed and the agents
    started again for the next round."""
    args = b.args
    series = {"agents": Series("vxlan"), "stopped": Series("vxlan, stopped"), "hand": Series("hand-made vxlan")}
    with two_host_overlay(b, "vxlan") as (lab, ov):
        rounds = VxlanRounds(b, lab, ov)
        try:
            rounds.start()
            steps = ("agents", "stopped", "hand")
            order = [s for s in steps for _ in range(args.runs)] if args.sequential \
                else [s for _ in range(args.runs) for s in steps]
            for want in order:
                rounds.move(want)
                series[want].add(c1_to_c2(lab, ov, args.seconds))
        finally:
            rounds.finish()
    return {"vxlan": series["agents"].to_json(), "vxlan_stopped": series["stopped"].to_json(),
            "vxlan_hand": series["hand"].to_json(), "vxlan_info": rounds.info}


# ---------------------------------------------------------------------------- host-gw


def set_hand_routes(lab: Lab, leases: dict[str, dict[str, Any]]) -> None:
    """host-gw's data plane by hand, agents stopped: on each host the agent's route to each
    peer deleted and the same route made with `ip` (peer subnet via the peer's PublicIP on
    eth0, the kernel's default protocol): the same container path with no agent anywhere."""
    drop_hand_routes(lab, leases)  # the agents' routes: same destinations
    for host in leases:
        for peer, lease in leases.items():
            if peer != host:
                lab.run(host, ["ip", "route", "add", lease["subnet"], "via", lease["public_ip"], "dev", "eth0"],
                        netns_only=True, capture_output=True, text=True)


def drop_hand_routes(lab: Lab, leases: dict[str, dict[str, Any]]) -> None:
    """Every host's route to each peer's subnet gone (whoever made it)."""
    for host in leases:
        for peer, lease in leases.items():
            if peer != host:
                lab.run(host, ["ip", "route", "del", lease["subnet"]], netns_only=True, check=False,
                        capture_output=True)


def bench_hostgw(b: Bench) -> dict[str, Any]:
    """Rounds of: host-gw (agents running), the underlay (host to host, info), host-gw routes
    set by hand (agents stopped, their routes replaced with `ip route`; the reference); then,
    with the agents stopped by SIGTERM (routes left in place), for information: the path with
    a container on one side only (host -> container, container -> host), which shows what
    each veth + bridge + forwarding hop costs against the underlay."""
    args = b.args
    under, hostgw, hand = Series("underlay"), Series("host-gw"), Series("host-gw routes by hand")
    to_ctr, from_ctr = Series("host -> container"), Series("container -> host")
    info: dict[str, Any] = {}
    with two_host_overlay(b, "host-gw") as (lab, ov):
        info["mtu_container"] = int(lab.container("c1")["mtu"])
        mtu = re.search(r"mtu (\d+)", link_details(lab, "h1", "eth0"))
        info["mtu_underlay"] = int(mtu.group(1)) if mtu else None
        leases = leases_by_host(ov, lab.hosts)
        peer_subnet = leases["h2"]["subnet"]
        info["route_h1"] = ov.ip("h1", "-4", "route", "show", peer_subnet).strip()
        hand_made = False
        try:
            for _ in range(args.runs):  # alternated: the same noise for each
                hostgw.add(c1_to_c2(lab, ov, args.seconds))
                under.add(measured(ov, lambda: iperf(lab, "h1", "h2", lab.host_address("h2"), args.seconds)))
                ov.stop_all()
                set_hand_routes(lab, leases)
                hand_made = True
                info.setdefault("hand_route_h1", ov.ip("h1", "-4", "route", "show", peer_subnet).strip())
                wait_ping(ov, "c1", "c2")
                hand.add(iperf(lab, "c1", "c2", ov.containers["c2"], args.seconds))
                drop_hand_routes(lab, leases)
                hand_made = False
                start_agents(ov, lab.hosts)
                wait_ping(ov, "c1", "c2")
            ov.stop_all()
            wait_ping(ov, "c1", "c2")
            for _ in range(args.runs):
                to_ctr.add(iperf(lab, "h1", "c2", ov.containers["c2"], args.seconds))
                from_ctr.add(iperf(lab, "c1", "h2", lab.host_address("h2"), args.seconds))
        finally:
            if hand_made:
                drop_hand_routes(lab, leases)
    return {"underlay": under.to_json(), "host-gw": hostgw.to_json(), "hostgw_hand": hand.to_json(),
            "hostgw_to_container": to_ctr.to_json(), "hostgw_from_container": from_ctr.to_json(),
            "hostgw_info": info}


# ---------------------------------------------------------------------------- udp


def udp_counters(ov: Overlay) -> dict[str, Any]:
    """The forwarders' counters of a run from h1 to h2: what the sender split or segmented
    (and its largest TUN read), what the receiver converted."""
    tx, rx = ov.stats("h1"), ov.stats("h2")
    return {"sender_splits": tx.get("tx_split"), "sender_segmented": tx.get("tx_segmented"),
            "largest_read": tx.get("max_read"), "receiver_converted": rx.get("rx_converted")}


def start_udp_mode(b: Bench, ov: Overlay, mode: str) -> dict[str, Any]:
    """(Re)start both agents for *mode*: h1 the sender, h2 the receiver; their leases."""
    ov.stop_all()
    for host, extra in zip(("h1", "h2"), UDP_MODES[mode], strict=True):
        ov.start_agent(host, *extra)
    expect = {"h1": not UDP_MODES[mode][0], "h2": not UDP_MODES[mode][1]}  # advertises the fast path
    wait_for(lambda: {h: speaks_fast_path(v["value"].get("BackendData"))
                      for h, v in leases_by_host(ov, ["h1", "h2"]).items()} == expect, 15,
             what=f"leases of udp mode {mode}")
    leases = {h: v["value"] for h, v in leases_by_host(ov, ["h1", "h2"]).items()}
    if mode == "fast" and not all(speaks_fast_path(v.get("BackendData")) for v in leases.values()):
        b.note(f"udp: the agents' leases do not advertise the fast path: {leases}")
    return leases


def udp_modes(b: Bench) -> list[str]:
    """The udp modes to measure; the per-packet ones only when the agent can be told so."""
    modes = [m.strip() for m in b.args.udp_modes.split(",") if m.strip()]
    if any(m in ("mixed", "plain") for m in modes) and not agent_has_flag("udp-fast-path"):
        b.note("udp per-packet: MISSING - bin/flannel-agent has no --udp-fast-path flag yet "
               "(needed to start the agents in flannel's per-packet format)")
        modes = [m for m in modes if m not in ("mixed", "plain")]
    return modes


def bench_udp(b: Bench) -> dict[str, Any]:
    """Each udp mode with freshly started agents: fast (GSO super-packets between our
    agents), mixed (h1 fast path, h2 per-packet like upstream flanneld: the sender segments
    in userspace), plain (flannel's per-packet format end to end); and the underlay."""
    args = b.args
    series = {m: Series(f"udp {m}" if m in UDP_MODES else m) for m in udp_modes(b)}
    info: dict[str, Any] = {"leases": {}, "counters": {}}
    with two_host_overlay(b, "udp") as (lab, ov):
        info["mtu"] = int(lab.container("c1")["mtu"])
        for mode, figure in series.items():
            if mode == "underlay":
                for _ in range(args.runs):
                    figure.add(iperf(lab, "h1", "h2", lab.host_address("h2"), args.seconds))
                continue
            info["leases"][mode] = start_udp_mode(b, ov, mode)
            wait_ping(ov, "c1", "c2")
            for _ in range(args.runs):
                figure.add(c1_to_c2(lab, ov, args.seconds))
            info["counters"][mode] = udp_counters(ov)
    out = {f"udp_{mode}": figure.to_json() for mode, figure in series.items()}
    return {**out, "udp_info": info}
