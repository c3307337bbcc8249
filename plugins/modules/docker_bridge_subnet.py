#!/usr/bin/python
# Copyright: overlaynet.flannel contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: docker_bridge_subnet
short_description: Give docker's bridge the host's flannel subnet
version_added: 0.1.0
description:
  - Reads the subnet file written by M(overlaynet.flannel.flannel_lease) or the flannel agent (or takes
    explicit values) and points docker at it - C(bip), C(mtu) and C(ip-masq) in C(daemon.json), keeping every
    other key; and/or an environment file with C(DOCKER_OPTS) as C(mk-docker-opts.sh) writes it; and/or the
    bridge's address set over netlink right away.
  - C(ip-masq) is inverted as in C(mk-docker-opts.sh) - when flannel masquerades (C(FLANNEL_IPMASQ=true))
    docker gets C(--ip-masq=false).
  - Docker reads these settings only when it starts; RV(restart_required) says when it must be restarted.
options:
  subnet_file:
    description:
      - The flannel subnet file to read; values given explicitly below take precedence.
    type: path
    default: /run/flannel/subnet.env
  subnet:
    description:
      - The bridge address and prefix (C(FLANNEL_SUBNET), for example V(10.5.72.1/24)). A network address
        (V(10.5.72.0/24)) is turned into its first host address.
    type: str
  mtu:
    description:
      - MTU for docker's containers (C(FLANNEL_MTU)).
    type: int
  ip_masq:
    description:
      - Whether flannel masquerades (C(FLANNEL_IPMASQ)); docker gets the inverse.
    type: bool
  bridge:
    description:
      - Name of docker's bridge.
    type: str
    default: docker0
  daemon_json:
    description:
      - Path of docker's C(daemon.json), or V(false) to leave it alone.
    type: raw
    default: /etc/docker/daemon.json
  docker_opts_file:
    description:
      - Write an environment file like C(mk-docker-opts.sh -d) (for example V(/run/docker_opts.env)).
    type: path
  docker_opts_key:
    description:
      - Name of the combined variable (C(mk-docker-opts.sh -k)).
    type: str
    default: DOCKER_OPTS
  docker_opts_mode:
    description:
      - V(individual) writes C(DOCKER_OPT_BIP), C(DOCKER_OPT_IPMASQ), C(DOCKER_OPT_MTU) (C(-i)); V(combined) only
        the combined variable (C(-c)); V(both) both.
    type: str
    choices: [both, individual, combined]
    default: both
  docker_opts_ip_masq:
    description:
      - Include the ip-masq option in the environment file (V(false) is C(mk-docker-opts.sh -m)).
    type: bool
    default: true
  dockerd_unit:
    description:
      - Path of docker's vendor unit file (its C(FragmentPath), not a drop-in); its C(ExecStart), with the
        vendor's arguments and without C($DOCKER_OPTS), is returned as RV(dockerd_command) - for a drop-in
        that starts the same dockerd (C(/usr/sbin/dockerd) of docker.io, C(/usr/bin/dockerd) of docker-ce)
        with C($DOCKER_OPTS).
    type: path
  configure_bridge:
    description:
      - Also give the bridge its address now over netlink, creating the bridge when docker has not yet.
        Other IPv4 addresses on it are removed.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Reports what would change without writing files or touching the bridge.
  diff_mode:
    support: full
    description: Shows the files before and after.
requirements:
  - netaddr
  - pyroute2
author:
  - Overlaynet Flannel Team (@overlaynet)
"""

EXAMPLES = r"""
- name: Point docker at the lease through daemon.json
  overlaynet.flannel.docker_bridge_subnet:
  register: bridge

- name: Restart docker when it must
  ansible.builtin.service:
    name: docker
    state: restarted
  when: bridge.restart_required

- name: Hosts started the seed's way, with DOCKER_OPTS in a unit's EnvironmentFile
  overlaynet.flannel.docker_bridge_subnet:
    daemon_json: false
    docker_opts_file: /run/docker_opts.env
"""

RETURN = r"""
bip:
  description: The bridge address given to docker.
  returned: success
  type: str
  sample: 10.5.72.1/24
