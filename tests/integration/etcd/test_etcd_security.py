"""etcd security end to end against real etcd members on loopback: user/password over
http:// and over mutual TLS, tokens that expire (--auth-token-ttl 2), and a clear error for
every mistake a user can make (wrong CA, expired certificates, a certificate for another
host, wrong password, a user without the prefix, http:// vs https://), each naming the
endpoint and the setting that fixes it, never the password."""

from __future__ import annotations

import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ansible_collections.overlaynet.flannel.plugins.module_utils.errors import (
    EtcdSetupError,
    EtcdUnavailableError,
    FlannelError,
)
from ansible_collections.overlaynet.flannel.plugins.module_utils.etcd.connection import EtcdConnection, EtcdSettings
from ansible_collections.overlaynet.flannel.plugins.module_utils.etcd.registry import LeaseRegistry
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.acquire import AcquireRequest, acquire
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.config import NetworkConfig
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.lease import LeaseAttrs
from lab.etcd import LOOPBACK, Auth, Cluster, Tls, free_port, member
from lab.tls import BadCerts, Pki, make_bad_certs

pytestmark = pytest.mark.slow
ROOT = "/oflsec"  # the test user's role covers this prefix only
TOKEN_TTL = 2  # seconds: etcd's --auth-token-ttl here


@pytest.fixture(scope="module")
def auth() -> Auth:
    return Auth.generate(prefix=ROOT)


def _secured(tls_mode: str, auth: Auth) -> Cluster:
    cluster = Cluster.loopback(tls_mode=tls_mode, auth_token_ttl=TOKEN_TTL).start()
    try:
        cluster.set_up_auth(auth)
    except BaseException:
        cluster.close()
        raise
    return cluster


@pytest.fixture(scope="module")
def auth_http(auth: Auth) -> Iterator[Cluster]:
    """http:// with user/password (no TLS at all)."""
    cluster = _secured("plain", auth)
    yield cluster
    cluster.close()


@pytest.fixture(scope="module")
def auth_mtls(auth: Auth) -> Iterator[Cluster]:
    """https:// requiring client certificates, and user/password."""
    cluster = _secured("mtls", auth)
    yield cluster
    cluster.close()


@pytest.fixture(scope="module")
def mtls_only() -> Iterator[Cluster]:
    """https:// requiring client certificates, no etcd auth."""
    cluster = Cluster.loopback(tls_mode="mtls").start()
    yield cluster
    cluster.close()


@pytest.fixture(scope="module")
def bad(auth_mtls: Cluster) -> BadCerts:
    assert auth_mtls.pki is not None
    return make_bad_certs(auth_mtls.pki)


def _serving(pki: Pki, cert: Path, key: Path) -> Cluster:
    """A member serving *cert*: started without waiting for health (etcdctl would refuse
    the certificate too), ready once it accepts connections."""
    base = Path(tempfile.mkdtemp(prefix="ofls-etcd-"))
    tls = Tls(Pki(pki.ca, cert, key, pki.client_cert, pki.client_key), client_cert_auth=True)
    one = member("b", LOOPBACK, base, client_port=free_port(), peer_port=free_port(), tls=tls)
    cluster = Cluster([one], log_level="error", owned_dir=base).start(wait=False)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection((LOOPBACK, one.client_port), 0.5).close()
            return cluster
        except OSError:
            if time.monotonic() > deadline or not one.running():
                cluster.close()
                raise AssertionError(f"etcd with {cert.name} did not start: {one.tail()}") from None
            time.sleep(0.1)


@pytest.fixture(scope="module")
def bad_servers(auth_mtls: Cluster, bad: BadCerts) -> Iterator[dict[str, Cluster]]:
    """Members serving an expired certificate and one for another host."""
    assert auth_mtls.pki is not None
    servers: dict[str, Cluster] = {}
    try:
        servers["expired"] = _serving(auth_mtls.pki, *bad.expired_server)
        servers["wrong-host"] = _serving(auth_mtls.pki, *bad.wrong_host_server)
        yield servers
    finally:
        for cluster in servers.values():
            cluster.close()


def settings_for(cluster: Cluster, auth: Auth | None, **overrides: object) -> EtcdSettings:
    values: dict[str, object] = {"endpoints": (cluster.endpoint,), "timeout": 3.0}
    pki = cluster.pki
    if pki is not None:
        values.update(ca_file=str(pki.ca), cert_file=str(pki.client_cert), key_file=str(pki.client_key))
    if auth is not None:
        values.update(username=auth.user, password=auth.password)
    values.update(overrides)
    return EtcdSettings(**values)  # type: ignore[arg-type]


