"""The docs site's readme-section directive: which README lines a section is."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "docs" / "sphinx"))

from readme_section import promoted, section_lines  # noqa: E402

README = """# Project

Intro.

## The agent

It runs.

```sh
# a shell comment, not a heading
## nor this
```

### Flags

--etcd-endpoints

## The lab

Namespaces.
"""


def test_a_section_runs_to_the_next_heading_of_its_level_past_code_comments_and_subsections():
    assert section_lines(README, "The agent") == [
        "", "It runs.", "", "```sh", "# a shell comment, not a heading", "## nor this", "```", "",
        "### Flags", "", "--etcd-endpoints", ""]


def test_the_last_section_runs_to_the_end_and_a_top_heading_spans_the_whole_file():
    assert section_lines(README, "The lab") == ["", "Namespaces."]
    assert section_lines(README, "Project")[-1] == "Namespaces."


def test_a_subsection_stops_at_the_next_higher_heading():
    assert section_lines(README, "Flags") == ["", "--etcd-endpoints", ""]


@pytest.mark.parametrize("title", ["Missing", "a shell comment, not a heading", "nor this", "the agent"])
def test_a_heading_that_is_not_there_is_an_error(title):
    with pytest.raises(KeyError):
        section_lines(README, title)


def test_a_sections_subsections_are_promoted_to_start_at_h1_and_code_comments_stay():
    body = promoted(section_lines(README, "The agent"))
    assert "# Flags" in body
    assert "### Flags" not in body
    assert "# a shell comment, not a heading" in body and "## nor this" in body
    assert promoted(["", "text"]) == ["", "text"]
