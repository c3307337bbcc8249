"""A throwaway CA with a server and a client certificate (openssl, argv lists only), and
the bad certificates the error tests need.

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
EXPIRED_DAYS = "-1"  # openssl 3.0 takes it: notAfter one day before notBefore (now), so already expired


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


@dataclass(frozen=True)
class BadCerts:
    """Certificates that must be refused, next to a good :class:`Pki` (same CA unless said)."""

    other_ca: Path  # a CA that signed none of the certificates
    expired_server: tuple[Path, Path]  # (certificate, key) for the right addresses, expired
    wrong_host_server: tuple[Path, Path]  # valid, but for another address (SAN mismatch)
    expired_client: tuple[Path, Path]  # a client certificate, expired


def _openssl(*args: str) -> None:
    proc = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise LabError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


def _make_ca(d: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", DAYS, "-subj", f"/CN=oflt-{name}",
             "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.pem"))


def _signed(d: Path, name: str, extensions: str, days: str = DAYS) -> tuple[Path, Path]:
    (d / f"{name}.ext").write_text(extensions)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=oflt-{name}",
             "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"))
    _openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"),
             "-CAcreateserial", "-days", days, "-extfile", str(d / f"{name}.ext"), "-out", str(d / f"{name}.pem"))
    return d / f"{name}.pem", d / f"{name}.key"


def _server_ext(addresses: Sequence[str]) -> str:
    names = ",".join(f"IP:{address}" for address in addresses)
    return f"subjectAltName={names}\nextendedKeyUsage=serverAuth\n"


_CLIENT_EXT = "extendedKeyUsage=clientAuth\n"


def make_pki(directory: Path, addresses: Sequence[str] = ("127.0.0.1",)) -> Pki:
    """CA, server certificate for *addresses*, client certificate, all under *directory*."""
    d = directory
    d.mkdir(parents=True, exist_ok=True)
    _make_ca(d, "ca")
    _signed(d, "server", _server_ext(addresses))
    _signed(d, "client", _CLIENT_EXT)
    return Pki(d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key")


def make_bad_certs(pki: Pki, addresses: Sequence[str] = ("127.0.0.1",),
                   wrong_address: str = "192.0.2.1") -> BadCerts:
    """Next to *pki* (its directory and CA): another CA, an expired server certificate for
    *addresses*, a server certificate for *wrong_address* only, an expired client certificate."""
    d = pki.ca.parent
    _make_ca(d, "other-ca")
    return BadCerts(
        other_ca=d / "other-ca.pem",
        expired_server=_signed(d, "expired-server", _server_ext(addresses), days=EXPIRED_DAYS),
        wrong_host_server=_signed(d, "wrong-host-server", _server_ext([wrong_address])),
        expired_client=_signed(d, "expired-client", _CLIENT_EXT, days=EXPIRED_DAYS),
    )
