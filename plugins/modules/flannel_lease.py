#!/usr/bin/python
# Copyright: overlaynet.flannel contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: flannel_lease
short_description: Acquire, keep or release this host's flannel subnet lease
version_added: 0.1.0
description:
  - Gets this host a subnet of the cluster network from etcd, the way flanneld does, and writes
    C(/run/flannel/subnet.env).
  - A lease already holding this host's public IP is reused (when it still fits the config), else this
    host's own lease from before its public IP changed (the previous subnet file's subnet with this host's
    id; it is rewritten with the new IP), else the subnet of the previous subnet file (when free), else a
    random pick among the first 100 free subnets.
    A lost race with another host is retried with a new pick.
  - A second run on the same host keeps the same subnet and reports no change. The lease's backend data
    (for example the VTEP MAC the agent advertises) is kept as it is.
  - O(state=absent) deletes the host's lease(s); the subnet file is left in place, so a later
    acquisition gets the same subnet back if it is still free.
options:
  state:
    description:
      - V(present) acquires or keeps the lease; V(absent) releases it.
    type: str
    choices: [present, absent]
    default: present
  public_ip:
    description:
      - The address other hosts reach this host on (the lease's C(PublicIP)), as flanneld's C(--public-ip).
        Default the address of the interface chosen by O(iface), O(iface_regex) or O(iface_can_reach)
        (the one matched, else its first IPv4 address).
      - With none of those three, the interface holding this address is the underlay; when no interface
        holds it (the host is behind NAT), the default route's.
    type: str
  public_ipv6:
    description:
      - The IPv6 address other hosts reach this host on, stored as the lease's C(PublicIPv6) (flanneld's
        C(--public-ipv6)). Default none.
    type: str
  iface:
    description:
      - The underlay interface, as flanneld's C(--iface) - a name (V(eth1)) or an address of the interface
        (V(192.168.1.11)). Several are tried in order; the first that exists and has an IPv4 address wins.
      - With none of O(iface), O(iface_regex), O(iface_can_reach) the interface of the default route is used.
      - The chosen interface's MTU sets the default O(mtu).
    type: list
    elements: str
  iface_regex:
    description:
      - Regular expressions (Python syntax, unanchored), as flanneld's C(--iface-regex), tried in order when
        no O(iface) matched; each is matched against every interface's IPv4 addresses first, then against the
        interface names.
      - Give a YAML list; a plain string would be split at its commas by Ansible.
    type: list
    elements: str
  iface_can_reach:
    description:
      - An address (for example the etcd server's). The underlay is the interface, and the source address, of
        this host's route to it, as flanneld's C(--iface-can-reach). Used when neither O(iface) nor
        O(iface_regex) matched.
    type: str
  subnet:
    description:
      - Ask for this subnet (for example V(10.5.72.0/24)). It must be one the config can hand out and not
        be held by another host. A host that holds another subnet moves to this one.
    type: str
  reservation:
    description:
      - Store the lease without a TTL, as a reservation that never expires. An existing reservation stays
        one whatever this option says.
    type: bool
    default: false
  ttl:
    description:
      - Lifetime of the lease in seconds; it is renewed when less than half remains (half of this, or of
        the TTL the lease was granted by its holder, for example an agent with a shorter TTL).
    type: int
    default: 86400
  subnet_file:
    description:
      - Where to write the subnet environment file; an empty string writes none.
    type: str
    default: /run/flannel/subnet.env
  ip_masq:
    description:
      - Written as C(FLANNEL_IPMASQ); true when the flannel agent masquerades traffic leaving the overlay.
    type: bool
    default: false
  mtu:
    description:
      - Overlay MTU written as C(FLANNEL_MTU). Default the underlay MTU minus the backend's overhead
        (vxlan 50, udp 28, host-gw 0).
    type: int
  import_v2:
    description:
      - When v3 holds no lease for this host, ask for the subnet of its lease in etcd's v2 keyspace (a cluster
        set up with flannel up to v0.17; read over the v2 HTTP API of the same O(etcd_endpoints), etcd started
        with C(--enable-v2)) before the subnet of an existing O(subnet_file); it is taken if free in v3.
      - To move a whole cluster, C(overlaynet.flannel.etcd_network_config) with C(import_v2=true) copies every
        host's lease at once; this option is for one host.
    type: bool
    default: false
extends_documentation_fragment:
  - overlaynet.flannel.etcd
attributes:
  check_mode:
    support: full
    description: Computes the subnet it would take without writing to etcd or the subnet file.
  diff_mode:
    support: full
    description: Shows the subnet file before and after.
author:
  - Overlaynet Flannel Team (@overlaynet)
"""

EXAMPLES = r"""
- name: Lease a subnet and write /run/flannel/subnet.env
  overlaynet.flannel.flannel_lease:
    iface: eth1
    etcd_endpoints: ["http://10.0.0.10:2379"]

- name: Lease with the interface whose address is in 192.168.82.0/24, else the one named bond0
  overlaynet.flannel.flannel_lease:
    iface_regex: ['^192\.168\.82\.', '^bond0$']

