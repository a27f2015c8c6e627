"""Keeping the off-chain store consistent with the ledger, and saying so.

The ledger is the source of truth. Documents are written before the ledger
transaction that records their hash, so a crash can leave a document nothing
references (an *orphan*) but never a ledger record without its document. Two
projections follow the ledger with their own cursors, both idempotent:

* the access-event search index (``AccessProjector`` in the access-log service);
* the privacy projection here: marks each document with the ledger entry that
  references it (``documents.ledger_seq``) and applies erasure events (destroys
  the patient's data key, deletes their documents), in one store transaction
  with its cursor.

:func:`check_store` runs at every start (incremental) and as ``ciphercare store
check`` (full): it catches both projections up, re-projects access events missing
below the cursor, seals pre-0002 plaintext documents, and reports orphans,
missing documents and unreadable leftovers as one structured log line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from ciphercare.consent.contracts import (
    CONSENT_CONTRACT,
    ERASURE_OUTCOME_DESC,
    EVENT_ACCESS_RECORDED,
    EVENT_CONSENT_GRANTED,
)
from ciphercare.ledger.api import ChaincodeEvent, CommittedEvent, Ledger, LedgerEntry, Principal
from ciphercare.services.store.repository import (
    DocumentRef,
    ErasureEvent,
    OffchainStore,
    PrivacyBatchResult,
)

log = logging.getLogger("ciphercare.store")

#: The server's own identity for reading consent records (oversight role: reads, never writes consents)
#: and for recording erasures requested through the operator CLI.
PRIVACY_PRINCIPAL = Principal(
    subject="service:ciphercare-privacy", org="ciphercare", roles=frozenset({"admin"}), client_id="ciphercare-server"
)
PRIVACY_EVENTS = frozenset({EVENT_CONSENT_GRANTED, EVENT_ACCESS_RECORDED})
_CHUNK = 1024


def ledger_entries(ledger: Ledger, start: int, end: int) -> Iterator[LedgerEntry]:
    """Committed entries in [start, end), read in chunks (``entries`` when the backend has it).

    Unlike an event stream this never waits for new commits, so a catch-up always ends.
    """
    bulk = getattr(ledger, "entries", None)
    seq = start
    while seq < end:
        stop = min(end, seq + _CHUNK)
        yield from (bulk(seq, stop) if bulk is not None else [ledger.entry(s) for s in range(seq, stop)])
        seq = stop


def committed_events(ledger: Ledger, start: int, end: int, names: frozenset[str]) -> Iterator[CommittedEvent]:
    """The events named ``names`` of entries in [start, end), in ledger order."""
    for entry in ledger_entries(ledger, start, end):
        for event in entry.events:
            if event.name in names:
                yield CommittedEvent(entry.seq, entry.tx_id, entry.timestamp_ms, event.name, event.payload)


def _recorded_ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def erasure_from_event(payload: dict[str, Any], seq: int, tx_id: str) -> ErasureEvent | None:
    """The erasure an ``AccessRecorded`` payload carries, if it is one (action D, ``patient-erasure``).

    The access-log contract lets only an admin record such an event, so its presence on the
    ledger is the authorisation.
    """
    if payload.get("action") != "D" or payload.get("outcome_desc") != ERASURE_OUTCOME_DESC:
        return None
    pid = (payload.get("entity") or {}).get("pid")
    if not pid:
        return None
    return ErasureEvent(str(payload["id"]), str(pid), seq, tx_id, _recorded_ms(str(payload["recorded"])))


@dataclass(frozen=True)
class _Entry:
    seq: int
    tx_id: str
    function: str
    events: tuple[ChaincodeEvent, ...]


class PrivacyProjector:
    """Follows the ledger: document references and erasures into the store (idempotent, resumable)."""

    def __init__(self, ledger: Ledger, store: OffchainStore) -> None:
        self.ledger = ledger
        self.store = store
        self._stream: Any = None

    # Reading the ledger ----------------------------------------------------------

    def _entries(self, start: int, end: int) -> Iterator[_Entry]:
        for entry in ledger_entries(self.ledger, start, end):
            yield _Entry(entry.seq, entry.tx_id, entry.function, tuple(entry.events))

    def _consent_document(self, consent_id: str) -> tuple[str, str]:
        record = json.loads(self.ledger.evaluate(PRIVACY_PRINCIPAL, CONSENT_CONTRACT, "Get", [consent_id]))
        return str(record["document_sha256"]), str(record["pid"])

    def translate(self, entries: Iterable[_Entry]) -> tuple[list[DocumentRef], list[ErasureEvent]]:
        """The document references and erasures a run of ledger entries carries."""
        refs: list[DocumentRef] = []
        erasures: list[ErasureEvent] = []
        for entry in entries:
            for event in entry.events:
                if event.name == EVENT_CONSENT_GRANTED:
                    consent_id = json.loads(event.payload)["consent_id"]
                    sha, pid = self._consent_document(consent_id)
                    refs.append(DocumentRef(sha, pid, entry.seq))
                elif event.name == EVENT_ACCESS_RECORDED:
                    payload = json.loads(event.payload)
                    entity = payload.get("entity") or {}
                    if entity.get("detail_sha256") and entity.get("pid"):
                        refs.append(DocumentRef(str(entity["detail_sha256"]), str(entity["pid"]), entry.seq))
                    erasure = erasure_from_event(payload, entry.seq, entry.tx_id)
                    if erasure is not None:
                        erasures.append(erasure)
        return refs, erasures

    # Projection ------------------------------------------------------------------

    def catch_up(self, start: int | None = None) -> tuple[int, PrivacyBatchResult]:
        """Apply every committed entry from the cursor (or ``start``); returns (entries read, totals)."""
        first = self.store.projection_cursor("privacy") if start is None else start
        end = self.ledger.size()
        total = PrivacyBatchResult()
        seq = first
        while seq < end:
            stop = min(end, seq + _CHUNK)
            refs, erasures = self.translate(self._entries(seq, stop))
            result = self.store.apply_privacy_batch(refs, erasures, stop)
            total.referenced += result.referenced
            total.missing += result.missing
            total.erasures_applied += result.erasures_applied
            seq = stop
        return max(0, end - first), total

    async def follow(self) -> None:
        """Apply new entries as they commit, until cancelled."""
        self.catch_up()
        start = self.store.projection_cursor("privacy")
        stream = self._stream = self.ledger.events(start, PRIVACY_EVENTS)
        try:
            while True:
                # A burst of commits is applied in one off-chain transaction, off the event loop.
                try:
                    events = await asyncio.to_thread(stream.next_batch)
                except StopIteration:
                    return
                entries = [_Entry(e.seq, e.tx_id, "", (ChaincodeEvent(e.name, e.payload),)) for e in events]
                refs, erasures = self.translate(entries)
                result = await asyncio.to_thread(self.store.apply_privacy_batch, refs, erasures, events[-1].seq + 1)
                for missing in result.missing:
                    log.error("ledger references a missing document", extra={"seq": missing.seq, "pid": missing.pid})
                for erasure in result.erasures_applied:
                    log.info("erasure applied", extra={"seq": erasure.seq, "pid": erasure.pid,
                                                       "documents_shredded": erasure.documents_shredded})
        finally:
            self.stop()

    def stop(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


@dataclass
class StoreReport:
    """What a consistency check found and repaired (every field is a count or a code, never data)."""

    mode: str
    ledger_size: int = 0
    access_events_caught_up: int = 0
    access_gaps_repaired: int = 0
    privacy_entries_read: int = 0
    documents_referenced: int = 0
    legacy_documents_sealed: int = 0
    legacy_documents_unattributed: int = 0
    erasures_applied: int = 0
    orphan_documents: int = 0
    orphan_documents_deleted: int = 0
    orphan_documents_within_grace: int = 0
    unreadable_documents: int = 0
    unreadable_documents_deleted: int = 0
    missing_documents: int = 0
    missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Consistent after the repairs made: nothing missing, nothing left that should not be there."""
        leftover_orphans = self.orphan_documents - self.orphan_documents_deleted - self.orphan_documents_within_grace
        return (
            self.missing_documents == 0
            and leftover_orphans == 0
            and self.unreadable_documents == self.unreadable_documents_deleted
            and self.legacy_documents_unattributed == 0
        )

    def log_fields(self) -> dict[str, int | str | bool]:
        fields: dict[str, int | str | bool] = {k: v for k, v in asdict(self).items() if k != "missing"}
        fields["ok"] = self.ok
        return fields


