"""Reading and atomically replacing small text files (subnet.env, daemon.json, state files)."""

from __future__ import annotations

import os
import tempfile


def read_text(path: str) -> str | None:
    """The file's text; None when it does not exist (other errors are raised)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def write_file_atomic(path: str, content: str, mode: int = 0o644) -> bool:
    """Replace path with content through a rename; False (and no write) when it is already so."""
    try:
        with open(path, encoding="utf-8") as handle:
            if handle.read() == content and (os.stat(path).st_mode & 0o777) == mode:
                return False
    except (OSError, UnicodeDecodeError):
        pass
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return True