mtu:
  description: The MTU given to docker.
  returned: success
  type: int
  sample: 1450
ip_masq:
  description: The ip-masq value given to docker (the inverse of FLANNEL_IPMASQ).
  returned: success
  type: bool
dockerd_command:
  description: The command line of O(dockerd_unit)'s C(ExecStart), without C($DOCKER_OPTS).
  returned: when O(dockerd_unit) is given
  type: str
  sample: /usr/bin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock
restart_required:
  description: True when docker must restart to use these settings (a file changed, or the running bridge
    carries another address).
  returned: success
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.parsing.convert_bool import BOOLEANS_FALSE

from ansible_collections.overlaynet.flannel.plugins.module_utils.defaults import DEFAULT_SUBNET_FILE
from ansible_collections.overlaynet.flannel.plugins.module_utils.deps import MISSING
from ansible_collections.overlaynet.flannel.plugins.module_utils.errors import FlannelError
from ansible_collections.overlaynet.flannel.plugins.module_utils.host.systemd_unit import read_unit_dockerd_command
from ansible_collections.overlaynet.flannel.plugins.module_utils.ops.docker_bridge import (
    DockerOptsFile,
    bridge_options,
    ensure_docker_bridge,
)


def _dockerd_command(module: AnsibleModule) -> str:
    try:
        return read_unit_dockerd_command(module.params["dockerd_unit"], module.params["docker_opts_key"])
    except FlannelError as exc:
        module.fail_json(msg=f"cannot take dockerd's command line from docker's unit: {exc}; give it "
                             "explicitly (docker_bridge_dockerd_command in the docker_bridge role)")
        raise  # fail_json exits; this keeps the type checker sure


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            subnet_file=dict(type="path", default=DEFAULT_SUBNET_FILE),
            subnet=dict(type="str"),
            mtu=dict(type="int"),
            ip_masq=dict(type="bool"),
            bridge=dict(type="str", default="docker0"),
            daemon_json=dict(type="raw", default="/etc/docker/daemon.json"),
            docker_opts_file=dict(type="path"),
            docker_opts_key=dict(type="str", default="DOCKER_OPTS", no_log=False),
            docker_opts_mode=dict(type="str", choices=["both", "individual", "combined"], default="both"),
            docker_opts_ip_masq=dict(type="bool", default=True),
            configure_bridge=dict(type="bool", default=False),
            dockerd_unit=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    for package in ("netaddr", "pyroute2"):
        if package in MISSING:
            module.fail_json(msg=missing_required_lib(package), exception=MISSING[package])
    p = module.params
    daemon_json = p["daemon_json"]
    if daemon_json is None or daemon_json is False or str(daemon_json).lower() in BOOLEANS_FALSE:
        daemon_json = None
    dockerd = _dockerd_command(module) if p["dockerd_unit"] else None  # before anything is written
    try:
        opts = bridge_options(p["subnet_file"], p["subnet"], p["mtu"], p["ip_masq"])
        docker_opts = DockerOptsFile(p["docker_opts_file"], p["docker_opts_key"], p["docker_opts_mode"],
                                     p["docker_opts_ip_masq"]) if p["docker_opts_file"] else None
        out = ensure_docker_bridge(opts, bridge=p["bridge"], daemon_json=daemon_json, docker_opts=docker_opts,
                                   configure_bridge=p["configure_bridge"], dry_run=module.check_mode)
    except FlannelError as exc:
        module.fail_json(msg=str(exc))
    result: dict[str, object] = dict(changed=out.changed, bip=out.bip, mtu=out.mtu, ip_masq=out.ip_masq,
                                     restart_required=out.restart_required, bridge_changed=out.bridge_changed)
    if dockerd is not None:
        result["dockerd_command"] = dockerd
    if module._diff:
        result["diff"] = [
            dict(before=change.before or "", after=change.after, before_header=change.path, after_header=change.path)
            for change in out.files if change.changed
        ]
    module.exit_json(**result)


if __name__ == "__main__":
    main()
