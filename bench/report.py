"""The results as a table (figure, value, target, verdict, runs) and the run's notes."""

from __future__ import annotations

import statistics
from typing import Any

from .measure import Bench

TARGETS = {
    "vxlan_ratio": 0.95,
    "hostgw_ratio": 0.97,
    "udp_fast_gbit": 2.5,
    "udp_plain_gbit": 0.5,
    "convergence_p99_ms": 250.0,
}


def fmt_g(v: float | None) -> str:
    return "missing" if v is None else f"{v:.2f} Gbit/s"


def runs_of(res: dict[str, Any], key: str) -> str:
    s = res.get(key)
    return " ".join(f"{g:.2f}" for g in s["gbit"]) if s and s["gbit"] else "-"


class Table:
    """Rows of the report, built from the results."""

    def __init__(self, res: dict[str, Any]) -> None:
        self.res = res
        self.rows: list[dict[str, str]] = []

    def med(self, key: str) -> float | None:
        value = (self.res.get(key) or {}).get("median_gbit")
        return None if value is None else float(value)

    def row(self, figure: str, value: str, target: str, verdict: str, runs: str = "") -> None:
        self.rows.append({"figure": figure, "value": value, "target": target, "ratio/pass": verdict, "runs": runs})

    def reference(self, figure: str, key: str) -> None:
        self.row(figure, fmt_g(self.med(key)), "(reference)", "-", runs_of(self.res, key))

    def ratio(self, figure: str, key: str, ref: str, ref_name: str, target: float) -> None:
        v, r = self.med(key), self.med(ref)
        if v is None or not r:
            verdict = "MISSING"
        else:
            ratio = v / r
            verdict = f"{ratio * 100:.1f} % {'PASS' if ratio >= target else 'FAIL'}"
        self.row(figure, fmt_g(v), f">= {target * 100:.0f} % of {ref_name}", verdict, runs_of(self.res, key))

    def info_ratio(self, figure: str, key: str, ref: str, ref_name: str) -> None:
        v, r = self.med(key), self.med(ref)
        if v is None:
            return
        verdict = f"{v / r * 100:.1f} % of {ref_name}" if r else "-"
        self.row(figure, fmt_g(v), "(info)", verdict, runs_of(self.res, key))

    def absolute(self, figure: str, key: str, target: float) -> None:
        v = self.med(key)
        verdict = "MISSING" if v is None else ("PASS" if v >= target else "FAIL")
        self.row(figure, fmt_g(v), f">= {target} Gbit/s", verdict, runs_of(self.res, key))

    def vxlan(self) -> None:
        self.reference("kernel VXLAN by hand", "vxlan_hand")
        self.ratio("vxlan (agent)", "vxlan", "vxlan_hand", "hand-made", TARGETS["vxlan_ratio"])
        self.info_ratio("vxlan, agents stopped (info)", "vxlan_stopped", "vxlan_hand", "hand-made")

    def hostgw(self) -> None:
        self.reference("host-gw routes by hand", "hostgw_hand")
        self.ratio("host-gw (agent)", "host-gw", "hostgw_hand", "by hand", TARGETS["hostgw_ratio"])
        self.info_ratio("underlay veth, host-host (info)", "underlay", "hostgw_hand", "by hand")
        self.info_ratio("  host -> container (info)", "hostgw_to_container", "underlay", "underlay")
        self.info_ratio("  container -> host (info)", "hostgw_from_container", "underlay", "underlay")

    def udp(self) -> None:
        if self.med("udp_underlay") is not None:
            self.reference("underlay veth, udp lab", "udp_underlay")
        self.absolute("udp fast path (GSO)", "udp_fast", TARGETS["udp_fast_gbit"])
        self.info_ratio("udp fast -> per-packet (info)", "udp_mixed", "udp_fast", "fast path")
        self.absolute("udp per-packet (flannel)", "udp_plain", TARGETS["udp_plain_gbit"])

    def convergence(self, conv: dict[str, Any]) -> None:
        limit = TARGETS["convergence_p99_ms"]
        n = conv.get("n", 0)
        if "p99_ms" in conv:
            self.row(f"convergence p50 ({n} joins)", f"{conv['p50_ms']:.1f} ms", "(info)", "-")
            ok = conv["p99_ms"] < limit
            self.row(f"convergence p99 ({n} joins)", f"{conv['p99_ms']:.1f} ms", f"< {limit:.0f} ms",
                     "PASS" if ok else "FAIL")
        else:
            self.row("convergence p99", "missing", f"< {limit:.0f} ms", "MISSING")
        if "removal_p99_ms" in conv:
            self.row("lease deleted -> route gone p99", f"{conv['removal_p99_ms']:.1f} ms", "(info)", "-")


def build_table(res: dict[str, Any]) -> list[dict[str, str]]:
    table = Table(res)
    if "vxlan" in res:
        table.vxlan()
    if "host-gw" in res:
        table.hostgw()
    if "udp_fast" in res or "udp_plain" in res:
        table.udp()
    if res.get("convergence") is not None:
        table.convergence(res["convergence"])
    return table.rows


def print_table(rows: list[dict[str, str]], out: Any) -> None:
    cols = ["figure", "value", "target", "ratio/pass", "runs"]
    heads = {"runs": "runs (Gbit/s)"}
    widths = {c: max([len(heads.get(c, c)), *(len(r[c]) for r in rows)]) for c in cols}  # no rows: the heads
    line = "  ".join(heads.get(c, c).ljust(widths[c]) for c in cols)
    print(line.rstrip(), file=out)
    print("  ".join("-" * widths[c] for c in cols), file=out)
    for r in rows:
        print("  ".join(r[c].ljust(widths[c]) for c in cols).rstrip(), file=out)


def note_results(b: Bench, res: dict[str, Any]) -> None:
    """Notes on what the figures show: the agents' CPU share, wide spreads, retransmits."""
    for key in ("vxlan", "vxlan_stopped", "vxlan_hand", "underlay", "host-gw", "hostgw_hand", "udp_fast",
                "udp_mixed", "udp_plain"):
        s = res.get(key)
        if s and key in ("vxlan", "host-gw") and s.get("agents_cpu_pct") and \
                statistics.median(s["agents_cpu_pct"]) >= 2:
            b.note(f"{key}: the two agents used {s['agents_cpu_pct']} % of a core during the runs "
                   f"(reconcile every 1 s, etcd probe every 1 s, as in the overlay tests)")
        if s and s["gbit"] and len(s["gbit"]) > 1 and min(s["gbit"]) < 0.8 * max(s["gbit"]):
            b.note(f"{key}: runs spread widely ({min(s['gbit']):.2f}..{max(s['gbit']):.2f} Gbit/s): noisy box")
    retrans = [f"{k} {res[k]['retransmits']}" for k in res if isinstance(res[k], dict) and res[k].get("retransmits")
               and any(res[k]["retransmits"])]
    if retrans:
        b.note("TCP retransmits per run: " + ", ".join(retrans))
