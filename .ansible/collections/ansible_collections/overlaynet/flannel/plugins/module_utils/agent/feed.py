"""One etcd watch on the leases, read in a thread and handed to the main loop's inbox.

The stream blocks; the main loop must not. The watch is opened in the caller's thread (the
etcd connection is only ever used from the main loop); the thread only reads the stream.
Each feed has a token so that messages from a watch that was replaced are ignored.
"""

from __future__ import annotations

import queue
import threading

from ..etcd.registry import LeaseRegistry
from .messages import Message, WatchBatchArrived, WatchEnded


class WatchFeed:
    """Puts a WatchBatchArrived for every batch and one WatchEnded when the watch ends for
    any reason other than cancel()."""

    def __init__(self, store: LeaseRegistry, start_revision: int, inbox: queue.SimpleQueue[Message],
                 token: int) -> None:
        self.start_revision = start_revision
        self.token = token
        self._inbox = inbox
        self._batches, self._cancel = store.watch(start_revision)  # lazy: nothing is sent yet
        self._cancelled = threading.Event()
        self._thread = threading.Thread(target=self._read, name=f"watch-{token}", daemon=True)

    def start(self) -> WatchFeed:
        self._thread.start()
        return self

    def _read(self) -> None:
        try:
            for batch in self._batches:
                self._inbox.put(WatchBatchArrived(self.token, batch))
            raise EOFError("the watch stream ended")
        except Exception as exc:  # noqa: BLE001 - any end of the stream is reported to the loop
            if not self._cancelled.is_set():
                self._inbox.put(WatchEnded(self.token, exc))

    def cancel(self) -> None:
        self._cancelled.set()
        try:
            self._cancel()
        except Exception:  # noqa: BLE001 - cancelling a broken stream may fail; it is gone either way
            pass
