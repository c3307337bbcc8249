"""Converge time (issue 10): ``site.yml`` on the machine lab, first and second converge, on
3 machines and on as many as fit this box, with the slowest tasks of each.

    sudo .venv/bin/python -m bench.site_converge [--machines 3,8] [--runs 1] [--forks N] [--top 8]

For each size, every run builds a fresh machine lab (``lab.machine_lab``: systemd-nspawn
machines with docker, one etcd member, mutual TLS and etcd auth as ``make demo``), then
runs ``ansible-playbook -i <its inventory> site.yml`` twice as an operator does (Ansible's
default of 5 forks unless ``--forks``; on a 2-core box 8 forks for 8 machines measured
slower, the hosts' Python competing for the same cores):

  first converge     fresh machines -> agent running, docker0 on the lease
  second converge    the same again: must report changed=0

Wall times are medians over the runs; the task profile (lab/callback_plugins/task_profile.py,
each task from its start to the next one's, over all hosts) is shown for the largest size.
Targets: on 3 machines first < 60 s and second < 20 s; on the largest size each less than
twice the 3-machine time (the ratio is measured in the same run of this script).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.measure import log
from lab.machine_lab import REPO, MachineLab, cannot_run
from lab.playbook import PlaybookRun, merged_tasks, run_playbook, slowest

PREFIX = "oflcv-"
STATE = REPO / "lab" / ".machines" / "bench-converge"  # docker's data dir must not sit on overlayfs/tmpfs
TARGETS = {"first_s": 60.0, "second_s": 20.0, "scale_ratio": 2.0}


def one_run(machines: int, forks: int | None = None) -> dict[str, Any]:
    """A fresh lab of *machines*, two converges; the lab is removed afterwards."""
    lab = MachineLab(STATE, STATE / "inventory.yml", PREFIX)
    lab.down()  # leftovers of a killed run
    t0 = time.monotonic()
    lab.up(machines, etcd_members=1)
    up_s = time.monotonic() - t0
    try:
        runs: list[PlaybookRun] = []
        for label in ("first", "second"):
            run = run_playbook(lab.inventory, *(["--forks", str(forks)] if forks else []), profile=True)
            if not run.ok:
                raise SystemExit(f"{label} converge on {machines} machines failed:\n{run.output}")
            log(f"{machines} machines: {label} converge {run.seconds:.1f} s, changed={run.changed}")
            runs.append(run)
        return {"machines": machines, "lab_up_s": up_s, "first": runs[0], "second": runs[1]}
    finally:
        lab.down()


def summarize(size: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    first = [r["first"] for r in runs]
    second = [r["second"] for r in runs]
    return {
        "machines": size,
        "first_s": statistics.median(r.seconds for r in first),
        "second_s": statistics.median(r.seconds for r in second),
        "second_changed": max(r.changed for r in second),
        "lab_up_s": statistics.median(r["lab_up_s"] for r in runs),
        "first_runs": [round(r.seconds, 1) for r in first],
        "second_runs": [round(r.seconds, 1) for r in second],
        "first_tasks": merged_tasks(first),
        "second_tasks": merged_tasks(second),
    }


def verdicts(results: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """(figure, value, target, verdict) rows: absolute targets on 3 machines, ratios to
    the 3-machine figure of the same run for every other size."""
    rows = []
    base = next((r for r in results if r["machines"] == 3), None)
    for r in results:
        n = r["machines"]
        for key, label in (("first_s", "first converge"), ("second_s", "second converge")):
            value = f"{r[key]:.1f} s"
            if n == 3:
                target = TARGETS[key]
                rows.append((f"{label}, 3 machines", value, f"< {target:.0f} s",
                             "PASS" if r[key] < target else "FAIL"))
            elif base is not None:
                ratio = r[key] / base[key]
                rows.append((f"{label}, {n} machines", value, f"< {TARGETS['scale_ratio']:.0f}x the 3-machine",
                             f"{ratio:.2f}x {'PASS' if ratio < TARGETS['scale_ratio'] else 'FAIL'}"))
            else:
                rows.append((f"{label}, {n} machines", value, "(no 3-machine reference)", "-"))
        rows.append((f"second converge changed, {n} machines", str(r["second_changed"]), "0",
                     "PASS" if r["second_changed"] == 0 else "FAIL"))
    return rows


def print_report(results: list[dict[str, Any]], top: int, out: Any = sys.stdout) -> None:
    rows = verdicts(results)
    widths = [max(len(row[i]) for row in rows + [("figure", "value", "target", "verdict")]) for i in range(4)]
    for row in [("figure", "value", "target", "verdict"), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)), file=out)
    for r in results:
        print(f"\n{r['machines']} machines: lab up {r['lab_up_s']:.1f} s; first runs {r['first_runs']} s, "
              f"second runs {r['second_runs']} s", file=out)
    largest = max(results, key=lambda r: r["machines"])
    for key in ("first_tasks", "second_tasks"):
        print(f"\nslowest tasks, {key.split('_')[0]} converge on {largest['machines']} machines (median s):", file=out)
        for task in slowest(largest[key], top):
            print(f"  {float(task['seconds']):6.1f}  {task['name']}", file=out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.site_converge", description=__doc__.splitlines()[0])
    ap.add_argument("--machines", default="3,8", help="comma-separated lab sizes (default 3,8)")
    ap.add_argument("--runs", type=int, default=1, help="fresh labs per size; medians are reported")
    ap.add_argument("--forks", type=int, help="ansible-playbook --forks (default: Ansible's, 5)")
    ap.add_argument("--top", type=int, default=8, help="slowest tasks shown")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    reason = cannot_run()
    if reason:
        print(f"cannot run the machine lab: {reason}", file=sys.stderr)
        return 2
    sizes = [int(s) for s in args.machines.split(",") if s]
    results = [summarize(n, [one_run(n, args.forks) for _ in range(args.runs)]) for n in sizes]
    print_report(results, args.top)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    failed = any(row[3].endswith("FAIL") for row in verdicts(results))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
