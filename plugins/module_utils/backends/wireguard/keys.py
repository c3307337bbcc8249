"""This host's WireGuard key pair, generated once and kept in the key file
(the text forms of keys are in key_text.py).

Generating and deriving use wireguard-tools' ``wg genkey`` / ``wg pubkey`` (the package the
role installs anyway): the engine needs no crypto library, and the private key only ever
passes through pipes, never argv. The key file is upstream's (``WIREGUARD_KEY_FILE``,
default ``/run/flannel/wgkey``): one base64 line, mode 0600, its directory created 0700.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field

from ...errors import HostNetworkError
from .key_text import clamped, key_bytes

DEFAULT_KEY_FILE = "/run/flannel/wgkey"
KEY_FILE_ENV = "WIREGUARD_KEY_FILE"


@dataclass(frozen=True)
class KeyPair:
    """This host's keys. The private one is kept out of repr(), so no log line can show it."""

    public: str
    private: str = field(repr=False)


def key_file_path() -> str:
    return os.environ.get(KEY_FILE_ENV) or DEFAULT_KEY_FILE


def load_or_create(path: str) -> tuple[KeyPair, bool]:
    """The key pair from the key file, or a new one written to it; and whether it is new.
    A file that holds no key is an error naming the file (never overwritten: it may be
    another tool's)."""
    try:
        with open(path, encoding="ascii") as handle:
            text = handle.read().strip()
    except FileNotFoundError:
        private = _wg(["genkey"], None, "generate a private key")
        _write_key(path, private)
        return KeyPair(_public_of(private), private), True
    except (OSError, UnicodeDecodeError) as exc:
        raise HostNetworkError(f"cannot read the wireguard key file {path}: {exc}; "
                               f"fix it or remove it (a new key is made then)") from None
    if key_bytes(text) is None:
        raise HostNetworkError(f"the wireguard key file {path} holds no WireGuard private key; "
                               "remove it (a new key is made then) or point WIREGUARD_KEY_FILE elsewhere")
    _tighten(path)
    return KeyPair(_public_of(text), clamped(text)), False


def _public_of(private: str) -> str:
    public = _wg(["pubkey"], private, "derive the public key")
    if key_bytes(public) is None:
        raise HostNetworkError("`wg pubkey` printed no WireGuard key; is wireguard-tools installed?")
    return public


def _write_key(path: str, private: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        # O_EXCL: a file that appeared meanwhile (another agent) is not overwritten.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(private + "\n")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise HostNetworkError(f"cannot write the wireguard key file {path}: {exc.strerror}; "
                               "set WIREGUARD_KEY_FILE to a writable path") from None


def _tighten(path: str) -> None:
    """A key file readable by others (written by hand) is made 0600."""
    try:
        if os.stat(path).st_mode & 0o077:
            os.chmod(path, 0o600)
    except OSError as exc:
        raise HostNetworkError(f"cannot make the wireguard key file {path} private: {exc.strerror}") from None


def _wg(args: list[str], stdin: str | None, what: str) -> str:
    wg = shutil.which("wg")
    if wg is None:
        raise HostNetworkError(f"cannot {what}: `wg` not found; install wireguard-tools")
    try:
        proc = subprocess.run([wg, *args], input=(stdin + "\n") if stdin is not None else None,
                              capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HostNetworkError(f"cannot {what}: wg {args[0]}: {exc}") from None
    if proc.returncode != 0:
        # wg's stderr never holds the key (it reads it from stdin and reports only its own errors).
        raise HostNetworkError(f"cannot {what}: wg {args[0]} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout.strip()