def attrs(ip: str) -> LeaseAttrs:
    return LeaseAttrs(ip, None, "host-gw", None)


def test_the_password_is_in_no_repr(auth: Auth, auth_http: Cluster) -> None:
    settings = settings_for(auth_http, auth)
    conn = EtcdConnection(settings)
    assert auth.password not in repr(settings)
    assert auth.password not in repr(conn.__dict__)


def test_with_auth_on_a_certificate_alone_is_the_user_of_its_cn(auth_mtls: Cluster, auth: Auth) -> None:
    error = _error(settings_for(auth_mtls, None))  # CN oflt-client: no such user, no permission
    _check(error, EtcdSetupError, auth_mtls.endpoint, auth, "client certificate's CN", "etcd_username")


def test_with_auth_no_user_at_all_is_told_to_set_one(auth_http: Cluster, auth: Auth) -> None:
    error = _error(settings_for(auth_http, None))
    _check(error, EtcdSetupError, auth_http.endpoint, auth, "requires authentication",
           "set etcd_username and etcd_password")


@pytest.mark.parametrize("mode", ["http+auth", "mtls+auth", "mtls"])
def test_the_registry_works_over_auth_and_mutual_tls(request, auth: Auth, mode: str) -> None:
    fixture = {"http+auth": "auth_http", "mtls+auth": "auth_mtls", "mtls": "mtls_only"}[mode]
    cluster: Cluster = request.getfixturevalue(fixture)
    prefix = f"{ROOT}/{mode.replace('+', '-')}-{time.monotonic_ns()}"
    user = None if mode == "mtls" else auth
    store = LeaseRegistry(EtcdConnection(settings_for(cluster, user)), prefix)
    try:
        assert store.put_config(NetworkConfig.from_dict({"Network": "10.9.0.0/16", "Backend": {"Type": "host-gw"}}), 0)
        lease = acquire(store, AcquireRequest(attrs("192.0.2.10"), ttl=60)).lease
        listing = store.list_leases()
        assert [found.subnet for found in listing.leases] == [lease.subnet]
        batches, cancel = store.watch(listing.revision + 1)
        cluster.etcdctl("put", f"{prefix}/subnets/10.9.99.0-24", '{"PublicIP":"192.0.2.99","BackendType":"host-gw"}')
        batch = next(batches)
        cancel()
        assert [store.decode_event(event, batch.revision).key for event in batch.events] == ["10.9.99.0-24"]
        assert store.renew(lease, ttl=60).etcd_lease_id == lease.etcd_lease_id
        assert store.remaining(lease) > 50
    finally:
        store.conn.close()


@pytest.mark.parametrize("mode", ["http+auth", "mtls+auth"])
def test_an_expired_token_is_renewed_for_calls_keep_alives_and_watches(request, auth: Auth, mode: str) -> None:
    """Each round waits past the token's TTL, then: a keep-alive, a write, a new watch (its
    create is refused for the old token), an event on the first watch (which outlives the
    token). Without re-authentication the first call of round 1 fails."""
    cluster: Cluster = request.getfixturevalue("auth_http" if mode == "http+auth" else "auth_mtls")
    prefix = f"{ROOT}/ttl-{mode.replace('+', '-')}-{time.monotonic_ns()}"
    store = LeaseRegistry(EtcdConnection(settings_for(cluster, auth)), prefix)
    cancels = []
    try:
        store.put_config(NetworkConfig.from_dict({"Network": "10.9.0.0/16", "Backend": {"Type": "host-gw"}}), 0)
        lease = acquire(store, AcquireRequest(attrs("192.0.2.10"), ttl=60)).lease
        first, cancel = store.watch(store.list_leases().revision + 1)
        cancels.append(cancel)
        for round_ in range(4):
            time.sleep(TOKEN_TTL + 1.5)
            store.refresh(lease)  # the keep-alive stream
            revision = store.list_leases().revision
            time.sleep(TOKEN_TTL + 1.5)
            fresh, cancel = store.watch(revision + 1)
            cancels.append(cancel)
            key = f"10.9.{100 + round_}.0-24"
            cluster.etcdctl("put", f"{prefix}/subnets/{key}", '{"PublicIP":"192.0.2.1","BackendType":"host-gw"}')
            for batches in (first, fresh):
                batch = next(batches)
                assert [store.decode_event(event, batch.revision).key for event in batch.events] == [key]
        assert store.remaining(lease) > 50
    finally:
        for cancel in cancels:
            cancel()
        store.conn.close()


