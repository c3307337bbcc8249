"""docker_options: daemon.json merge and the env file of flannel's dist/mk-docker-opts.sh.

The expected env files below are what upstream's mk-docker-opts.sh (flannel-io/flannel
dist/, the POSIX-sh version whose own tests are dist/mk_docker_opts_test.go) writes. They were
produced by running that script, under both bash and dash, with `-f subnet.env -d out` plus
the flags shown, on the subnet.env given here; upstream's test vectors (for 10.1.74.1/24, MTU
1472) have the same shape. The script itself is not stored in this repository.

Notice the combined variable: the script builds it as `"$docker_opts $OPT_VALUE"`, so it
starts with a space and has none at the end: DOCKER_OPTS=" --bip=... --mtu=1450".
"""

from __future__ import annotations

import json

import pytest

from ansible_collections.overlaynet.flannel.plugins.module_utils.errors import HostNetworkError
from ansible_collections.overlaynet.flannel.plugins.module_utils.host.docker_options import (
    DOCKER_OPTS_MODES,
    DockerBridgeOptions,
    merge_daemon_json,
    render_docker_opts,
)

SUBNET = "10.5.72.1/24"
MTU = 1450


def _subnet_env(flannel_ipmasq: bool) -> str:
    return (f"FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET={SUBNET}\nFLANNEL_MTU={MTU}\n"
            f"FLANNEL_IPMASQ={'true' if flannel_ipmasq else 'false'}\n")


# (FLANNEL_IPMASQ, script flags, render_docker_opts kwargs, the script's output)
SCRIPT_CASES = [
    (False, [], {},
     'DOCKER_OPT_BIP="--bip=10.5.72.1/24"\nDOCKER_OPT_IPMASQ="--ip-masq=true"\nDOCKER_OPT_MTU="--mtu=1450"\n'
     'DOCKER_OPTS=" --bip=10.5.72.1/24 --ip-masq=true --mtu=1450"\n'),
    (True, [], {},
     'DOCKER_OPT_BIP="--bip=10.5.72.1/24"\nDOCKER_OPT_IPMASQ="--ip-masq=false"\nDOCKER_OPT_MTU="--mtu=1450"\n'
     'DOCKER_OPTS=" --bip=10.5.72.1/24 --ip-masq=false --mtu=1450"\n'),
    (False, ["-i"], {"mode": "individual"},
     'DOCKER_OPT_BIP="--bip=10.5.72.1/24"\nDOCKER_OPT_IPMASQ="--ip-masq=true"\nDOCKER_OPT_MTU="--mtu=1450"\n'),
    (True, ["-i"], {"mode": "individual"},
     'DOCKER_OPT_BIP="--bip=10.5.72.1/24"\nDOCKER_OPT_IPMASQ="--ip-masq=false"\nDOCKER_OPT_MTU="--mtu=1450"\n'),
    (False, ["-i", "-m"], {"mode": "individual", "include_ip_masq": False},
     'DOCKER_OPT_BIP="--bip=10.5.72.1/24"\nDOCKER_OPT_MTU="--mtu=1450"\n'),
    (False, ["-c"], {"mode": "combined"},
     'DOCKER_OPTS=" --bip=10.5.72.1/24 --ip-masq=true --mtu=1450"\n'),
    (True, ["-c"], {"mode": "combined"},
     'DOCKER_OPTS=" --bip=10.5.72.1/24 --ip-masq=false --mtu=1450"\n'),
    (False, ["-i", "-c"], {"mode": "both"},
     'DOCKER_OPT_BIP="--bip=10.5.72.1/24"\nDOCKER_OPT_IPMASQ="--ip-masq=true"\nDOCKER_OPT_MTU="--mtu=1450"\n'
     'DOCKER_OPTS=" --bip=10.5.72.1/24 --ip-masq=true --mtu=1450"\n'),
    (False, ["-k", "CUSTOM_KEY"], {"key": "CUSTOM_KEY"},
     'DOCKER_OPT_BIP="--bip=10.5.72.1/24"\nDOCKER_OPT_IPMASQ="--ip-masq=true"\nDOCKER_OPT_MTU="--mtu=1450"\n'
     'CUSTOM_KEY=" --bip=10.5.72.1/24 --ip-masq=true --mtu=1450"\n'),
    (False, ["-m"], {"include_ip_masq": False},
     'DOCKER_OPT_BIP="--bip=10.5.72.1/24"\nDOCKER_OPT_MTU="--mtu=1450"\n'
     'DOCKER_OPTS=" --bip=10.5.72.1/24 --mtu=1450"\n'),
    (True, ["-m"], {"include_ip_masq": False},
     'DOCKER_OPT_BIP="--bip=10.5.72.1/24"\nDOCKER_OPT_MTU="--mtu=1450"\n'
     'DOCKER_OPTS=" --bip=10.5.72.1/24 --mtu=1450"\n'),
    (False, ["-c", "-m", "-k", "DOCKER_NETWORK_OPTIONS"],
     {"mode": "combined", "include_ip_masq": False, "key": "DOCKER_NETWORK_OPTIONS"},
     'DOCKER_NETWORK_OPTIONS=" --bip=10.5.72.1/24 --mtu=1450"\n'),
]


