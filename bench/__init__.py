"""Benchmarks of overlaynet.flannel on the light lab; run ``python -m bench.overlay_bench``."""
