"""etcd: the connection (failover, TLS, auth), the watch stream, the modules' etcd options, the lease registry."""
