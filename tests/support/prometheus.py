"""A scrape of a real agent's /metrics, checked by Prometheus' own tools: `promtool check
metrics` (Debian's prometheus package: the parser and the lint rules of the server) and
prometheus_client's parser, which gives the samples to assert on."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class Scrape:
    content_type: str
    text: str

    def checked(self) -> Scrape:
        """This scrape, once both parsers and promtool's lint accept it (AssertionError if not)."""
        assert self.content_type == CONTENT_TYPE, self.content_type
        promtool = shutil.which("promtool")
        assert promtool, "promtool is missing: apt-get install prometheus (make apt does)"
        result = subprocess.run([promtool, "check", "metrics"], input=self.text, capture_output=True,
                                text=True, timeout=30, check=False)
        assert result.returncode == 0, f"promtool: {result.stdout}{result.stderr}\n{self.text}"
        self.samples()
        return self

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """(sample name, sorted labels) -> value."""
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(self.text) for s in family.samples}

    def value(self, name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        found = self.samples()
        assert key in found, f"no sample {name}{labels} in:\n{self.text}"
        return found[key]

    def labels_of(self, name: str) -> dict[str, str]:
        """The labels of the one sample of `name` (build info)."""
        (labels,) = [dict(key) for sample, key in self.samples() if sample == name]
        return labels
