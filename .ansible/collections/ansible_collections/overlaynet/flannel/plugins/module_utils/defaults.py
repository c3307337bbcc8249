"""Every default the engine, the modules and the agent share, defined once.

Backend-specific defaults (ports, VNI) live in each backend's SPEC (backends/<name>/).
"""

from __future__ import annotations

DEFAULT_ENDPOINTS: tuple[str, ...] = ("http://127.0.0.1:2379",)
DEFAULT_PREFIX = "/coreos.com/network"  # flanneld's --etcd-prefix
DEFAULT_ETCD_TIMEOUT = 5.0  # seconds one etcd request may take
DEFAULT_LEASE_TTL = 24 * 3600  # seconds; flannel's subnet lease TTL
DEFAULT_RENEW_MARGIN_MINUTES = 60  # flanneld's --subnet-lease-renew-margin
DEFAULT_SUBNET_FILE = "/run/flannel/subnet.env"
DEFAULT_BACKEND = "vxlan"  # what etcd_network_config writes when no backend is given
STORED_DEFAULT_BACKEND = "udp"  # what a stored config without Backend means (upstream's rule)
