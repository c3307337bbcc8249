"""The cluster network model and flannel's formats: config, subnet ranges, keys, leases, allocation, subnet.env."""
