"""This host's networking: netlink helpers, the underlay, the docker bridge, TUN, namespaces, iptables."""
