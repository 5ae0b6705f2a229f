"""`read_ahead`: run an iterator on a helper thread, a few items ahead of its consumer."""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Generator, Iterator
from typing import TypeVar, cast

T = TypeVar("T")


def read_ahead(items: Iterator[T], depth: int = 2) -> Generator[T, None, None]:
    """Run ``items`` on a helper thread, at most ``depth`` items ahead of the consumer.

    The inflaters and numpy release the GIL, so the next item is produced while the consumer works
    on the current one. Exceptions reach the consumer; closing the returned iterator stops the
    thread (after the item it is producing).
    """
    ready: queue.Queue[tuple[bool, T | BaseException | None]] = queue.Queue(depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if not _put(ready, (True, item), stop):
                    return
            _put(ready, (False, None), stop)
        except BaseException as exc:  # handed to the consumer
            _put(ready, (False, exc), stop)

    worker = threading.Thread(target=produce, name="neurotorch-read-ahead", daemon=True)
    worker.start()
    owner = os.getpid()
    try:
        while True:
            more, item = ready.get()
            if not more:
                if item is not None:
                    raise cast(BaseException, item)
                return
            yield cast(T, item)
    finally:
        if os.getpid() == owner:  # a forked child has no worker (and must not touch its locks)
            stop.set()
            worker.join()


def _put(target: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Put ``item`` unless ``stop`` is set first; True if it was put."""
    while not stop.is_set():
        try:
            target.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False
