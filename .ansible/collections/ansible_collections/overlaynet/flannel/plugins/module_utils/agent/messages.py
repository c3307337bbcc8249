"""What arrives in the agent's inbox: typed messages, read by the main loop only.

The watch thread (feed.py) and the signal handler put them; every other piece of the agent
runs on the main loop's thread, so nothing else needs a lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from ..etcd.watch import WatchBatch


@dataclass(frozen=True)
class Stop:
    """SIGTERM/SIGINT: leave the loop; the lease and the data plane stay."""


@dataclass(frozen=True)
class WatchBatchArrived:
    token: int  # the feed it came from; a replaced feed's messages are ignored
    batch: WatchBatch


@dataclass(frozen=True)
class WatchEnded:
    token: int
    error: Exception  # why the stream ended (anything but our own cancel)


Message = Union[Stop, WatchBatchArrived, WatchEnded]
