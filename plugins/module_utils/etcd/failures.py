"""What an etcd failure means for the user, the one place gRPC errors are read.

An outage (UNAVAILABLE, DEADLINE_EXCEEDED) sends EtcdConnection to the next endpoint; the
rest become an EtcdSetupError / EtcdUnavailableError. Each message names the endpoint and
the setting that fixes it. TLS and scheme mistakes arrive as outages too (gRPC reports a
failed handshake as UNAVAILABLE): `hint()` recognises them from gRPC's text.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from typing import Any

from ..deps import etcd3, grpc
from ..errors import EtcdSetupError, EtcdUnavailableError

INVALID_TOKEN = "invalid auth token"


def rpc_error(exc: BaseException) -> Any:
    """The gRPC error behind exc: exc itself, or the one etcd3 replaced with its own
    exception class (raised inside its except block, so it is the context); else None."""
    for candidate in (exc, exc.__context__):
        if isinstance(candidate, grpc.RpcError) and hasattr(candidate, "code"):
            return candidate
    return None


def _code_details(exc: BaseException) -> tuple[Any, str]:
    err = rpc_error(exc)
    return (err.code(), err.details() or "") if err is not None else (None, "")


def is_outage(exc: BaseException) -> bool:
    if isinstance(exc, (etcd3.exceptions.ConnectionFailedError, etcd3.exceptions.ConnectionTimeoutError)):
        return True
    code = _code_details(exc)[0]
    return code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def is_invalid_token(exc: BaseException) -> bool:
    """etcd dropped our auth token (--auth-token-ttl passed unused, or etcd restarted)."""
    code, details = _code_details(exc)
    return code == grpc.StatusCode.UNAUTHENTICATED and INVALID_TOKEN in details


def describe(exc: BaseException) -> str:
    code, details = _code_details(exc)
    if code is not None:
        return f"{code.name}: {details}"
    return str(exc) or type(exc).__name__


def _expired_on(cert_file: str) -> str:
    """' (it expired on <date>)' when cert_file's notAfter has passed, else ''."""
    # CPython's own decoder (no extra package): private, so looked up, and skipped when absent
    decode: Callable[[str], dict[str, Any]] | None = getattr(getattr(ssl, "_ssl", None), "_test_decode_cert", None)
    try:
        not_after = decode(cert_file)["notAfter"] if decode is not None else None
    except (OSError, ssl.SSLError, KeyError, ValueError):
        return ""
    if not_after and ssl.cert_time_to_seconds(not_after) < time.time():
        return f" (it expired on {not_after})"
    return ""


def hint(details: str, url: str, cert_file: str | None) -> str | None:
    """The fix for a TLS or scheme mistake recognised in gRPC's error text, else None."""
    if "certificate has expired" in details:
        return (f"the server certificate of {url} has expired; renew etcd's --cert-file "
                "(the CA in etcd_ca_file is fine)")
    if "Hostname Verification" in details or "Peer name" in details:
        return (f"the server certificate of {url} does not name that host (subjectAltName); "
                "use the address the certificate names in etcd_endpoints, or reissue it with this one")
    if "CERTIFICATE_VERIFY_FAILED" in details:
        return (f"the server certificate of {url} is not signed by the CA in etcd_ca_file; "
                "set etcd_ca_file to the CA that signed etcd's certificate")
    if "TSI_DATA_CORRUPTED" in details or "BAD_CERTIFICATE" in details or "CERTIFICATE_REQUIRED" in details:
        if cert_file is None:
            return f"etcd at {url} requires a client certificate; set etcd_cert_file and etcd_key_file"
        return (f"etcd at {url} refused the client certificate etcd_cert_file {cert_file}"
                f"{_expired_on(cert_file)}; it must be valid and signed by the CA etcd trusts (--trusted-ca-file)")
    if url.startswith("https://") and ("Handshake read failed" in details or "WRONG_VERSION_NUMBER" in details):
        return f"etcd at {url} does not speak TLS; write the endpoint as http:// (or enable TLS on etcd)"
    if url.startswith("http://") and details.endswith("Socket closed"):
        return (f"etcd at {url} closed the plaintext connection; if it serves TLS, write the endpoint "
                "as https:// and set etcd_ca_file")
    return None


def outage_line(exc: BaseException, url: str, cert_file: str | None) -> tuple[str, bool]:
    """One endpoint's part of the 'no endpoint answered' message, and whether a setting is to blame."""
    fix = hint(_code_details(exc)[1], url, cert_file)
    return (f"{url}: {fix}", True) if fix else (f"{url}: {describe(exc)}", False)


def _who(username: str | None, cert_file: str | None) -> str:
    if username:
        return f"user {username!r}"
    if cert_file:  # etcd with --client-cert-auth takes the certificate's CN as the user
        return "the user named by the client certificate's CN (etcd_username is not set)"
    return "no user (etcd_username is not set)"


def translate(exc: BaseException, url: str, username: str | None, cert_file: str | None) -> BaseException:
    """Errors that are not outages, reported plainly: authentication and permission first."""
    code, details = _code_details(exc)
    if code is None:
        return exc
    who = _who(username, cert_file)
    if "user name is empty" in details:
        return EtcdSetupError(f"etcd at {url} requires authentication ({details}); "
                              "set etcd_username and etcd_password")
    if "authentication failed" in details or INVALID_TOKEN in details:
        return EtcdSetupError(f"etcd at {url} rejected the credentials of {who} ({details}); "
                              "check etcd_username/etcd_password")
    if "authentication is not enabled" in details:
        return EtcdSetupError(f"etcd at {url} has authentication disabled but etcd_username is set; "
                              "unset etcd_username/etcd_password, or enable auth on etcd")
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return EtcdSetupError(f"etcd at {url} denied {who} access ({details}); grant the user's role "
                              "readwrite on etcd_prefix (etcdctl role grant-permission ROLE --prefix=true "
                              "readwrite PREFIX), or set etcd_prefix to a prefix it may use")
    if isinstance(exc, grpc.RpcError):
        return EtcdUnavailableError(f"etcd at {url} failed: {code.name}: {details}")
    return exc  # etcd3's own exception (e.g. PreconditionFailedError): for the caller to judge
