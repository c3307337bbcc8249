"""How etcd failures are explained: gRPC's texts (as recorded from real runs against etcd
3.4 and grpcio, see tests/integration/etcd) mapped to the fix, certificates checked with
openssl-made files, and the settings refused before any connection."""

from __future__ import annotations

from pathlib import Path

import pytest

from ansible_collections.overlaynet.flannel.plugins.module_utils.errors import EtcdSetupError
from ansible_collections.overlaynet.flannel.plugins.module_utils.etcd import failures
from ansible_collections.overlaynet.flannel.plugins.module_utils.etcd.connection import EtcdConnection, EtcdSettings
from lab.tls import make_bad_certs, make_pki

URL = "https://10.0.0.1:2379"
HANDSHAKE = "failed to connect to all addresses; last error: UNKNOWN: ipv4:10.0.0.1:2379: "


@pytest.mark.parametrize(("details", "fix"), [
    (HANDSHAKE + "Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:1000007d:SSL routines:"
     "OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate: OK", "set etcd_ca_file"),
    (HANDSHAKE + "Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:1000007d:SSL routines:"
     "OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: certificate has expired: OK", "has expired"),
    (HANDSHAKE + "Custom verification check failed with error: UNAUTHENTICATED: Hostname Verification Check "
     "failed.", "subjectAltName"),
    (HANDSHAKE + "Unwrap failed (TSI_DATA_CORRUPTED)", "requires a client certificate"),
    (HANDSHAKE + "Handshake read failed (Socket closed)", "does not speak TLS"),
], ids=["wrong-ca", "expired-server", "wrong-host", "no-client-cert", "https-to-http"])
def test_tls_failures_name_the_endpoint_and_the_fix(details: str, fix: str) -> None:
    found = failures.hint(details, URL, None)
    assert found is not None and fix in found and URL in found


def test_a_closed_plaintext_connection_suggests_https() -> None:
    found = failures.hint("... ipv4:10.0.0.1:2379: Socket closed", "http://10.0.0.1:2379", None)
    assert found is not None and "https://" in found
    assert failures.hint("connection refused", "http://10.0.0.1:2379", None) is None


def test_a_refused_client_certificate_says_when_it_expired(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    bad = make_bad_certs(pki)
    expired = failures.hint("Unwrap failed (TSI_DATA_CORRUPTED)", URL, str(bad.expired_client[0]))
    assert expired is not None and "it expired on" in expired and str(bad.expired_client[0]) in expired
    valid = failures.hint("Unwrap failed (TSI_DATA_CORRUPTED)", URL, str(pki.client_cert))
    assert valid is not None and "expired" not in valid and "--trusted-ca-file" in valid


def test_a_password_without_a_user_is_refused() -> None:
    with pytest.raises(EtcdSetupError, match="etcd_password is set but etcd_username is not") as caught:
        EtcdConnection(EtcdSettings(endpoints=("http://127.0.0.1:1",), password="s3cret"))
    assert "s3cret" not in str(caught.value)


def test_a_non_grpc_error_is_no_outage_and_left_alone() -> None:
    error = ValueError("x")
    assert not failures.is_outage(error) and not failures.is_invalid_token(error)
    assert failures.translate(error, URL, None, None) is error
