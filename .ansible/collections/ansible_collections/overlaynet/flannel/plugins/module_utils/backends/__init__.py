"""The data-plane backends, one package each, behind backends.base.Backend and found through backends.registry."""
