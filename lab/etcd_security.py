"""TLS and auth of a lab's etcd, as recorded in the lab's state (both labs use this).

:func:`plan` makes what a secured lab needs under its state directory: a PKI
(``<state dir>/pki``, mode 0700) whose server certificate names every member address and
127.0.0.1, and the passwords of etcd's ``root`` and ``flannel`` users, each in a file of
mode 0600 under ``<state dir>/secrets``. It returns the record kept in the state file:
paths only, never a password (the state file is not secret).

From that record, :func:`tls_of` and :func:`auth_of` rebuild the :class:`~lab.etcd.Tls`
and :class:`~lab.etcd.Auth` of a lab reloaded from its state (``etcdctl``, ``status``,
``stop-etcd``/``start-etcd`` of a later command), and :func:`inventory_vars` gives the
``flannel_etcd_*`` variables of the inventory: certificate paths and the password as a
``lookup('file', ...)`` of its file, so it is never written into the inventory itself.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .etcd import LOOPBACK, Auth, Tls
from .state import LabError
from .tls import Pki, make_pki

PKI_FIELDS = ("ca", "cert", "key", "client_cert", "client_key")


def _write_secret(path: Path, value: str) -> str:
    """*value* into *path*, created with mode 0600 (never readable by others, not even briefly)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)
    os.chmod(path, 0o600)
    return str(path)


def plan(state_dir: Path, addresses: Sequence[str], tls: bool, auth: bool,
         prefix: str = "/coreos.com/network") -> dict[str, Any]:
    """Make the PKI (mutual TLS) and the password files under *state_dir*, as asked;
    return the state record (``{}`` for a plain lab)."""
    record: dict[str, Any] = {}
    if tls:
        pki_dir = state_dir / "pki"
        pki_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(pki_dir, 0o700)  # the CA key and the client key live here
        pki = make_pki(pki_dir, [*addresses, LOOPBACK])
        record["tls"] = {**pki.as_dict(), "client_cert_auth": True}
    if auth:
        secret = Auth.generate(prefix)
        secrets_dir = state_dir / "secrets"
        record["auth"] = {
            "user": secret.user, "prefix": secret.prefix, "enabled": False,
            "root_password_file": _write_secret(secrets_dir / "etcd-root.password", secret.root_password),
            "password_file": _write_secret(secrets_dir / f"etcd-{secret.user}.password", secret.password),
        }
    return record


def tls_of(record: dict[str, Any] | None) -> Tls | None:
    """The members' :class:`Tls` of a recorded lab (None: plain http)."""
    how = (record or {}).get("tls")
    if not how:
        return None
    return Tls(Pki(*(Path(how[name]) for name in PKI_FIELDS)), client_cert_auth=bool(how["client_cert_auth"]))


def _read_secret(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise LabError(f"cannot read the lab's etcd password file {path} ({exc}); the lab's state dir "
                       f"is incomplete: run `down` and `up` again") from exc


def auth_of(record: dict[str, Any] | None) -> Auth | None:
    """The lab's :class:`Auth`, once auth is enabled on its etcd (before: None)."""
    how = (record or {}).get("auth")
    if not how or not how.get("enabled"):
        return None
    return Auth(_read_secret(how["root_password_file"]), how["user"], _read_secret(how["password_file"]),
                how["prefix"])


def pending_auth(record: dict[str, Any] | None) -> Auth | None:
    """The :class:`Auth` to set up on a freshly started etcd (None: no auth, or done already)."""
    how = (record or {}).get("auth")
    if not how or how.get("enabled"):
        return None
    return auth_of({"auth": {**how, "enabled": True}})


def inventory_vars(record: dict[str, Any] | None, copy_files: bool) -> dict[str, Any]:
    """``flannel_etcd_*`` inventory variables for a recorded lab.

    *copy_files*: the role copies CA, client certificate and key from these controller
    paths to each host (``flannel_etcd_*_src``; lab machines have their own file system);
    else they are paths the hosts already see (light hosts share the controller's files).
    The password is a ``lookup('file')`` of its 0600 file, read on the controller when used.
    """
    out: dict[str, Any] = {}
    how = (record or {}).get("tls")
    if how:
        suffix = "_src" if copy_files else "_file"
        out.update({f"flannel_etcd_ca{suffix}": how["ca"], f"flannel_etcd_cert{suffix}": how["client_cert"],
                    f"flannel_etcd_key{suffix}": how["client_key"]})
    auth = (record or {}).get("auth")
    if auth:
        out["flannel_etcd_username"] = auth["user"]
        out["flannel_etcd_password"] = f"{{{{ lookup('ansible.builtin.file', '{auth['password_file']}') }}}}"
        if not how:
            # a lab without TLS sends the password in clear over its private underlay: say so
            out["flannel_etcd_allow_plaintext_password"] = True
    return out
