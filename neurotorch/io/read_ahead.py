"""`read_ahead`: run an iterator on a helper thread, a few items ahead of its consumer; and
`closed_at_exit`: readers that a script leaves unfinished are closed while Python can still do so.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import inspect
import os
import queue
import threading
import weakref
from collections.abc import Callable, Generator, Iterator
from typing import ParamSpec, TypeVar, cast

T = TypeVar("T")
P = ParamSpec("P")

# the unfinished readers `_close_at_exit` closes, with the process that made each
_unfinished: weakref.WeakKeyDictionary[Generator, int] = weakref.WeakKeyDictionary()


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


def closed_at_exit(
    function: Callable[P, Generator[T, None, None]],
) -> Callable[P, Generator[T, None, None]]:
    """Decorate a generator function whose generators hold files, inflaters or `read_ahead`
    threads: one still unfinished when the interpreter exits is closed by `_close_at_exit`."""

    @functools.wraps(function)
    def reader(*args: P.args, **kwargs: P.kwargs) -> Generator[T, None, None]:
        generator = function(*args, **kwargs)
        _unfinished[generator] = os.getpid()
        return generator

    return reader


@atexit.register
def _close_at_exit() -> None:
    """Close the unfinished readers while the interpreter can still run their threads.

    A script that leaves a stream unfinished (``next(iter(loader))``, a ``break``) exits with its
    helper threads still reading. Python freezes daemon threads when it finalizes: one frozen
    inside a file read keeps that file's lock, and closing the file afterwards (when the
    generator is collected) aborted the interpreter ("Fatal Python error: _enter_buffered_busy:
    could not acquire lock … at interpreter shutdown"); an inflater's own threads still running
    then ended it with ``terminate``. Exit handlers run before that freeze, so the readers close
    here as they do when a loop stops early: helpers finish their item and are joined, files and
    inflaters close.
    """
    for generator, pid in list(_unfinished.items()):
        if pid == os.getpid() and inspect.getgeneratorstate(generator) != inspect.GEN_RUNNING:
            with contextlib.suppress(Exception):  # a reader abandoned mid-file has no user left
                generator.close()
