"""Run one host's udp backend until SIGTERM (started inside the host's namespace by the tests).

No etcd: leases are built by hand from JSON lines on stdin, one command per line:
  {"op": "add_peer", "subnet": "10.7.2.0/24", "public_ip": "192.168.81.12", "fast": true}
  {"op": "remove_peer", "subnet": "10.7.2.0/24", "public_ip": "192.168.81.12"}
  {"op": "reconcile", "peers": [{"subnet": ..., "public_ip": ..., "fast": ...}, ...]}
  {"op": "stats"}
Each command is answered with one JSON line on stdout ({"ok": ..., "stats": ...}); the first
line printed is {"ready": true, "setup": {...}} once setup() and activate() are done.
A peer with "fast": false has a lease without BackendData, as upstream flanneld writes it.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "build" / "collections"))

import netaddr  # noqa: E402
from pyroute2 import IPRoute  # noqa: E402

from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.base import LocalHost  # noqa: E402
from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.udp.backend import (  # noqa: E402
    UdpBackend,
    fast_path_data,
)
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.config import NetworkConfig  # noqa: E402
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.lease import Lease, LeaseAttrs  # noqa: E402


def lease(doc: dict[str, Any]) -> Lease:
    fast = bool(doc.get("fast"))
    attrs = LeaseAttrs(doc["public_ip"], None, "udp" if fast else "", fast_path_data() if fast else None)
    return Lease(netaddr.IPNetwork(doc["subnet"]), attrs, etcd_lease_id=1)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--network", required=True)
    parser.add_argument("--subnet", required=True)
    parser.add_argument("--public-ip", required=True)
    parser.add_argument("--iface", default="eth0")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--plain", action="store_true", help="no vnet header, no fast path (like flanneld)")
    parser.add_argument("--state-file")
    args = parser.parse_args()

    backend_doc: dict[str, Any] = {"Type": "udp"}
    if args.port:
        backend_doc["Port"] = args.port
    config = NetworkConfig.from_dict({"Network": args.network, "Backend": backend_doc})
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=args.iface)[0]
        mtu = ipr.get_links(index)[0].get("mtu")
    host = LocalHost(args.public_ip, args.iface, index, mtu)
    backend = UdpBackend(config, host, gso=not args.plain, state_file=args.state_file)

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        setup = backend.setup(config, host)
        backend.activate(netaddr.IPNetwork(args.subnet))
        ready = {"backend_type": setup.backend_type, "backend_data": setup.backend_data, "mtu": setup.mtu}
        print(json.dumps({"ready": True, "setup": ready}), flush=True)
        for line in sys.stdin:
            if not line.strip():
                continue
            cmd = json.loads(line)
            op = cmd["op"]
            if op == "add_peer":
                backend.add_peer(lease(cmd))
            elif op == "remove_peer":
                backend.remove_peer(lease(cmd))
            elif op == "reconcile":
                peers = [lease(p) for p in cmd["peers"]]
                backend.reconcile({p.key: p for p in peers})
            elif op != "stats":
                print(json.dumps({"ok": False, "error": f"unknown op {op}"}), flush=True)
                continue
            print(json.dumps({"ok": True, "stats": backend.stats()}), flush=True)
        signal.pause()  # stdin closed: keep forwarding until SIGTERM
    finally:
        backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
