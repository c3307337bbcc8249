"""The agent's flags: flanneld's names, FLANNELD_* environment, command line wins."""

from __future__ import annotations

import pytest

from ansible_collections.overlaynet.flannel.plugins.module_utils.agent import flags


def parse(argv: list[str], env: dict[str, str] | None = None):
    return flags.parse(argv, env or {})


def test_defaults_are_flanneld_defaults():
    opts = parse([])
    assert opts.etcd_endpoints == ["http://127.0.0.1:2379"]
    assert opts.etcd_prefix == "/coreos.com/network"
    assert opts.subnet_file == "/run/flannel/subnet.env"
    assert opts.ip_masq is False
    assert opts.iptables_forward_rules is True
    assert opts.subnet_lease_renew_margin == 60
    assert opts.healthz_ip == "0.0.0.0"
    assert opts.healthz_port == 0
    assert opts.iface == []
    assert opts.public_ip is None
    assert opts.reconcile_interval == 2.0
    assert opts.subnet_lease_ttl == 86400


def test_environment_sets_every_flag_and_command_line_wins():
    env = {
        "FLANNELD_ETCD_ENDPOINTS": "http://10.0.0.1:2379,http://10.0.0.2:2379",
        "FLANNELD_ETCD_PREFIX": "/env/network",
        "FLANNELD_IP_MASQ": "true",
        "FLANNELD_SUBNET_LEASE_RENEW_MARGIN": "30",
        "FLANNELD_HEALTHZ_PORT": "8471",
        "FLANNELD_IFACE": "eth1",
        "FLANNELD_ETCD_PASSWORD": "s3cret",
    }
    opts = parse([], env)
    assert opts.etcd_endpoints == ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
    assert opts.etcd_prefix == "/env/network"
    assert opts.ip_masq is True
    assert opts.subnet_lease_renew_margin == 30
    assert opts.healthz_port == 8471
    assert opts.iface == ["eth1"]
    assert opts.etcd_password == "s3cret"

    opts = parse(["--etcd-endpoints=http://10.9.9.9:2379", "--etcd-prefix", "/cli/network", "--ip-masq=false",
                  "--subnet-lease-renew-margin", "5", "--healthz-port=0"], env)
    assert opts.etcd_endpoints == ["http://10.9.9.9:2379"]
    assert opts.etcd_prefix == "/cli/network"
    assert opts.ip_masq is False
    assert opts.subnet_lease_renew_margin == 5
    assert opts.healthz_port == 0
    assert opts.iface == ["eth1"]  # not on the command line: the environment still counts


@pytest.mark.parametrize(("argv", "expected"), [
    (["--ip-masq"], True),
    (["--ip-masq=true"], True),
    (["--ip-masq=TRUE"], True),
    (["--ip-masq=1"], True),
    (["--ip-masq=false"], False),
    (["--ip-masq=0"], False),
    (["--ip-masq", "false"], False),
    (["-ip-masq"], True),  # Go's single-dash style
    (["-ip-masq=false"], False),
    ([], False),
])
def test_boolean_forms(argv, expected):
    assert parse(argv).ip_masq is expected


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("1", True), ("yes", True),
                                                 ("false", False), ("0", False), ("off", False)])
def test_boolean_from_environment(value, expected):
    assert parse([], {"FLANNELD_IP_MASQ": value}).ip_masq is expected
    assert parse([], {"FLANNELD_IPTABLES_FORWARD_RULES": value}).iptables_forward_rules is expected


def test_lists_split_on_commas_and_repeat():
    opts = parse(["--etcd-endpoints", "http://a:2379, http://b:2379", "--etcd-endpoints=http://c:2379",
                  "--iface", "eth0", "--iface=eth1,eth2"])
    assert opts.etcd_endpoints == ["http://a:2379", "http://b:2379", "http://c:2379"]
    assert opts.iface == ["eth0", "eth1", "eth2"]


def test_the_underlay_flags_as_flanneld_has_them():
    opts = parse(["--iface", "eth1", "--iface=192.168.82.11", "--iface-regex", r"^192\.168\.8[12]{1,2}\.",
                  "-iface-regex=^bond", "--iface-can-reach", "10.0.0.10", "--public-ip", "203.0.113.7",
                  "--public-ipv6", "2001:db8::7"])
    assert opts.iface == ["eth1", "192.168.82.11"]
    assert opts.iface_regex == [r"^192\.168\.8[12]{1,2}\.", "^bond"]  # a comma does not split a regex
    assert (opts.iface_can_reach, opts.public_ip, opts.public_ipv6) == ("10.0.0.10", "203.0.113.7", "2001:db8::7")
    choice = flags.underlay_choice(opts)
    assert choice.ifaces == ("eth1", "192.168.82.11") and choice.regexes == tuple(opts.iface_regex)
    from_env = parse([], {"FLANNELD_IFACE_REGEX": "^10\\.(1|2),?", "FLANNELD_IFACE_CAN_REACH": "10.0.0.10",
                          "FLANNELD_PUBLIC_IPV6": "fd00::1"})
    assert from_env.iface_regex == ["^10\\.(1|2),?"]
    assert (from_env.iface_can_reach, from_env.public_ipv6) == ("10.0.0.10", "fd00::1")
    assert parse([]).iface_regex == [] and parse([]).iface_can_reach is None


