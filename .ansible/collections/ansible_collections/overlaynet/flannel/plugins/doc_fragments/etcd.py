# Copyright: overlaynet.flannel contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # The etcd connection options shared by every module of this collection.
    DOCUMENTATION = r"""
options:
  etcd_endpoints:
    description:
      - etcd client URLs (C(http://) or C(https://)); when one does not answer the next is tried.
    type: list
    elements: str
    default: ['http://127.0.0.1:2379']
  etcd_prefix:
    description:
      - Key prefix of the flannel network in etcd; the config is at C(<prefix>/config), leases under
        C(<prefix>/subnets/).
    type: str
    default: /coreos.com/network
  etcd_ca_file:
    description:
      - CA certificate (PEM) used to verify C(https://) endpoints. Without it the system CA bundle is used.
    type: path
  etcd_cert_file:
    description:
      - Client certificate (PEM) for etcd client-certificate authentication. Needs O(etcd_key_file).
    type: path
  etcd_key_file:
    description:
      - Private key (PEM) of O(etcd_cert_file).
    type: path
  etcd_username:
    description:
      - User name for etcd authentication.
    type: str
  etcd_password:
    description:
      - Password of O(etcd_username).
    type: str
  etcd_timeout:
    description:
      - Seconds to wait for each etcd endpoint before trying the next one and, after the last one, failing.
    type: float
    default: 5.0
requirements:
  - python3-etcd3 (PyPI) or Debian's python3-etcd3 (provides C(import etcd3))
  - netaddr
  - pyroute2
"""
