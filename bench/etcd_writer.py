"""Bulk lease writes for the scale benchmarks, run inside etcd's namespace (the benchmark
itself stays in the root namespace, which reaches no lab address).

stdin: one JSON command a line, {"put": [[key, value], ...]} or {"delete": [key, ...]};
stdout: one JSON line each, {"t0": ..., "t1": ...} (CLOCK_MONOTONIC, shared by every
process of the box, before the first and after the last write). One transaction per 100
operations (etcd allows 128): etcdctl per key would take minutes for 5,000 leases.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import etcd3

TXN_OPS = 100


def apply(client: Any, command: dict[str, Any]) -> dict[str, float]:
    ops: list[Any] = [client.transactions.put(key, value) for key, value in command.get("put", [])]
    ops += [client.transactions.delete(key) for key in command.get("delete", [])]
    t0 = time.monotonic()
    for start in range(0, len(ops), TXN_OPS):
        client.transaction(compare=[], success=ops[start:start + TXN_OPS], failure=[])
    return {"t0": t0, "t1": time.monotonic()}


def main() -> int:
    host, port = sys.argv[1].rsplit(":", 1)
    client = etcd3.client(host=host, port=int(port), timeout=30)
    for line in sys.stdin:
        print(json.dumps(apply(client, json.loads(line))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
