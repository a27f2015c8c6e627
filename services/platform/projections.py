"""One runner feeds every off-chain projection of the ledger, each with its own checkpoint (cursor).

A :class:`Projection` names the chaincode events it reads and applies a run of them, together with its
cursor, in one off-chain transaction (idempotent by sequence number, so replaying from any cursor is safe).
The :class:`ProjectionRunner` reads the ledger once for all of them: a bounded catch-up from the lowest
cursor at start (it always ends, even when the last entries carry no event of interest), then one
committed-event stream followed off the event loop, bursts applied in one transaction per projection.
Readers that must see what was committed before they asked call :meth:`ProjectionRunner.read_committed`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Protocol

from ciphercare.ledger.api import CommittedEvent, EventStream
from ciphercare.ledger.gateway import TransparencyLog

#: Entries read per chunk while catching up.
CHUNK = 1024
#: Pause before the first retry after a failed apply, and the longest pause (doubling in between).
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 5.0

log = logging.getLogger("ciphercare.projections")


class Projection(Protocol):
    """An off-chain view of committed chaincode events."""

    #: The store's cursor name for this projection.
    cursor_name: str
    #: The chaincode event names this projection reads.
    event_names: frozenset[str]

    def cursor(self) -> int:
        """The first ledger sequence number not yet applied."""
        ...

    def apply(self, events: Sequence[CommittedEvent], next_seq: int) -> None:
        """Apply ``events`` (in ledger order, all below ``next_seq``) and move the cursor to ``next_seq``."""
        ...


class EventSource(Protocol):
    """Where committed events come from: the services' contract handles."""

    @property
    def transparency(self) -> TransparencyLog: ...

    def events(self, start_seq: int, names: frozenset[str] | None = None) -> EventStream: ...


def committed_events(log: TransparencyLog, start: int, end: int, names: frozenset[str]) -> Iterator[CommittedEvent]:
    """The events named ``names`` of entries in [start, end), in ledger order; never waits for new commits."""
    seq = start
    while seq < end:
        stop = min(end, seq + CHUNK)
        for entry in log.entries(seq, stop):
            for event in entry.events:
                if event.name in names:
                    yield CommittedEvent(entry.seq, entry.tx_id, entry.timestamp_ms, event.name, event.payload)
        seq = stop


def _next_batch(stream: EventStream) -> list[CommittedEvent] | None:
    """The stream's next batch, or ``None`` once it ended.

    StopIteration must not cross ``asyncio.to_thread``: raised into a future it is lost, and the awaiting
    task would wait for ever.
    """
    try:
        return stream.next_batch()
    except StopIteration:
        return None


class ProjectionRunner:
    """Keeps every projection level with the ledger."""

    def __init__(self, source: EventSource, projections: Sequence[Projection]) -> None:
        self.source = source
        self.projections = tuple(projections)
        self._names = frozenset().union(*(p.event_names for p in self.projections))
        self._lock = threading.Lock()
        self._stream: EventStream | None = None
        self._stopping = False

    def catch_up(self) -> dict[str, int]:
        """Apply every committed event past each projection's cursor; returns events applied per projection."""
        with self._lock:
            return self._catch_up()

    def _catch_up(self) -> dict[str, int]:
        log = self.source.transparency
        end = log.size()
        applied = {p.cursor_name: 0 for p in self.projections}
        cursors = {p.cursor_name: p.cursor() for p in self.projections}
        start = min(cursors.values(), default=end)
        seq = start
        while seq < end:
            stop = min(end, seq + CHUNK)
            events = list(committed_events(log, seq, stop, self._names))
            for projection in self.projections:
                if cursors[projection.cursor_name] >= stop:
                    continue
                mine = [e for e in events
                        if e.name in projection.event_names and e.seq >= cursors[projection.cursor_name]]
                projection.apply(mine, stop)
                applied[projection.cursor_name] += len(mine)
            seq = stop
        return applied

    def read_committed(self) -> None:
        """Bring every projection up to the ledger before a read (read-your-writes)."""
        size = self.source.transparency.size()
        if any(p.cursor() < size for p in self.projections):
            self.catch_up()

    async def follow(self) -> None:
        """Apply new events as they commit, until cancelled or stopped.

        A dependency fault does not end the follower (issue 14): when an apply fails (the off-chain store
        down or slow) or the event stream breaks or ends (a remote ledger node stopped), it pauses -- longer
        each time, up to :data:`RETRY_MAX_S` -- catches up from the cursors and reopens the stream. The
        cursors make every retry exact: nothing is applied twice or skipped.
        """
        self._stopping = False
        pause = RETRY_FIRST_S
        try:
            while not self._stopping:
                try:
                    await asyncio.to_thread(self.catch_up)
                    pause = RETRY_FIRST_S  # the dependency answered: the next outage starts with a short pause
                    start = min((p.cursor() for p in self.projections), default=0)
                    stream = self._stream = self.source.events(start, self._names)
                    while True:
                        batch = await asyncio.to_thread(_next_batch, stream)
                        if batch is None:
                            break
                        await asyncio.to_thread(self._apply_batch, batch)
                    if self._stopping:
                        return
                    log.warning("ledger event stream ended; reopening", extra={"retry_in_s": pause})
                except Exception as exc:  # noqa: BLE001 - a dependency outage; retried until it ends
                    log.warning("projection follower failed; retrying from the cursors",
                                extra={"error": type(exc).__name__, "retry_in_s": pause})
                self._close_stream()
                await asyncio.sleep(pause)
                pause = min(RETRY_MAX_S, pause * 2)
        finally:
            self._close_stream()

    def _apply_batch(self, batch: Sequence[CommittedEvent]) -> None:
        if not batch:
            return
        next_seq = batch[-1].seq + 1
        with self._lock:
            for projection in self.projections:
                cursor = projection.cursor()
                if cursor >= next_seq:
                    continue
                projection.apply([e for e in batch if e.name in projection.event_names and e.seq >= cursor],
                                 next_seq)

    def stop(self) -> None:
        self._stopping = True
        self._close_stream()

    def _close_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
