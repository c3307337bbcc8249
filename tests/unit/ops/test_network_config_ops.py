"""network_config_ops.desired_document: module options -> flannel's config JSON.

DESIGN §3: our etcd_network_config always writes Backend explicitly, vxlan unless told
otherwise, because a stored config without Backend means udp to flannel.
"""

from __future__ import annotations

import copy
import json

import pytest

from ansible_collections.overlaynet.flannel.plugins.module_utils.ops.network_config import _secrets, desired_document
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.config import NetworkConfig

NET = "10.5.0.0/16"

# the backend dict exactly as AnsibleModule passes it: every suboption present, unset ones None
UNSET = {"type": "vxlan", "vni": None, "port": None, "direct_routing": None}


@pytest.mark.parametrize(
    ("backend", "section"),
    [
        (None, {"Type": "vxlan"}),
        ({}, {"Type": "vxlan"}),
        (dict(UNSET), {"Type": "vxlan"}),
        ({**UNSET, "type": None}, {"Type": "vxlan"}),
        ({**UNSET, "type": ""}, {"Type": "vxlan"}),
        ({**UNSET, "type": "host-gw"}, {"Type": "host-gw"}),
        ({**UNSET, "type": "udp"}, {"Type": "udp"}),
        ({**UNSET, "type": "udp", "port": 8286}, {"Type": "udp", "Port": 8286}),
        ({**UNSET, "vni": 42}, {"Type": "vxlan", "VNI": 42}),
        ({**UNSET, "vni": 4096, "port": 4789, "direct_routing": True},
         {"Type": "vxlan", "VNI": 4096, "Port": 4789, "DirectRouting": True}),
        # falsy values that were set are kept, not mistaken for "unset"
        ({**UNSET, "vni": 0, "port": 0, "direct_routing": False},
         {"Type": "vxlan", "VNI": 0, "Port": 0, "DirectRouting": False}),
        ({"vni": 7}, {"Type": "vxlan", "VNI": 7}),
        ({**UNSET, "type": "wireguard"}, {"Type": "wireguard"}),
        ({**UNSET, "type": "wireguard", "listen_port": 51999, "psk": "k" * 43 + "=",
          "persistent_keepalive_interval": 25, "mode": "auto"},
         {"Type": "wireguard", "ListenPort": 51999, "PSK": "k" * 43 + "=", "PersistentKeepaliveInterval": 25,
          "Mode": "auto"}),
    ],
)
def test_backend_section(backend, section):
    assert desired_document(NET, backend=backend) == {"Network": NET, "Backend": section}


@pytest.mark.parametrize(
    ("kwargs", "top"),
    [
        ({}, {"Network": NET}),
        ({"subnet_len": 26}, {"Network": NET, "SubnetLen": 26}),
        ({"subnet_min": "10.5.1.0"}, {"Network": NET, "SubnetMin": "10.5.1.0"}),
        ({"subnet_max": "10.5.9.0"}, {"Network": NET, "SubnetMax": "10.5.9.0"}),
        ({"subnet_len": 26, "subnet_min": "10.5.1.0", "subnet_max": "10.5.9.192"},
         {"Network": NET, "SubnetLen": 26, "SubnetMin": "10.5.1.0", "SubnetMax": "10.5.9.192"}),
        ({"subnet_len": None, "subnet_min": None, "subnet_max": None}, {"Network": NET}),
    ],
)
def test_top_level_keys(kwargs, top):
    doc = desired_document(NET, **kwargs)
    assert {k: v for k, v in doc.items() if k != "Backend"} == top
    assert doc["Backend"] == {"Type": "vxlan"}


def test_doc_is_plain_json_with_flannel_key_names():
    doc = desired_document(NET, 26, "10.5.1.0", "10.5.9.192",
                           {"type": "vxlan", "vni": 2, "port": 4789, "direct_routing": True})
    assert json.loads(json.dumps(doc)) == doc
    assert set(doc) == {"Network", "SubnetLen", "SubnetMin", "SubnetMax", "Backend"}
    assert set(doc["Backend"]) == {"Type", "VNI", "Port", "DirectRouting"}


def test_input_backend_is_not_modified():
    backend = {**UNSET, "vni": 9}
    before = copy.deepcopy(backend)
    desired_document(NET, backend=backend)
    assert backend == before


@pytest.mark.parametrize("btype", ["vxlan", "host-gw", "udp", None])
def test_stored_document_means_the_same_to_flannel(btype):
    """Written with to_json() and read back with flannel's rule (no Backend = udp), the type survives."""
    doc = desired_document(NET, backend={**UNSET, "type": btype})
    wanted = NetworkConfig.from_dict(doc, where="requested config", default_backend="vxlan")
    stored = NetworkConfig.from_json(wanted.to_json())  # default_backend udp, as flannel reads it
    assert stored.backend.type == (btype or "vxlan")
    assert stored.effective() == wanted.effective()
    assert json.loads(wanted.to_json())["Backend"]["Type"] == (btype or "vxlan")


def test_document_validates_with_the_options_applied():
    doc = desired_document(NET, 26, "10.5.1.0", "10.5.9.192", {**UNSET, "vni": 3, "direct_routing": True})
    cfg = NetworkConfig.from_dict(doc)
    assert (cfg.subnet_len, str(cfg.subnet_min), str(cfg.subnet_max)) == (26, "10.5.1.0", "10.5.9.192")
    assert (cfg.backend.type, cfg.backend.vni, cfg.backend.port, cfg.backend.direct_routing) == ("vxlan", 3, 8472, True)


def test_the_module_is_told_every_psk_to_hide_stored_or_wanted():
    psk_a, psk_b = "A" * 43 + "=", "B" * 43 + "="

    def wg(psk: str | None) -> NetworkConfig:
        backend = {"Type": "wireguard", **({"PSK": psk} if psk else {})}
        return NetworkConfig.from_dict({"Network": NET, "Backend": backend})

    assert _secrets(wg(psk_a), wg(psk_b)) == [psk_a, psk_b]
    assert _secrets(wg(None), None) == []
    assert _secrets(NetworkConfig.from_dict({"Network": NET, "Backend": {"Type": "vxlan"}})) == []
