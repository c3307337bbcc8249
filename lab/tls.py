"""A throwaway CA with a server and a client certificate (openssl, argv lists only).

The server certificate names the addresses it is served on (``subjectAltName``), the
client certificate is for client authentication (etcd's ``--client-cert-auth``).
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .state import LabError

DAYS = "2"


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path  # the server's
    key: Path
    client_cert: Path
    client_key: Path

    def as_dict(self) -> dict[str, str]:
        """The paths as strings, keyed as the field names (e.g. for an Ansible extra var)."""
        return {name: str(getattr(self, name)) for name in ("ca", "cert", "key", "client_cert", "client_key")}


def _openssl(*args: str) -> None:
    proc = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise LabError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


def _signed(d: Path, name: str, extensions: str) -> None:
    (d / f"{name}.ext").write_text(extensions)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=oflt-{name}",
             "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"))
    _openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"),
             "-CAcreateserial", "-days", DAYS, "-extfile", str(d / f"{name}.ext"), "-out", str(d / f"{name}.pem"))


def make_pki(directory: Path, addresses: Sequence[str] = ("127.0.0.1",)) -> Pki:
    """CA, server certificate for *addresses*, client certificate, all under *directory*."""
    d = directory
    d.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", DAYS, "-subj", "/CN=oflt-ca",
             "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))
    names = ",".join(f"IP:{address}" for address in addresses)
    _signed(d, "server", f"subjectAltName={names}\nextendedKeyUsage=serverAuth\n")
    _signed(d, "client", "extendedKeyUsage=clientAuth\n")
    return Pki(d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key")
