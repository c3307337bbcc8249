"""The command line of a systemd unit's ExecStart, read from the unit file itself.

The docker_bridge role's drop-in replaces docker's ExecStart with the same command plus
$DOCKER_OPTS; it reads the vendor's unit (docker.io's /usr/sbin/dockerd, docker-ce's
/usr/bin/dockerd) rather than the merged one, so our own drop-in never feeds back into it.
"""

from __future__ import annotations

import re

from ..errors import HostNetworkError
from ..files import read_text

_EXEC_PREFIXES = "@-:+!"


def unit_exec_start(text: str, path: str) -> str:
    """The one ExecStart of the [Service] section (after the resets an empty ExecStart= makes)."""
    commands: list[str] = []
    section = ""
    for line in _logical_lines(text):
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        if section != "Service" or not sep or key.strip() != "ExecStart":
            continue
        value = value.strip()
        commands = [*commands, value] if value else []
    if len(commands) != 1:
        found = "no ExecStart" if not commands else f"{len(commands)} ExecStart lines"
        raise HostNetworkError(f"{path} has {found} in [Service]; one command line is needed")
    return commands[0]


def _logical_lines(text: str) -> list[str]:
    """Stripped lines with comments dropped and backslash continuations joined (systemd.syntax(7))."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith(("#", ";")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    if pending:
        lines.append(pending.strip())
    return lines


def command_without_var(command: str, var: str) -> str:
    """The command line without $VAR / ${VAR} (the drop-in appends $VAR once itself)."""
    pattern = re.compile(r"\$(?:" + re.escape(var) + r"|\{" + re.escape(var) + r"\})(?![A-Za-z0-9_])")
    words = [word for word in command.split() if not pattern.fullmatch(word)]
    if not words or not words[0].lstrip(_EXEC_PREFIXES):
        raise HostNetworkError(f"ExecStart {command!r} names no program")
    return " ".join(words)


def unit_dockerd_command(text: str, path: str, var: str = "DOCKER_OPTS") -> str:
    """The vendor's dockerd command line, its arguments kept, without $DOCKER_OPTS."""
    return command_without_var(unit_exec_start(text, path), var)


def read_unit_dockerd_command(path: str, var: str = "DOCKER_OPTS") -> str:
    """unit_dockerd_command() of the unit file at path."""
    try:
        text = read_text(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise HostNetworkError(f"cannot read the unit {path}: {exc}") from None
    if text is None:
        raise HostNetworkError(f"the unit {path} does not exist")
    return unit_dockerd_command(text, path, var)
