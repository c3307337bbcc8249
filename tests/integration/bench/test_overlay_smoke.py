"""The overlay benchmark once at its smallest size (1 s x 1 run per figure), so it cannot rot:
every group builds its lab, every figure and its reference is measured, the table has no
MISSING row. At 1 s the ratios are noise: their targets are checked by the bench itself, run
on demand (bench/README.md)."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from bench import overlay_bench

pytestmark = [
    pytest.mark.lab,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("iperf3"), reason="needs root and iperf3"),
]


def test_every_group_measures_each_figure_and_its_reference(tmp_path):
    out = tmp_path / "bench.json"
    rc = overlay_bench.main(["--only", "throughput", "--backends", "vxlan,host-gw,udp", "--udp-modes", "fast,plain",
                             "--seconds", "1", "--runs", "1", "--prefix", "oflbs-",
                             "--json-file", str(out)])
    doc = json.loads(out.read_text())
    assert rc == 0 and not doc["failed"], doc["notes"]
    rows = {row["figure"]: row for row in doc["table"]}
    assert [name for name, row in rows.items() if "MISSING" in row["ratio/pass"] or row["value"] == "missing"] == []
    # each backend next to its own reference, measured in the same run
    assert rows["host-gw (agent)"]["target"] == ">= 97 % of by hand"
    assert {"kernel VXLAN by hand", "host-gw routes by hand", "vxlan (agent)", "udp fast path (GSO)"} <= set(rows)
    info = doc["results"]["hostgw_info"]
    # the hand-made route is the agent's, but for the protocol that marks it as the agent's
    assert info["hand_route_h1"].split()[:5] == info["route_h1"].split()[:5], info
