"""Decoding ahead: an iterator run by a background thread with a bounded queue."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any


class Prefetcher:
    """Runs an iterator in a background thread, keeping at most ``maxsize`` items ahead.

    Exceptions raised by the iterator are re-raised by the consumer; :meth:`close` stops the thread
    early (when the consumer gives up) without waiting for the iterator to finish.
    """

    _DONE = object()

    def __init__(self, iterator: Iterator[Any], maxsize: int = 4) -> None:
        self._it = iterator
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, maxsize))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="persam-frame-reader", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._it:
                if not self._put((True, item)):
                    return
        except BaseException as e:  # handed to the consumer
            self._put((False, e))
            return
        self._put((True, self._DONE))

    def __iter__(self) -> Iterator[Any]:
        try:
            while True:
                ok, item = self._queue.get()
                if not ok:
                    raise item
                if item is self._DONE:
                    return
                yield item
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5.0)
        close = getattr(self._it, "close", None)
        if close is not None and not self._thread.is_alive():
            close()
