"""systemd_unit: dockerd's command line from docker's own unit file (docker.io and docker-ce)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ansible_collections.overlaynet.flannel.plugins.module_utils.errors import HostNetworkError
from ansible_collections.overlaynet.flannel.plugins.module_utils.host.systemd_unit import (
    read_unit_dockerd_command,
    unit_dockerd_command,
)

# docker-ce's docker.service (the lines that matter): no EnvironmentFile, no $DOCKER_OPTS
DOCKER_CE = """[Unit]
Description=Docker Application Container Engine
After=network-online.target docker.socket firewalld.service containerd.service time-set.target

[Service]
Type=notify
# the rest of the [Service] section of docker-ce's unit
ExecStart=/usr/bin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock
ExecReload=/bin/kill -s HUP $MAINPID
"""
# Debian 12's docker.io
DOCKER_IO = """[Service]
EnvironmentFile=-/etc/default/docker
ExecStart=/usr/sbin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock $DOCKER_OPTS
"""
CE_COMMAND = "/usr/bin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock"


@pytest.mark.parametrize(("text", "expected"), [
    (DOCKER_CE, CE_COMMAND),
    (DOCKER_IO, "/usr/sbin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock"),
    ("[Service]\nExecStart=/usr/bin/dockerd ${DOCKER_OPTS} $DOCKER_OPTS_X\n", "/usr/bin/dockerd $DOCKER_OPTS_X"),
    ("[Service]\nExecStart = /usr/bin/dockerd \\\n    -H fd:// \\\n  --log-level=warn\n",
     "/usr/bin/dockerd -H fd:// --log-level=warn"),
    ("[Service]\nExecStart=/old/dockerd\nExecStart=\nExecStart=-/usr/bin/dockerd -H fd://\n",
     "-/usr/bin/dockerd -H fd://"),
    ("[Unit]\nExecStart=/not/here\n[Service]\n;ExecStart=/commented\nExecStart=/usr/bin/dockerd\n",
     "/usr/bin/dockerd"),
])
def test_the_vendor_command_is_kept_without_docker_opts(text: str, expected: str) -> None:
    assert unit_dockerd_command(text, "docker.service") == expected


@pytest.mark.parametrize(("text", "says"), [
    ("[Service]\nType=notify\n", "has no ExecStart in [Service]"),
    ("[Unit]\nExecStart=/usr/bin/dockerd\n", "has no ExecStart in [Service]"),
    ("[Service]\nExecStart=/usr/bin/dockerd\nExecStart=\n", "has no ExecStart in [Service]"),
    ("[Service]\nExecStart=/a/dockerd\nExecStart=/b/dockerd\n", "has 2 ExecStart lines"),
    ("[Service]\nExecStart=$DOCKER_OPTS\n", "names no program"),
    ("[Service]\nExecStart=-\n", "names no program"),
])
def test_a_unit_without_one_command_is_refused(text: str, says: str) -> None:
    with pytest.raises(HostNetworkError, match=says.replace("[", r"\[").replace("]", r"\]")):
        unit_dockerd_command(text, "docker.service")


def test_the_unit_is_read_from_disk_and_a_missing_one_is_named(tmp_path: Path) -> None:
    unit = tmp_path / "docker.service"
    unit.write_text(DOCKER_CE, encoding="utf-8")
    assert read_unit_dockerd_command(str(unit)) == CE_COMMAND
    with pytest.raises(HostNetworkError, match=f"the unit {tmp_path}/gone.service does not exist"):
        read_unit_dockerd_command(str(tmp_path / "gone.service"))