- name: Lease with the interface of the route to the etcd server
  overlaynet.flannel.flannel_lease:
    iface_can_reach: 10.0.0.10

- name: Lease with eth1, advertising the address the NAT in front of this host maps to it
  overlaynet.flannel.flannel_lease:
    iface: eth1
    public_ip: 203.0.113.7

- name: Pin this host to a subnet, as a reservation
  overlaynet.flannel.flannel_lease:
    subnet: 10.5.72.0/24
    reservation: true

- name: Give the subnet back
  overlaynet.flannel.flannel_lease:
    state: absent
"""

RETURN = r"""
subnet:
  description: The leased subnet.
  returned: when state is present
  type: str
  sample: 10.5.72.0/24
network:
  description: The cluster network.
  returned: when state is present
  type: str
  sample: 10.5.0.0/16
mtu:
  description: The overlay MTU written to the subnet file.
  returned: when state is present
  type: int
  sample: 1450
public_ip:
  description: This host's public IP as stored in the lease.
  returned: success
  type: str
  sample: 192.168.81.11
lease_key:
  description: The etcd key of the lease.
  returned: when state is present
  type: str
  sample: /coreos.com/network/subnets/10.5.72.0-24
action:
  description: What was done - kept, renewed, updated, created, moved, released or absent.
  returned: success
  type: str
released:
  description: Keys of the released leases.
  returned: when state is absent
  type: list
  elements: str
ansible_facts:
  description: The lease as facts.
  returned: when state is present
  type: dict
  contains:
    flannel:
      description: network, subnet, bip (FLANNEL_SUBNET), mtu and ip_masq.
      type: dict
      returned: when state is present
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.overlaynet.flannel.plugins.module_utils.defaults import DEFAULT_LEASE_TTL, DEFAULT_SUBNET_FILE
from ansible_collections.overlaynet.flannel.plugins.module_utils.deps import MISSING
from ansible_collections.overlaynet.flannel.plugins.module_utils.errors import FlannelError
from ansible_collections.overlaynet.flannel.plugins.module_utils.etcd.options import (
    ETCD_ARGUMENT_SPEC,
    etcd_settings,
    lease_registry,
)
from ansible_collections.overlaynet.flannel.plugins.module_utils.etcd.v2_keyspace import V2Keyspace
from ansible_collections.overlaynet.flannel.plugins.module_utils.ops.lease import LeaseParams, ensure_lease


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            ETCD_ARGUMENT_SPEC,
            state=dict(type="str", choices=["present", "absent"], default="present"),
            public_ip=dict(type="str"),
            public_ipv6=dict(type="str"),
            iface=dict(type="list", elements="str"),
            iface_regex=dict(type="list", elements="str"),
            iface_can_reach=dict(type="str"),
            subnet=dict(type="str"),
            reservation=dict(type="bool", default=False),
            ttl=dict(type="int", default=DEFAULT_LEASE_TTL),
            subnet_file=dict(type="str", default=DEFAULT_SUBNET_FILE),
            ip_masq=dict(type="bool", default=False),
            mtu=dict(type="int"),
            import_v2=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    for package in ("netaddr", "python3-etcd3", "pyroute2"):
        if package in MISSING:
            module.fail_json(msg=missing_required_lib(package), exception=MISSING[package])
    p = module.params
    if p["ttl"] < 10:
        module.fail_json(msg=f"ttl {p['ttl']} is too short; use at least 10 seconds (flannel uses 86400)")
    try:
        with lease_registry(p) as registry:
            params = LeaseParams(
                state=p["state"], public_ip=p["public_ip"], public_ipv6=p["public_ipv6"],
                iface=tuple(p["iface"] or ()), iface_regex=tuple(p["iface_regex"] or ()),
                iface_can_reach=p["iface_can_reach"], subnet=p["subnet"],
                reservation=p["reservation"], ttl=p["ttl"], subnet_file=p["subnet_file"] or None,
                ip_masq=p["ip_masq"], mtu=p["mtu"], import_v2=p["import_v2"],
            )
            v2 = V2Keyspace(etcd_settings(p), p["etcd_prefix"]) if p["import_v2"] else None
            out = ensure_lease(registry, params, dry_run=module.check_mode, v2=v2)
    except FlannelError as exc:
        module.fail_json(msg=str(exc))
    result = dict(changed=out.changed, action=out.action, public_ip=out.public_ip)
    if p["state"] == "absent":
        result["released"] = out.released
        module.exit_json(**result)
    for warning in out.warnings:
        module.warn(warning)
    result.update(subnet=out.subnet, network=out.network, mtu=out.mtu, lease_key=out.lease_key,
                  reservation=out.reservation)
    result["ansible_facts"] = dict(flannel=dict(network=out.network, subnet=out.subnet, bip=out.bip, mtu=out.mtu,
                                                ip_masq=out.ip_masq, public_ip=out.public_ip))
    if module._diff and out.subnet_file_before != out.subnet_file_after:
        result["diff"] = dict(before=out.subnet_file_before or "", after=out.subnet_file_after or "",
                              before_header=p["subnet_file"], after_header=p["subnet_file"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
