"""Sphinx directive ``readme-section``: one section of the repository's README.md, as it is.

The hand-written pages of the docs site include README sections instead of copies of them,
so the site says what the README says (the README is what the tests and reviews keep true).
A section is its heading line and everything up to the next heading of the same or a higher
level; ``#`` lines inside fenced code blocks (shell comments) are not headings. A heading
that is not there fails the build, naming the heading and the file, so a renamed README
section cannot leave a silently empty page.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from docutils import frontend, nodes, utils
from docutils.parsers.rst import Directive, directives
from myst_parser.parsers.sphinx_ import MystParser
from sphinx.application import Sphinx

HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")


def _headings(lines: list[str]) -> list[tuple[int, int, str]]:
    """(line number, level, title) of each heading outside fenced code blocks."""
    found = []
    in_fence = False
    for number, line in enumerate(lines):
        if FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and (heading := HEADING.match(line)):
            found.append((number, len(heading.group(1)), heading.group(2)))
    return found


def section_lines(text: str, title: str) -> list[str]:
    """The lines of the section headed ``title`` (the heading itself left out)."""
    lines = text.splitlines()
    headings = _headings(lines)
    for index, (number, level, name) in enumerate(headings):
        if name == title:
            end = next((other[0] for other in headings[index + 1:] if other[1] <= level), len(lines))
            return lines[number + 1:end]
    raise KeyError(title)


def promoted(lines: list[str]) -> list[str]:
    """The lines with their subsections' headings made top-level (the shallowest as ``#``),
    as the markdown parser wants a document's headings to start at H1; each comes out as a
    subsection of the page's section that includes them."""
    headings = _headings(lines)
    if not headings:
        return lines
    shift = min(heading[1] for heading in headings) - 1
    out = list(lines)
    for heading in headings:
        out[heading[0]] = out[heading[0]][shift:]
    return out


class ReadmeSection(Directive):
    """``.. readme-section:: The agent`` renders README.md's "## The agent" section."""

    required_arguments = 1
    final_argument_whitespace = True
    option_spec = {"file": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        env = self.state.document.settings.env
        readme = Path(env.config.overlaynet_repo_root) / self.options.get("file", "README.md")
        title = self.arguments[0]
        try:
            body = section_lines(readme.read_text(encoding="utf-8"), title)
        except OSError as exc:
            raise self.severe(f"readme-section: cannot read {readme}: {exc}") from exc
        except KeyError:
            raise self.severe(
                f"readme-section: no heading {title!r} in {readme}; "
                "fix the page's heading or the README's"
            ) from None
        env.note_dependency(str(readme))
        return self.parse_markdown("\n".join(promoted(body)), str(readme))

    def parse_markdown(self, text: str, source: str) -> list[nodes.Node]:
        """The nodes of ``text`` parsed as MyST markdown, as docutils' include does for
        ``:parser:`` (a separate document sharing this one's ids and messages)."""
        parser = MystParser()
        settings: Any = frontend.get_default_settings(parser)
        settings.__dict__.update(self.state.document.settings.__dict__)
        document = utils.new_document(source, settings)
        document.ids = self.state.document.ids
        document.nameids = self.state.document.nameids
        document.nametypes = self.state.document.nametypes
        parser.parse(text, document)
        self.state.document.parse_messages.extend(document.parse_messages)
        document.transformer.populate_from_components((parser,))
        document.transformer.apply_transforms()
        self.state.document.transform_messages.extend(document.transform_messages)
        return list(document.children)


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("overlaynet_repo_root", "", "env", str)
    app.add_directive("readme-section", ReadmeSection)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
