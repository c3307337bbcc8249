"""What docker needs from the lease: daemon.json keys, or env files like mk-docker-opts.sh.

mk-docker-opts.sh inverts ip-masq: FLANNEL_IPMASQ=true means flannel masquerades, so
docker must not (--ip-masq=false), and vice versa.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..errors import HostNetworkError

DOCKER_OPTS_MODES = ("both", "individual", "combined")


@dataclass(frozen=True)
class DockerBridgeOptions:
    bip: str  # e.g. 10.5.72.1/24
    mtu: int
    docker_ip_masq: bool  # what docker gets: the inverse of FLANNEL_IPMASQ

    @classmethod
    def from_flannel(cls, subnet: str, mtu: int, flannel_ip_masq: bool) -> DockerBridgeOptions:
        return cls(subnet, mtu, not flannel_ip_masq)


def merge_daemon_json(existing_text: str | None, opts: DockerBridgeOptions, path: str) -> tuple[dict[str, Any], str]:
    """daemon.json with bip, mtu, ip-masq set and every other key kept; (document, text)."""
    doc: dict[str, Any] = {}
    if existing_text is not None and existing_text.strip():
        try:
            doc = json.loads(existing_text)
        except ValueError as exc:
            raise HostNetworkError(f"{path} is not valid JSON ({exc}); fix or remove it first") from None
        if not isinstance(doc, dict):
            raise HostNetworkError(f"{path} must hold a JSON object; fix or remove it first")
    merged = dict(doc)
    merged.update({"bip": opts.bip, "mtu": opts.mtu, "ip-masq": opts.docker_ip_masq})
    return merged, json.dumps(merged, indent=2, sort_keys=True) + "\n"


def render_docker_opts(opts: DockerBridgeOptions, key: str = "DOCKER_OPTS", mode: str = "both",
                       include_ip_masq: bool = True) -> str:
    """The env file mk-docker-opts.sh writes: -i individual, -c combined, both by default;
    -k key names the combined variable; -m leaves ip-masq out."""
    if mode not in DOCKER_OPTS_MODES:
        raise HostNetworkError(f"docker_opts_mode {mode!r} is not one of {', '.join(DOCKER_OPTS_MODES)}")
    # The script loops over `set | grep DOCKER_OPT_`, i.e. in name order: BIP, IPMASQ, MTU, and
    # joins the values each with a leading space.
    individual = [("DOCKER_OPT_BIP", f"--bip={opts.bip}")]
    if include_ip_masq:
        individual.append(("DOCKER_OPT_IPMASQ", f"--ip-masq={'true' if opts.docker_ip_masq else 'false'}"))
    individual.append(("DOCKER_OPT_MTU", f"--mtu={opts.mtu}"))
    lines = []
    if mode in ("both", "individual"):
        lines += [f'{name}="{value}"' for name, value in individual]
    if mode in ("both", "combined"):
        combined = "".join(f" {value}" for _name, value in individual)
        lines.append(f'{key}="{combined}"')
    return "\n".join(lines) + "\n"