def _ids(case) -> str:
    masq, flags = case[0], case[1]
    return f"ipmasq={str(masq).lower()} {' '.join(flags) or '(default)'}"


def _params():
    for case in SCRIPT_CASES:
        yield pytest.param(*case, id=_ids(case))


def _render(flannel_ipmasq: bool, kwargs: dict) -> str:
    return render_docker_opts(DockerBridgeOptions.from_flannel(SUBNET, MTU, flannel_ipmasq), **kwargs)


@pytest.mark.parametrize(("flannel_ipmasq", "flags", "kwargs", "expected"), list(_params()))
def test_byte_for_byte_like_mk_docker_opts(flannel_ipmasq, flags, kwargs, expected):
    assert _render(flannel_ipmasq, kwargs) == expected


def _parse(text: str) -> dict[str, list[str]]:
    """name -> the words of its value (what a shell or systemd's EnvironmentFile would split)."""
    out = {}
    for line in text.splitlines():
        name, _unused, value = line.partition("=")
        assert value.startswith('"') and value.endswith('"'), line
        out[name] = value[1:-1].split()
    return out


@pytest.mark.parametrize(("flannel_ipmasq", "flags", "kwargs", "expected"), SCRIPT_CASES,
                         ids=[_ids(c) for c in SCRIPT_CASES])
def test_same_variables_and_words_as_mk_docker_opts(flannel_ipmasq, flags, kwargs, expected):
    got = _render(flannel_ipmasq, kwargs)
    assert list(_parse(got)) == list(_parse(expected))  # same variables, same order
    assert _parse(got) == _parse(expected)
    assert got.endswith("\n") and not got.endswith("\n\n")


@pytest.mark.parametrize(("flannel_ipmasq", "docker_ipmasq"), [(True, False), (False, True)])
def test_ip_masq_is_inverted(flannel_ipmasq, docker_ipmasq):
    opts = DockerBridgeOptions.from_flannel(SUBNET, MTU, flannel_ipmasq)
    assert opts.docker_ip_masq is docker_ipmasq
    assert (opts.bip, opts.mtu) == (SUBNET, MTU)
    assert f'DOCKER_OPT_IPMASQ="--ip-masq={str(docker_ipmasq).lower()}"' in render_docker_opts(opts)


@pytest.mark.parametrize("mode", ["all", "", "Both", "-i", None])
def test_unknown_mode_is_an_error(mode):
    with pytest.raises(HostNetworkError) as info:
        render_docker_opts(DockerBridgeOptions.from_flannel(SUBNET, MTU, False), mode=mode)
    message = str(info.value)
    assert repr(mode) in message
    for allowed in DOCKER_OPTS_MODES:
        assert allowed in message


def test_modes():
    assert set(DOCKER_OPTS_MODES) == {"both", "individual", "combined"}


def _opts(flannel_ipmasq: bool = False) -> DockerBridgeOptions:
    return DockerBridgeOptions.from_flannel(SUBNET, MTU, flannel_ipmasq)


def test_merge_keeps_other_keys_and_sets_ours():
    existing = json.dumps({"log-driver": "journald", "storage-driver": "overlay2", "bip": "172.17.0.1/16",
                           "mtu": 1500, "ip-masq": False, "registry-mirrors": ["https://m.example"]}, indent=4)
    doc, text = merge_daemon_json(existing, _opts(False), "/etc/docker/daemon.json")
    assert doc == {"log-driver": "journald", "storage-driver": "overlay2", "bip": SUBNET, "mtu": MTU,
                   "ip-masq": True, "registry-mirrors": ["https://m.example"]}
    assert json.loads(text) == doc
    assert text.endswith("\n")


@pytest.mark.parametrize("existing", [None, "", "  \n"])
def test_merge_without_a_file(existing):
    doc, text = merge_daemon_json(existing, _opts(True), "/etc/docker/daemon.json")
    assert doc == {"bip": SUBNET, "mtu": MTU, "ip-masq": False}
    assert json.loads(text) == doc


def test_merge_types_are_json_types():
    _unused, text = merge_daemon_json(None, _opts(False), "/etc/docker/daemon.json")
    assert '"mtu": 1450' in text and '"ip-masq": true' in text and '"bip": "10.5.72.1/24"' in text


def test_merge_is_idempotent():
    _unused, first = merge_daemon_json('{"debug": true}', _opts(), "/x/daemon.json")
    doc, second = merge_daemon_json(first, _opts(), "/x/daemon.json")
    assert second == first
    assert doc == {"debug": True, "bip": SUBNET, "mtu": MTU, "ip-masq": True}


@pytest.mark.parametrize("existing", ["{", "{'bip': 1}", '{"a": 1,}', "not json"])
def test_invalid_json_names_the_path(existing):
    with pytest.raises(HostNetworkError) as info:
        merge_daemon_json(existing, _opts(), "/etc/docker/daemon.json")
    assert "/etc/docker/daemon.json" in str(info.value)
    assert "JSON" in str(info.value)


@pytest.mark.parametrize("existing", ["[]", '["bip"]', "null", "42", '"text"'])
def test_non_object_names_the_path(existing):
    with pytest.raises(HostNetworkError) as info:
        merge_daemon_json(existing, _opts(), "/srv/docker/daemon.json")
    assert "/srv/docker/daemon.json" in str(info.value)
    assert "object" in str(info.value)