def _error(settings: EtcdSettings, prefix: str = f"{ROOT}/errors") -> FlannelError:
    conn = EtcdConnection(settings)
    try:
        with pytest.raises(FlannelError) as caught:
            LeaseRegistry(conn, prefix).read_config_raw()
    finally:
        conn.close()
    return caught.value


def _check(error: FlannelError, kind: type[FlannelError], url: str, auth: Auth, *parts: str) -> None:
    text = str(error)
    assert isinstance(error, kind), text
    assert url in text, text
    assert all(part in text for part in parts), text
    assert auth.password not in text and auth.password not in repr(error)


def test_wrong_ca(auth: Auth, auth_mtls: Cluster, bad: BadCerts) -> None:
    error = _error(settings_for(auth_mtls, auth, ca_file=str(bad.other_ca)))
    _check(error, EtcdUnavailableError, auth_mtls.endpoint, auth, "not signed by the CA in etcd_ca_file",
           "set etcd_ca_file")


def test_expired_client_certificate(auth: Auth, auth_mtls: Cluster, bad: BadCerts) -> None:
    cert, key = bad.expired_client
    error = _error(settings_for(auth_mtls, auth, cert_file=str(cert), key_file=str(key)))
    _check(error, EtcdUnavailableError, auth_mtls.endpoint, auth, "refused the client certificate",
           f"etcd_cert_file {cert}", "it expired on")


def test_no_client_certificate_where_one_is_required(auth: Auth, auth_mtls: Cluster) -> None:
    error = _error(settings_for(auth_mtls, auth, cert_file=None, key_file=None))
    _check(error, EtcdUnavailableError, auth_mtls.endpoint, auth, "requires a client certificate",
           "set etcd_cert_file and etcd_key_file")


def test_expired_server_certificate(auth: Auth, auth_mtls: Cluster, bad_servers: dict[str, Cluster]) -> None:
    server = bad_servers["expired"]
    error = _error(settings_for(auth_mtls, auth, endpoints=(server.endpoint,)))
    _check(error, EtcdUnavailableError, server.endpoint, auth, "server certificate", "has expired")


def test_server_certificate_for_another_host(auth: Auth, auth_mtls: Cluster,
                                             bad_servers: dict[str, Cluster]) -> None:
    server = bad_servers["wrong-host"]
    error = _error(settings_for(auth_mtls, auth, endpoints=(server.endpoint,)))
    _check(error, EtcdUnavailableError, server.endpoint, auth, "does not name that host", "etcd_endpoints")


@pytest.mark.parametrize("fixture", ["auth_http", "auth_mtls"])
def test_wrong_password(request, auth: Auth, fixture: str) -> None:
    cluster: Cluster = request.getfixturevalue(fixture)
    wrong = auth.password[::-1] + "x"
    error = _error(settings_for(cluster, auth, password=wrong))
    _check(error, EtcdSetupError, cluster.endpoint, auth, "rejected the credentials", repr(auth.user),
           "check etcd_username/etcd_password")
    assert wrong not in str(error)


def test_a_user_without_permission_on_the_prefix(auth: Auth, auth_http: Cluster) -> None:
    error = _error(settings_for(auth_http, auth), prefix="/elsewhere/network")
    _check(error, EtcdSetupError, auth_http.endpoint, auth, "denied", repr(auth.user), "etcd_prefix")


def test_http_against_an_https_member(auth: Auth, auth_mtls: Cluster) -> None:
    url = auth_mtls.endpoint.replace("https://", "http://")
    error = _error(settings_for(auth_mtls, auth, endpoints=(url,), cert_file=None, key_file=None))
    _check(error, EtcdUnavailableError, url, auth, "write the endpoint as https://", "etcd_ca_file")


def test_https_against_an_http_member(auth: Auth, auth_http: Cluster, auth_mtls: Cluster) -> None:
    url = auth_http.endpoint.replace("http://", "https://")
    assert auth_mtls.pki is not None
    error = _error(settings_for(auth_http, auth, endpoints=(url,), ca_file=str(auth_mtls.pki.ca)))
    _check(error, EtcdUnavailableError, url, auth, "does not speak TLS", "http://")