def _legacy_owners(projector: PrivacyProjector) -> dict[str, str]:
    refs, _ = projector.translate(projector._entries(0, projector.ledger.size()))
    return {ref.sha256: ref.pid for ref in refs}


def check_store(
    ledger: Ledger,
    store: OffchainStore,
    *,
    full: bool,
    orphan_grace_s: float,
    repair: bool = True,
    access_catch_up: Any = None,
) -> StoreReport:
    """Bring the store level with the ledger and report; ``full`` re-reads the whole ledger.

    ``access_catch_up`` is the access-event projector's ``catch_up`` (it lives with the
    access-log service). Orphans older than ``orphan_grace_s`` and unreadable leftovers
    are deleted when ``repair``; younger orphans may belong to a write still in flight.
    """
    from ciphercare.services.audit.servicer import AccessProjector, index_from_event

    report = StoreReport(mode="full" if full else "startup", ledger_size=ledger.size())
    projector = PrivacyProjector(ledger, store)

    if store.legacy_document_count():
        sealed, left = store.seal_legacy_documents(_legacy_owners(projector))
        report.legacy_documents_sealed, report.legacy_documents_unattributed = sealed, left

    catch_up = access_catch_up or AccessProjector(ledger, store).catch_up
    report.access_events_caught_up = int(catch_up())
    if full:
        cursor = store.projection_cursor()
        present = store.projected_seqs(cursor)
        missing_rows = []
        for entry in projector._entries(0, min(cursor, ledger.size())):
            for event in entry.events:
                if event.name == EVENT_ACCESS_RECORDED and entry.seq not in present:
                    missing_rows.append(index_from_event(CommittedEvent(entry.seq, entry.tx_id, 0, event.name,
                                                                        event.payload)))
        if missing_rows:
            store.project_access_events(missing_rows)
        report.access_gaps_repaired = len(missing_rows)

    read, result = projector.catch_up(0 if full else None)
    report.privacy_entries_read = read
    report.documents_referenced = result.referenced
    report.erasures_applied = len(result.erasures_applied)
    report.missing_documents = len(result.missing)
    report.missing = [f"seq={m.seq} pid={m.pid} sha256={m.sha256}" for m in result.missing]

    now_ms = int(time.time() * 1000)
    orphans = store.orphan_documents()
    report.orphan_documents = len(orphans)
    expired = [o for o in orphans if o.created_ms < now_ms - orphan_grace_s * 1000]
    report.orphan_documents_within_grace = len(orphans) - len(expired)
    unreadable = store.unreadable_documents()
    report.unreadable_documents = len(unreadable)
    if repair:
        report.orphan_documents_deleted = store.delete_documents(expired)
        report.unreadable_documents_deleted = store.delete_unreadable_documents()

    level = logging.INFO if report.ok else logging.WARNING
    log.log(level, "store check", extra=report.log_fields())
    return report
