"""The agent: our flanneld. It keeps this host's lease alive, watches the other hosts'
leases and programs the data plane through a backend. Started by bin/flannel-agent."""
