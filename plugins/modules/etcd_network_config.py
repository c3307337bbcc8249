#!/usr/bin/python
# Copyright: overlaynet.flannel contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: etcd_network_config
short_description: Manage the flannel network config in etcd
version_added: 0.1.0
description:
  - Writes, checks or removes the cluster network config at C(<etcd_prefix>/config), in the JSON format
    flannel reads.
  - The stored config is compared semantically, with flannel's defaults applied (for example an explicit
    C(SubnetLen) of 24 equals an omitted one on a /16), not as text.
  - A change of O(network), O(subnet_len) or the subnet range that would leave existing leases outside the
    new range is refused unless O(force=true).
  - The Backend section is always written explicitly (C(vxlan) unless told otherwise), because flannel
    reads a missing Backend as C(udp).
  - With O(import_v2=true) the config and the leases of a cluster set up the classic way (flannel up to v0.17,
    C(etcdctl set), the etcd v2 API) are copied from the v2 keyspace into v3, each lease with its subnet, so
    every host keeps its subnet when it is taken over.
options:
  state:
    description:
      - V(present) makes the stored config equal to the options; V(absent) deletes it (refused while leases
        exist, unless O(force=true)).
    type: str
    choices: [present, absent]
    default: present
  network:
    description:
      - The cluster network (IPv4 CIDR) from which every host leases a subnet, for example V(10.5.0.0/16).
      - Required when O(state=present), unless O(import_v2=true). A network longer than /28 is too small.
    type: str
  subnet_len:
    description:
      - Prefix length of each host's subnet. Default (flannel) 24 for a /22 or larger network, else the
        network's prefix + 2. At most 30, and at least the network's prefix + 2.
    type: int
  subnet_min:
    description:
      - First subnet that may be leased (default the second subnet of the network). Must be inside the
        network and aligned to O(subnet_len).
    type: str
  subnet_max:
    description:
      - Last subnet that may be leased (default the last subnet of the network).
    type: str
  backend:
    description:
      - The data plane flannel agents use.
    type: dict
    default: {}
    suboptions:
      type:
        description:
          - Backend type.
        type: str
        choices: [vxlan, host-gw, udp, wireguard]
        default: vxlan
      vni:
        description:
          - VXLAN network identifier (vxlan; flannel's default 1).
        type: int
      port:
        description:
          - UDP port (vxlan default 8472, udp default 8285).
        type: int
      direct_routing:
        description:
          - vxlan only; route directly (like host-gw) to peers on the same L2 network.
        type: bool
      listen_port:
        description:
          - wireguard only; the UDP port of C(flannel-wg) (upstream's C(ListenPort), default 51820).
        type: int
      psk:
        description:
          - wireguard only; a pre-shared key (C(wg genpsk)) every peer adds to its handshake (upstream's C(PSK)).
          - A secret; it is never shown in the task's output, and neither is one already stored.
        type: str
      persistent_keepalive_interval:
        description:
          - wireguard only; seconds between keepalives to each peer, 0 for none
            (upstream's C(PersistentKeepaliveInterval)).
        type: int
      mode:
        description:
          - wireguard only; upstream's C(Mode). V(ipv6) and IPv6 networks are not supported yet.
        type: str
        choices: [separate, auto, ipv4, ipv6]
  import_v2:
    description:
      - Take the config from C(<etcd_prefix>/config) in etcd's v2 keyspace (read over the v2 HTTP API,
        C(/v2/keys/...), on the same O(etcd_endpoints) with the same TLS files and credentials; etcd 3.x
        serves it when started with C(--enable-v2)) instead of from O(network) and the other options, which
        must then be left out. A v2 config without C(Backend) is imported as C(udp), what flannel ran it as.
      - Then copy every valid lease under C(<etcd_prefix>/subnets/) in v2 whose subnet lies in that config and
        is free in v3, with the TTL it had left (a key without TTL stays a reservation); leases already in v3
        for the same PublicIP are kept; the others are listed in RV(v2_import.skipped) with the reason.
      - Nothing is written to or deleted from the v2 keyspace.
    type: bool
    default: false
  force:
    description:
      - Overwrite a malformed stored config, strand existing leases, or delete the config while leases exist.
    type: bool
    default: false
extends_documentation_fragment:
  - overlaynet.flannel.etcd
attributes:
  check_mode:
    support: full
    description: Reports what would change without writing to etcd.
  diff_mode:
    support: full
    description: Shows the stored JSON before and after.
author:
  - Overlaynet Flannel Team (@overlaynet)
"""

EXAMPLES = r"""
- name: The cluster network, vxlan backend
  overlaynet.flannel.etcd_network_config:
    network: 10.5.0.0/16
    etcd_endpoints: ["https://10.0.0.10:2379", "https://10.0.0.11:2379"]
    etcd_ca_file: /etc/etcd/ca.pem

- name: host-gw with /26 subnets between two bounds
  overlaynet.flannel.etcd_network_config:
    network: 10.6.0.0/16
    subnet_len: 26
    subnet_min: 10.6.1.0
    subnet_max: 10.6.9.192
    backend:
      type: host-gw

- name: Remove the config (refused while hosts hold leases)
  overlaynet.flannel.etcd_network_config:
    state: absent

- name: Take over a cluster set up with etcdctl set (etcd started with --enable-v2), subnets and all
  overlaynet.flannel.etcd_network_config:
    import_v2: true
"""

RETURN = r"""
config:
  description: The config document as stored after the run (absent when deleted).
  returned: success
  type: dict
  sample: {"Network": "10.5.0.0/16", "Backend": {"Type": "vxlan"}}
effective:
  description: The stored config with every flannel default applied.
  returned: success
  type: dict
  sample: {"Network": "10.5.0.0/16", "SubnetLen": 24, "SubnetMin": "10.5.1.0", "SubnetMax": "10.5.255.0"}
digest:
  description:
    - A SHA-256 of RV(effective), secrets included; the agent's C(/stats) reports the digest of the config it
      runs as C(config_digest), so the two tell whether an agent follows this config even when a secret changed.
    - Reveals no secret. V(null) when no config is stored.
  returned: success
  type: str
  sample: 3f0c8d1e6a0b4f7c9d2e5a8b1c4f7e0a3d6b9c2e5f8a1b4c7d0e3f6a9b2c5d8e
stranded_leases:
  description: Lease keys that lie outside the new config (only with O(force=true)).
  returned: success
  type: list
  elements: str
v2_import:
  description: What O(import_v2=true) did with the v2 leases.
  returned: when O(import_v2=true)
  type: dict
  contains:
    imported:
      description: Lease keys copied into v3 (in check mode, those that would be).
      type: list
      elements: str
    kept:
      description: Lease keys already in v3 for the same PublicIP.
      type: list
      elements: str
    skipped:
      description: Leases not copied, each with C(key) and C(reason) (malformed, outside the network, held in v3
        by another PublicIP, expired).
      type: list
      elements: dict
  sample: {"imported": ["10.5.17.0-24", "10.5.38.0-24"], "kept": [], "skipped": []}
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.registry import BACKEND_TYPES
from ansible_collections.overlaynet.flannel.plugins.module_utils.defaults import DEFAULT_BACKEND
from ansible_collections.overlaynet.flannel.plugins.module_utils.deps import MISSING
from ansible_collections.overlaynet.flannel.plugins.module_utils.errors import FlannelError
from ansible_collections.overlaynet.flannel.plugins.module_utils.etcd.options import (
    ETCD_ARGUMENT_SPEC,
    etcd_settings,
    lease_registry,
)
from ansible_collections.overlaynet.flannel.plugins.module_utils.etcd.v2_keyspace import V2Keyspace
from ansible_collections.overlaynet.flannel.plugins.module_utils.ops.network_config import (
    desired_document,
    ensure_network_config,
)
from ansible_collections.overlaynet.flannel.plugins.module_utils.ops.v2_import import import_v2

CONFIG_OPTIONS = ("network", "subnet_len", "subnet_min", "subnet_max", "backend")


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            ETCD_ARGUMENT_SPEC,
            state=dict(type="str", choices=["present", "absent"], default="present"),
            network=dict(type="str"),
            subnet_len=dict(type="int"),
            subnet_min=dict(type="str"),
            subnet_max=dict(type="str"),
            backend=dict(
                type="dict",
                default={},
                options=dict(
                    type=dict(type="str", choices=list(BACKEND_TYPES), default=DEFAULT_BACKEND),
                    vni=dict(type="int"),
                    port=dict(type="int"),
                    direct_routing=dict(type="bool"),
                    listen_port=dict(type="int"),
                    psk=dict(type="str", no_log=True),
                    persistent_keepalive_interval=dict(type="int"),
                    mode=dict(type="str", choices=["separate", "auto", "ipv4", "ipv6"]),
                ),
            ),
            import_v2=dict(type="bool", default=False),
            force=dict(type="bool", default=False),
        ),
        # checked on the options as given (before defaults): the config comes from one place
        mutually_exclusive=[("import_v2", option) for option in CONFIG_OPTIONS],
        supports_check_mode=True,
    )
    for package in ("netaddr", "python3-etcd3"):
        if package in MISSING:
            module.fail_json(msg=missing_required_lib(package), exception=MISSING[package])
    p = module.params
    if p["state"] == "present" and not p["import_v2"] and p["network"] is None:
        module.fail_json(msg="state is present but network is missing (or set import_v2: true)")
    if p["state"] == "absent" and p["import_v2"]:
        module.fail_json(msg="import_v2 imports a config: it goes with state present")
    desired = None
    if p["state"] == "present" and not p["import_v2"]:
        desired = desired_document(p["network"], p["subnet_len"], p["subnet_min"], p["subnet_max"], p["backend"])
    leases = None
    try:
        with lease_registry(p) as registry:
            if p["import_v2"]:
                v2 = V2Keyspace(etcd_settings(p), p["etcd_prefix"])
                outcome, leases = import_v2(registry, v2, p["force"], module.check_mode)
            else:
                outcome = ensure_network_config(registry, p["state"], desired, p["force"], module.check_mode)
    except FlannelError as exc:
        module.fail_json(msg=str(exc))
    module.no_log_values.update(outcome.secrets)  # a PSK stored before, not given as an option
    result = dict(changed=outcome.changed, config=outcome.config, effective=outcome.effective,
                  digest=outcome.digest, stranded_leases=outcome.stranded)
    if leases is not None:
        result["v2_import"] = leases.to_dict()
    if module._diff and outcome.changed:
        result["diff"] = dict(before=(outcome.before or "") + "\n", after=(outcome.after or "") + "\n",
                              before_header=registry.conn.endpoint.url, after_header=registry.conn.endpoint.url)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
