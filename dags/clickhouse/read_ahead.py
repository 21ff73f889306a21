"""Reading a streamed result ahead of its consumer: the engine produces the next batches while the caller
encodes the last ones, with a bounded number of batches in between."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    import pyarrow as pa

T = TypeVar("T")

# How long the consumer waits on the queue in one step: short, so that a run's termination (an interrupt of the
# consumer's thread) arrives at once instead of after the engine's next batch.
POLL_SECONDS = 0.1
# After the consumer stops early, how long the reader may take to finish the batch in hand before the query is
# killed, and how long it then may take to notice.
STOP_GRACE_SECONDS = 1.0
KILLED_GRACE_SECONDS = 60.0

_END = object()


class ReadAhead(Generic[T]):
    """Iterate `source` in a reader thread, at most `depth` items ahead of the consumer.

    The reader starts on the next item only when there is room for it, so memory holds at most `depth`
    items waiting plus the one the reader is producing (besides the consumer's own). An error in the
    reader is raised in the consumer at the point where its item would have arrived. `stop()` (call it when
    the consumer is done, normally or not) ends the reader: it stops after the item in hand, and if it is
    still busy after a grace period (a slow query between two blocks) `kill` is called so the engine stops
    the query; the source is closed only after that, in the consumer's thread.
    """

    def __init__(self, source: Iterable[T], depth: int, kill: Callable[[], None], name: str):
        self._source = iter(source)
        self._queue: queue.Queue[object] = queue.Queue()
        self._room = threading.Semaphore(max(1, depth))  # one slot per item waiting, taken before producing it
        self._stopping = threading.Event()
        self._kill = kill
        self._thread = threading.Thread(target=self._read, name=name, daemon=True)
        self._thread.start()

    def _wait_for_room(self) -> bool:
        while not self._stopping.is_set():
            if self._room.acquire(timeout=POLL_SECONDS):
                return True
        return False

    def _read(self) -> None:
        try:
            while self._wait_for_room():
                item = next(self._source, _END)
                self._queue.put(item)
                if item is _END:
                    return
                del item  # the consumer's from here on
        except BaseException as error:  # handed to the consumer
            self._queue.put(_Failed(error))

    def __iter__(self) -> Iterator[T]:
        while True:
            try:
                item = self._queue.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue
            self._room.release()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item  # type: ignore[misc]

    def stop(self) -> None:
        """End the reader thread and wait for it (idempotent)."""
        self._stopping.set()
        self._drain()
        self._thread.join(STOP_GRACE_SECONDS)
        if self._thread.is_alive():
            self._kill()
            self._thread.join(KILLED_GRACE_SECONDS)
        self._drain()

    def _drain(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


def batches_of_exactly(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """Regroup record batches into contiguous batches of exactly `rows` rows (the last may be shorter).

    The batches then do not depend on how the engine happened to cut its blocks, so the same rows always
    give the same batches; memory holds at most one output batch plus one input batch.
    """
    import pyarrow as pa

    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        pending_rows += batch.num_rows
        while pending_rows >= rows:
            table = pa.Table.from_batches(pending)
            group, rest = _contiguous(table.slice(0, rows)), table.slice(rows)
            pending, pending_rows = rest.to_batches(), rest.num_rows
            # Only the rest's blocks stay referenced while the group waits for the consumer: memory flat.
            del table, rest
            yield group
    if pending_rows:
        yield _contiguous(pa.Table.from_batches(pending))


def _contiguous(table: pa.Table) -> pa.RecordBatch:
    """One record batch with one contiguous buffer per column (a copy only where the table is in pieces)."""
    return table.combine_chunks().to_batches()[0]