@pytest.mark.parametrize(("argv", "env", "says"), [
    (["--iface-regex", "(eth"], {}, "iface-regex '(eth' is not a valid regular expression"),
    ([], {"FLANNELD_IFACE_REGEX": "[0-"}, "iface-regex '[0-' is not a valid regular expression"),
    (["--iface-can-reach", "etcd1"], {}, "iface-can-reach 'etcd1' is not an IP address"),
    (["--public-ip", "10.0.0.256"], {}, "public-ip '10.0.0.256' is not an IPv4 address"),
    (["--public-ipv6", "10.0.0.1"], {}, "public-ipv6 '10.0.0.1' is not an IPv6 address"),
    (["--iface", "eth0 eth1"], {}, "iface 'eth0 eth1' is neither an IP address nor an interface name"),
], ids=["regex", "regex-env", "can-reach", "public-ip", "public-ipv6", "iface"])
def test_a_bad_underlay_flag_is_a_usage_error(capsys, argv, env, says):
    """Exit 2 (the unit does not restart on it), never a traceback."""
    with pytest.raises(SystemExit) as exc:
        parse(argv, env)
    assert exc.value.code == 2
    assert says in capsys.readouterr().err


def test_go_style_single_dash_flags_as_in_old_units():
    opts = parse(["-etcd-endpoints=http://10.1.1.1:2379", "-etcd-prefix", "/old/network", "-iface=eth0",
                  "-v=2"])
    assert opts.etcd_endpoints == ["http://10.1.1.1:2379"]
    assert opts.etcd_prefix == "/old/network"
    assert opts.iface == ["eth0"]
    assert opts.v == 2


def test_bad_values_name_the_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        parse(["--ip-masq=maybe"])
    assert exc.value.code == 2
    assert "--ip-masq" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(["--healthz-port", "http"])
    assert "--healthz-port" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(["--healthz-port", "70000"])
    assert "70000" in capsys.readouterr().err


def test_bad_environment_values_name_the_variable(capsys):
    with pytest.raises(SystemExit):
        parse([], {"FLANNELD_IP_MASQ": "sometimes"})
    err = capsys.readouterr().err
    assert "FLANNELD_IP_MASQ" in err and "sometimes" in err
    with pytest.raises(SystemExit):
        parse([], {"FLANNELD_SUBNET_LEASE_RENEW_MARGIN": "0"})
    assert "FLANNELD_SUBNET_LEASE_RENEW_MARGIN" in capsys.readouterr().err


def test_empty_endpoint_list_is_refused(capsys):
    with pytest.raises(SystemExit):
        parse(["--etcd-endpoints="])
    assert "etcd-endpoints" in capsys.readouterr().err


def test_every_flag_has_its_environment_name():
    names = {flag.env for flag in flags.FLAGS}
    for expected in ("FLANNELD_ETCD_ENDPOINTS", "FLANNELD_ETCD_PREFIX", "FLANNELD_ETCD_CAFILE",
                     "FLANNELD_ETCD_CERTFILE", "FLANNELD_ETCD_KEYFILE", "FLANNELD_ETCD_USERNAME",
                     "FLANNELD_ETCD_PASSWORD", "FLANNELD_IFACE", "FLANNELD_PUBLIC_IP", "FLANNELD_SUBNET_FILE",
                     "FLANNELD_IP_MASQ", "FLANNELD_SUBNET_LEASE_RENEW_MARGIN", "FLANNELD_HEALTHZ_IP",
                     "FLANNELD_HEALTHZ_PORT", "FLANNELD_IFACE_REGEX", "FLANNELD_IFACE_CAN_REACH",
                     "FLANNELD_PUBLIC_IPV6"):
        assert expected in names


def test_the_password_is_masked_in_reprs_and_its_source_recorded():
    from_env = flags.parse([], {"FLANNELD_ETCD_PASSWORD": "s3cret-env"})
    assert from_env.etcd_password == "s3cret-env"
    assert "s3cret-env" not in repr(from_env)
    assert from_env.etcd_password_in_argv is False
    from_argv = flags.parse(["-etcd-password=s3cret-argv"], {"FLANNELD_ETCD_PASSWORD": "s3cret-env"})
    assert from_argv.etcd_password == "s3cret-argv"  # the command line still wins
    assert "s3cret" not in repr(from_argv)
    assert from_argv.etcd_password_in_argv is True
    assert flags.parse([], {}).etcd_password_in_argv is False
