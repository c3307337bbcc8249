"""A watch on a key prefix over etcd's raw gRPC Watch stream.

Why not the etcd3 client's own watch: its watcher thread swallows stream errors (in
python3-etcd3 0.13 it dies with NameError on `six`), so a dead etcd would leave a watcher
waiting forever. Here every stream error, cancel or compaction reaches the caller as an
exception from the iterator, in the caller's thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..deps import etcd3, grpc
from ..errors import EtcdUnavailableError, FlannelError
from .client import EtcdClient, WatchEvent


class WatchCompactedError(FlannelError):
    """The start revision was compacted away: re-list and watch again from the listing."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"watch start revision is compacted (oldest kept: {compact_revision}); re-list")
        self.compact_revision = compact_revision


@dataclass(frozen=True)
class WatchBatch:
    revision: int
    events: list[WatchEvent]


def _prefix_end(prefix: bytes) -> bytes:
    end = bytearray(prefix)
    for i in reversed(range(len(end))):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\0"


def watch_prefix(client: EtcdClient, prefix: str,
                 start_revision: int) -> tuple[Iterator[WatchBatch], Callable[[], None]]:
    """Watch prefix from start_revision; returns (batches, cancel). Errors raise from the iterator."""
    watch = PrefixWatch(client, prefix, start_revision)
    return watch.batches(), watch.cancel


def _call_auth(client: EtcdClient) -> dict[str, Any]:
    """The client's authentication for a raw call: call credentials (python3-etcd3) or
    per-call metadata (Debian's 0.12), whichever it carries."""
    kwargs: dict[str, Any] = {}
    if getattr(client, "call_credentials", None) is not None:
        kwargs["credentials"] = client.call_credentials
    if getattr(client, "metadata", None):
        kwargs["metadata"] = client.metadata
    return kwargs


class PrefixWatch:
    """One Watch stream: the create request goes first, cancel() ends it from any thread."""

    def __init__(self, client: EtcdClient, prefix: str, start_revision: int) -> None:
        rpc = etcd3.etcdrpc
        self.prefix = prefix
        self._requests: queue.Queue[Any] = queue.Queue()
        key = prefix.encode()
        self._requests.put(rpc.WatchRequest(create_request=rpc.WatchCreateRequest(
            key=key, range_end=_prefix_end(key), start_revision=start_revision)))
        self._cancelled = threading.Event()
        self._stream = rpc.WatchStub(client.channel).Watch(self._request_iter(), **_call_auth(client))

    def _request_iter(self) -> Iterator[Any]:
        while True:
            request = self._requests.get()
            if request is None:
                return
            yield request

    def cancel(self) -> None:
        self._cancelled.set()
        self._requests.put(None)
        self._stream.cancel()

    def batches(self) -> Iterator[WatchBatch]:
        try:
            for response in self._stream:
                batch = _batch_of(response)
                if batch is not None:
                    yield batch
        except grpc.RpcError as exc:
            if self._cancelled.is_set():
                return
            raise EtcdUnavailableError(
                f"the watch on {self.prefix} broke: {exc.code().name}: {exc.details()}") from None
        if not self._cancelled.is_set():
            raise EtcdUnavailableError(f"the watch on {self.prefix} ended without an error")


def _batch_of(response: Any) -> WatchBatch | None:
    """The events of one WatchResponse; compaction and cancellation raise."""
    if response.compact_revision:
        raise WatchCompactedError(response.compact_revision)
    if response.canceled:
        raise EtcdUnavailableError(f"etcd cancelled the watch: {response.cancel_reason or 'no reason'}")
    if not response.events:
        return None
    return WatchBatch(response.header.revision, [etcd3.events.new_event(event) for event in response.events])
