"""What `make docs` adds to the conf.py that `antsibull-docs sphinx-init` writes.

The Makefile appends ``from conf_overrides import *`` (with this directory on sys.path) to
the generated conf.py, so the generated file stays antsibull-docs' own and these are the
only differences:
- no inventory is fetched over the network (the build runs offline): ansible-core's docs
  are linked through a small local inventory (`ansible_inventory.py`) of the few labels
  antsibull-docs' pages refer to; python2/3 and jinja2 are not referred to and are left out;
- the hand-written pages in docs/docsite/rst include README.md sections (`readme_section`).
"""

from __future__ import annotations

from pathlib import Path

from ansible_inventory import ANSIBLE_DOCS, INVENTORY_NAME

overlaynet_repo_root = str(Path(__file__).resolve().parents[2])

project = "overlaynet.flannel"
copyright = "overlaynet.flannel contributors"
title = "overlaynet.flannel documentation"
html_short_title = "overlaynet.flannel"

extensions = ["sphinx_antsibull_ext", "sphinx.ext.intersphinx", "myst_parser", "readme_section"]

# The Makefile writes the inventory beside conf.py; a local path is relative to the source dir (rst/).
intersphinx_mapping = {"ansible_devel": (ANSIBLE_DOCS, f"../{INVENTORY_NAME}")}
