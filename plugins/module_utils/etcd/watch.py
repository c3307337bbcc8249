"""A watch on a key prefix over etcd's raw gRPC Watch stream.

Why not the etcd3 client's own watch: its watcher thread swallows stream errors (in
python3-etcd3 0.13 it dies with NameError on `six`), so a dead etcd would leave a watcher
waiting forever. Here every stream error, cancel or compaction reaches the caller as an
exception from the iterator, in the caller's thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..deps import etcd3, grpc
from ..errors import EtcdUnavailableError, FlannelError


class WatchCompactedError(FlannelError):
    """The start revision was compacted away: re-list and watch again from the listing."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"watch start revision is compacted (oldest kept: {compact_revision}); re-list")
        self.compact_revision = compact_revision


@dataclass(frozen=True)
class WatchBatch:
    revision: int
    events: list[Any]  # etcd3.events.PutEvent / DeleteEvent


def _prefix_end(prefix: bytes) -> bytes:
    end = bytearray(prefix)
    for i in reversed(range(len(end))):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\0"


def watch_prefix(client: Any, prefix: str, start_revision: int) -> tuple[Iterator[WatchBatch], Any]:
    """Watch prefix from start_revision; returns (batches, cancel). Errors raise from the iterator."""
    rpc = etcd3.etcdrpc
    requests: queue.Queue[Any] = queue.Queue()
    key = prefix.encode()
    requests.put(rpc.WatchRequest(create_request=rpc.WatchCreateRequest(
        key=key, range_end=_prefix_end(key), start_revision=start_revision)))

    def request_iter() -> Iterator[Any]:
        while True:
            request = requests.get()
            if request is None:
                return
            yield request

    stub = rpc.WatchStub(client.channel)
    kwargs: dict[str, Any] = {}
    if getattr(client, "call_credentials", None) is not None:
        kwargs["credentials"] = client.call_credentials
    if getattr(client, "metadata", None):
        kwargs["metadata"] = client.metadata
    stream = stub.Watch(request_iter(), **kwargs)
    cancelled = threading.Event()

    def cancel() -> None:
        cancelled.set()
        requests.put(None)
        stream.cancel()

    def batches() -> Iterator[WatchBatch]:
        try:
            for response in stream:
                if response.compact_revision:
                    raise WatchCompactedError(response.compact_revision)
                if response.canceled:
                    raise EtcdUnavailableError(f"etcd cancelled the watch: {response.cancel_reason or 'no reason'}")
                if response.events:
                    yield WatchBatch(response.header.revision,
                                     [etcd3.events.new_event(event) for event in response.events])
        except grpc.RpcError as exc:
            if cancelled.is_set():
                return
            raise EtcdUnavailableError(f"the watch on {prefix} broke: {exc.code().name}: {exc.details()}") from None
        if not cancelled.is_set():
            raise EtcdUnavailableError(f"the watch on {prefix} ended without an error")

    return batches(), cancel
