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
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from ciphercare.consent.contracts import (
    ERASURE_OUTCOME_DESC,
    EVENT_ACCESS_RECORDED,
    EVENT_CONSENT_GRANTED,
)
from ciphercare.consent.contracts.breakglass import EVENT_BREAKGLASS_DECLARED, EVENT_BREAKGLASS_REVIEWED
from ciphercare.ledger.api import CommittedEvent, Principal
from ciphercare.services.platform.gateway import ContractHandles, evaluate_json
from ciphercare.services.platform.projections import committed_events
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
PRIVACY_EVENTS = frozenset(
    {EVENT_CONSENT_GRANTED, EVENT_ACCESS_RECORDED, EVENT_BREAKGLASS_DECLARED, EVENT_BREAKGLASS_REVIEWED}
)
PRIVACY_CURSOR = "privacy"
_CHUNK = 1024


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


class PrivacyProjection:
    """Document references and erasures from the ledger into the store (idempotent, resumable).

    A projection fed by the :class:`~ciphercare.services.platform.projections.ProjectionRunner`.
    """

    cursor_name = PRIVACY_CURSOR
    event_names = PRIVACY_EVENTS

    def __init__(self, ledger: ContractHandles, store: OffchainStore) -> None:
        self.ledger = ledger
        self.store = store

    def cursor(self) -> int:
        return self.store.projection_cursor(PRIVACY_CURSOR)

    def _consent_document(self, payload: dict[str, Any]) -> tuple[str, str, str | None]:
        """(document hash, pid, evidence hash or None) of a ConsentGranted event."""
        if payload.get("document_sha256"):
            evidence = payload.get("evidence_sha256")
            return str(payload["document_sha256"]), str(payload["pid"]), str(evidence) if evidence else None
        # Ledgers written before ConsentGranted carried the hash: read the record (rare; legacy entries only).
        contract = self.ledger.consent(PRIVACY_PRINCIPAL)
        record = asyncio.run(evaluate_json(contract, "Get", str(payload["consent_id"])))
        evidence = record.get("evidence_sha256")
        return str(record["document_sha256"]), str(record["pid"]), str(evidence) if evidence else None

    def translate(self, events: Iterable[CommittedEvent]) -> tuple[list[DocumentRef], list[ErasureEvent]]:
        """The document references and erasures a run of committed events carries."""
        refs: list[DocumentRef] = []
        erasures: list[ErasureEvent] = []
        for event in events:
            if event.name == EVENT_CONSENT_GRANTED:
                sha, pid, evidence = self._consent_document(json.loads(event.payload))
                refs.append(DocumentRef(sha, pid, event.seq))
                if evidence is not None:  # the signed form staff attached (kept off-chain by the service)
                    refs.append(DocumentRef(evidence, pid, event.seq))
            elif event.name in (EVENT_BREAKGLASS_DECLARED, EVENT_BREAKGLASS_REVIEWED):
                # Break-glass (issue 15): the justification / reviewer note documents, by hash.
                payload = json.loads(event.payload)
                sha = payload["text_sha256"] if event.name == EVENT_BREAKGLASS_DECLARED else payload["note_sha256"]
                if sha:
                    refs.append(DocumentRef(str(sha), str(payload["pid"]), event.seq))
            elif event.name == EVENT_ACCESS_RECORDED:
                payload = json.loads(event.payload)
                entity = payload.get("entity") or {}
                if entity.get("detail_sha256") and entity.get("pid"):
                    refs.append(DocumentRef(str(entity["detail_sha256"]), str(entity["pid"]), event.seq))
                erasure = erasure_from_event(payload, event.seq, event.tx_id)
                if erasure is not None:
                    erasures.append(erasure)
        return refs, erasures

    def apply(self, events: Sequence[CommittedEvent], next_seq: int) -> None:
        refs, erasures = self.translate(events)
        result = self.store.apply_privacy_batch(refs, erasures, next_seq)
        for missing in result.missing:
            log.error("ledger references a missing document", extra={"seq": missing.seq, "pid": missing.pid})
        for erasure in result.erasures_applied:
            log.info("erasure applied", extra={"seq": erasure.seq, "pid": erasure.pid,
                                               "documents_shredded": erasure.documents_shredded})

    def replay(self, start: int | None = None) -> tuple[int, PrivacyBatchResult]:
        """Apply every committed entry from the cursor (or ``start``); returns (entries read, totals)."""
        log_ = self.ledger.transparency
        first = self.cursor() if start is None else start
        end = log_.size()
        total = PrivacyBatchResult()
        seq = first
        while seq < end:
            stop = min(end, seq + _CHUNK)
            refs, erasures = self.translate(committed_events(log_, seq, stop, PRIVACY_EVENTS))
            result = self.store.apply_privacy_batch(refs, erasures, stop)
            total.referenced += result.referenced
            total.missing += result.missing
            total.erasures_applied += result.erasures_applied
            seq = stop
        return max(0, end - first), total


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
    orphan_data_keys_deleted: int = 0
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


def _legacy_owners(projection: PrivacyProjection) -> dict[str, str]:
    log_ = projection.ledger.transparency
    refs, _ = projection.translate(committed_events(log_, 0, log_.size(), PRIVACY_EVENTS))
    return {ref.sha256: ref.pid for ref in refs}


def check_store(
    ledger: ContractHandles,
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
    from ciphercare.services.audit.servicer import AccessProjection, index_from_event

    log_ = ledger.transparency
    report = StoreReport(mode="full" if full else "startup", ledger_size=log_.size())
    projector = PrivacyProjection(ledger, store)

    if store.legacy_document_count():
        sealed, left = store.seal_legacy_documents(_legacy_owners(projector))
        report.legacy_documents_sealed, report.legacy_documents_unattributed = sealed, left

    access = AccessProjection(store)
    report.access_events_caught_up = int(access_catch_up() if access_catch_up else access.replay(log_))
    if full:
        cursor = store.projection_cursor()
        present = store.projected_seqs(cursor)
        missing_rows = []
        for event in committed_events(log_, 0, min(cursor, log_.size()), frozenset({EVENT_ACCESS_RECORDED})):
            if event.seq not in present:
                missing_rows.append(index_from_event(event))
        if missing_rows:
            store.project_access_events(missing_rows)
        report.access_gaps_repaired = len(missing_rows)

    read, result = projector.replay(0 if full else None)
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
        # Data keys that seal nothing (left by refused writes of older versions, or by deleted orphans).
        report.orphan_data_keys_deleted = store.delete_orphan_data_keys()

    level = logging.INFO if report.ok else logging.WARNING
    log.log(level, "store check", extra=report.log_fields())
    return report
