"""Prometheus' text exposition format (version 0.0.4), written by hand: it is small, and the
engine takes no dependency for it.

One scrape builds a fresh Registry: each family (one per name, counters named ``*_total``)
gets its ``# HELP`` and ``# TYPE`` line, then its samples. Label values often come from
etcd or the host, so they are escaped as the format says (backslash, double quote, line
feed); HELP text escapes backslash and line feed. Names are checked against the format's
grammar, so a bad one is a programming error found by the tests, never a broken scrape.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
KINDS = ("counter", "gauge")
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """Go's ParseFloat reads these; integers stay integers (counts read as counts)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def _check_labels(labels: Mapping[str, str]) -> None:
    for name in labels:
        if not _LABEL_NAME.match(name) or name.startswith("__"):
            raise ValueError(f"{name!r} is not a label name of the exposition format")


@dataclass
class Family:
    """One metric family: its samples, each a label set and a value."""

    name: str
    kind: str
    help: str
    samples: dict[tuple[tuple[str, str], ...], float] = field(default_factory=dict)

    def set(self, value: float, **labels: str) -> Family:
        """The sample of this label set (a counter's value is the total so far, as the
        agent keeps it; a label set given twice is a programming error)."""
        _check_labels(labels)
        key = tuple(sorted(labels.items()))
        if key in self.samples:
            raise ValueError(f"{self.name}: the label set {dict(key)} was given twice")
        if self.kind == "counter" and not value >= 0:
            raise ValueError(f"{self.name}: a counter cannot be {value}")
        self.samples[key] = float(value)
        return self

    def lines(self) -> list[str]:
        out = [f"# HELP {self.name} {escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]
        for key, value in self.samples.items():
            labels = ",".join(f'{name}="{escape_label_value(text)}"' for name, text in key)
            out.append(f"{self.name}{{{labels}}} {format_value(value)}" if labels
                       else f"{self.name} {format_value(value)}")
        return out


class Registry:
    """The families of one scrape, in the order they were added."""

    def __init__(self) -> None:
        self._families: dict[str, Family] = {}

    def counter(self, name: str, help_text: str) -> Family:
        if not name.endswith("_total"):
            raise ValueError(f"counter {name!r} must end in _total")
        return self._add(Family(name, "counter", help_text))

    def gauge(self, name: str, help_text: str) -> Family:
        return self._add(Family(name, "gauge", help_text))

    def _add(self, family: Family) -> Family:
        if not _METRIC_NAME.match(family.name):
            raise ValueError(f"{family.name!r} is not a metric name of the exposition format")
        if family.name in self._families:
            raise ValueError(f"metric family {family.name} was added twice")
        self._families[family.name] = family
        return family

    def render(self) -> str:
        """The exposition text; it ends in a line feed, as the format requires."""
        return "".join(line + "\n" for family in self._families.values() for line in family.lines())
