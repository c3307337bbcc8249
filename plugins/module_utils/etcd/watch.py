"""A watch on a key prefix over etcd's raw gRPC Watch stream.

Why not the etcd3 client's own watch: its watcher thread swallows stream errors (in
python3-etcd3 0.13 it dies with NameError on `six`), so a dead etcd would leave a watcher
waiting forever. Here every stream error, cancel or compaction reaches the caller as an
exception from the iterator, in the caller's thread.

With etcd auth the token rides on the stream as metadata. etcd checks it when the watch is
created (an established watch outlives the token): a create refused for an expired token
is retried once with a fresh token from the same start revision, so no event is lost.
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
from .failures import INVALID_TOKEN

Metadata = tuple[tuple[str, str], ...]
Authenticate = Callable[[Any], "Metadata | None"]  # channel -> fresh per-call metadata


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


def watch_prefix(client: EtcdClient, prefix: str, start_revision: int,
                 authenticate: Authenticate | None = None) -> tuple[Iterator[WatchBatch], Callable[[], None]]:
    """Watch prefix from start_revision; returns (batches, cancel). Errors raise from the
    iterator. *authenticate* renews an expired token (EtcdConnection.auth_metadata)."""
    watch = PrefixWatch(client, prefix, start_revision, authenticate)
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

    def __init__(self, client: EtcdClient, prefix: str, start_revision: int,
                 authenticate: Authenticate | None = None) -> None:
        self.prefix = prefix
        self._channel = client.channel
        self._create = self._create_request(prefix, start_revision)
        self._authenticate = authenticate
        self._lock = threading.Lock()  # the stream is replaced by the reader, cancelled by anyone
        self._cancelled = threading.Event()
        self._open(_call_auth(client))

    @staticmethod
    def _create_request(prefix: str, start_revision: int) -> Any:
        rpc = etcd3.etcdrpc
        key = prefix.encode()
        return rpc.WatchRequest(create_request=rpc.WatchCreateRequest(
            key=key, range_end=_prefix_end(key), start_revision=start_revision))

    def _open(self, auth: dict[str, Any]) -> None:
        requests: queue.Queue[Any] = queue.Queue()
        requests.put(self._create)
        stream = etcd3.etcdrpc.WatchStub(self._channel).Watch(_request_iter(requests), **auth)
        with self._lock:
            self._requests, self._stream = requests, stream
            if self._cancelled.is_set():  # cancel() ran while this stream was being opened
                self._close_stream()

    def _close_stream(self) -> None:
        self._requests.put(None)
        self._stream.cancel()

    def cancel(self) -> None:
        with self._lock:
            self._cancelled.set()
            self._close_stream()

    def _responses(self) -> Iterator[Any]:
        """The stream's responses; a create refused for an expired token is retried once."""
        retried = False
        while True:
            for response in self._stream:
                if response.canceled and INVALID_TOKEN in response.cancel_reason and not retried \
                        and self._authenticate is not None:
                    retried = True
                    with self._lock:
                        self._close_stream()
                    self._open({"metadata": self._authenticate(self._channel)})
                    break
                yield response
            else:
                return

    def batches(self) -> Iterator[WatchBatch]:
        try:
            for response in self._responses():
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


def _request_iter(requests: queue.Queue[Any]) -> Iterator[Any]:
    while True:
        request = requests.get()
        if request is None:
            return
        yield request


def _batch_of(response: Any) -> WatchBatch | None:
    """The events of one WatchResponse; compaction and cancellation raise."""
    if response.compact_revision:
        raise WatchCompactedError(response.compact_revision)
    if response.canceled:
        raise EtcdUnavailableError(f"etcd cancelled the watch: {response.cancel_reason or 'no reason'}")
    if not response.events:
        return None
    return WatchBatch(response.header.revision, [etcd3.events.new_event(event) for event in response.events])
