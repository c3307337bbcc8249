"""Writes a Sphinx (intersphinx) inventory of the ansible-core docs labels our pages refer to.

antsibull-docs' module pages link to ansible-core's docs by label (`common_return_values`,
`ansible_configuration_settings`); Sphinx resolves such labels from the docs' objects.inv,
which `make docs` does not download (the build runs offline). This writes the inventory for
just those labels, so the links go to the right pages of the ansible-core docs and an
unknown label still fails the build (nitpicky, -W). Add a label here when a page needs it.

    python docs/sphinx/ansible_inventory.py OUT.inv
"""

from __future__ import annotations

import sys
import zlib
from pathlib import Path

ANSIBLE_DOCS = "https://docs.ansible.com/projects/ansible/devel/"
INVENTORY_NAME = "ansible_devel.inv"

# label: (page and anchor under ANSIBLE_DOCS, the title a bare :ref: shows)
LABELS: dict[str, tuple[str, str]] = {
    "common_return_values": (
        "reference_appendices/common_return_values.html#common-return-values",
        "Return Values",
    ),
    "ansible_configuration_settings": (
        "reference_appendices/config.html#ansible-configuration-settings",
        "Ansible Configuration Settings",
    ),
}


def inventory() -> bytes:
    """The inventory in Sphinx's version 2 format: a plain header, then zlib'd entries."""
    header = (
        "# Sphinx inventory version 2\n"
        "# Project: Ansible\n"
        "# Version: devel\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    entries = "".join(
        f"{label} std:label -1 {uri} {title}\n" for label, (uri, title) in sorted(LABELS.items())
    )
    return header.encode() + zlib.compress(entries.encode())


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: ansible_inventory.py OUT.inv", file=sys.stderr)
        return 2
    Path(argv[0]).write_bytes(inventory())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
