"""The off-chain store: sealed documents by hash, data keys, the access-event projection, erasures.

SQLite by default (WAL, secure_delete), PostgreSQL by URL (psycopg 3). The schema is
created and upgraded by Alembic only (:meth:`OffchainStore.migrate`).

PHI-bearing documents are sealed with the patient's data key (envelope encryption,
:mod:`ciphercare.services.store.envelope`); the store needs the key-encryption key to write
or read them and refuses without one (fail closed). SQL parameters are never put in
exception messages (``hide_parameters``), so a failing statement cannot carry a
document or a pseudonym into a log line.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, delete, event, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from ciphercare.services.store.envelope import (
    CryptoError,
    KeyEncryptionKey,
    new_data_key,
    new_key_id,
    open_document,
    seal_document,
)
from ciphercare.services.store.models import (
    AccessBatch,
    AccessEventRow,
    DataKey,
    Document,
    Erasure,
    ProjectionCursor,
    Pseudonym,
)
from ciphercare.services.store.offloop import StoreExecutor

log = logging.getLogger("ciphercare.store")
P = ParamSpec("P")
T = TypeVar("T")

ACCESS_PROJECTION = "access-events"
PRIVACY_PROJECTION = "privacy"
DOCUMENT_KINDS = frozenset({"fhir-consent", "access-detail", "consent-evidence", "breakglass-justification",
                            "breakglass-note"})



def _rowcount(result: Any) -> int:
    """Rows matched by an UPDATE or DELETE (a CursorResult's rowcount; SQLAlchemy types it on CursorResult only)."""
    return int(result.rowcount)

class DocumentIntegrityError(RuntimeError):
    """A stored document no longer hashes to its key, or its ciphertext was altered."""


class DocumentErasedError(LookupError):
    """The document belonged to a patient whose data was erased (its data key is destroyed)."""


class _KeyErasedMeanwhile(Exception):
    """Internal: the data key a write used was destroyed before the write committed."""


class StoreConfigError(RuntimeError):
    """The store was asked to seal or open PHI without a key-encryption key."""


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class AccessEventIndex:
    """The searchable columns of one access event, plus its canonical JSON."""

    seq: int
    event_id: str
    tx_id: str
    recorded_ms: int
    pid: str
    agent_subject: str
    agent_org: str
    purpose: str
    outcome: str
    event_json: bytes
    #: Position in its ``accessbatch`` batch (scoreperf, issue 16 item 3); -1 for an event with its own transaction.
    member: int = -1


@dataclass(frozen=True)
class AccessQuery:
    """Filters of an access-event search; empty means any. ``scope_*`` come from the caller's identity."""

    pid: str = ""
    agent_subject: str = ""
    agent_org: str = ""
    purpose: str = ""
    outcome: str = ""
    recorded_from_ms: int | None = None
    recorded_to_ms: int | None = None
    scope_pid: str | None = None
    scope_org: str | None = None

    def fingerprint(self) -> str:
        """Stable hash of the filters, bound into page tokens so a cursor can't be reused with others."""
        text_ = "|".join(
            str(v)
            for v in (
                self.pid, self.agent_subject, self.agent_org, self.purpose, self.outcome,
                self.recorded_from_ms, self.recorded_to_ms, self.scope_pid, self.scope_org,
            )
        )
        return hashlib.sha256(text_.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class DocumentRef:
    """A ledger entry (``seq``) that references the document ``sha256`` of patient ``pid``."""

    sha256: str
    pid: str
    seq: int


@dataclass(frozen=True)
class ErasureEvent:
    """An erasure recorded on the ledger, to be applied to this store."""

    event_id: str
    pid: str
    seq: int
    tx_id: str
    erased_ms: int


@dataclass
class PrivacyBatchResult:
    """What one privacy-projection batch changed."""

    referenced: int = 0
    missing: list[DocumentRef] = field(default_factory=list)
    erasures_applied: list[Erasure] = field(default_factory=list)


@dataclass(frozen=True)
class OrphanDocument:
    sha256: str
    pid: str
    kind: str
    created_ms: int


def _sqlite_pragmas(busy_timeout_ms: int) -> Any:
    def apply(dbapi_connection: Any, _record: Any) -> None:
        _set_sqlite_pragmas(dbapi_connection, busy_timeout_ms)

    return apply


def _set_sqlite_pragmas(dbapi_connection: Any, busy_timeout_ms: int) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")  # a writer waits this long for the lock
    # Deleted rows (destroyed data keys, erased documents) are overwritten with zeros, not left in free pages.
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


def normalize_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` mean psycopg 3, the one PostgreSQL driver ciphercare ships."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def redacted_url(url: str) -> str:
    """The URL with any password masked, for messages and logs."""
    return make_url(normalize_url(url)).render_as_string(hide_password=True)


def make_engine(
    url: str,
    *,
    pool_size: int = 5,
    pool_timeout_s: float = 10.0,
    connect_timeout_s: float = 5.0,
    statement_timeout_ms: int = 30_000,
    lock_timeout_ms: int = 10_000,
    idle_in_transaction_timeout_ms: int = 60_000,
    pool_recycle_s: int = 1800,
) -> Engine:
    """Create an engine with deliberate pooling and timeouts for the dialect.

    PostgreSQL: a bounded pool (``pool_size`` plus as many overflow connections),
    callers wait at most ``pool_timeout_s`` for a connection, a connection attempt
    gives up after ``connect_timeout_s``, connections are checked before use and
    recycled after ``pool_recycle_s``; on the server, a statement may run
    ``statement_timeout_ms``, wait for a lock ``lock_timeout_ms``, and a session may
    sit idle inside a transaction ``idle_in_transaction_timeout_ms`` before it is
    cancelled, so no request can hold a lock or a pooled connection forever.
    SQLite: one file; a writer waits up to ``pool_timeout_s`` for the write lock, then fails.
    """
    url = normalize_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"timeout": pool_timeout_s, "check_same_thread": False},
            hide_parameters=True,
        )
        event.listen(engine, "connect", _sqlite_pragmas(int(pool_timeout_s * 1000)))
        return engine
    if not url.startswith("postgresql+psycopg"):
        raise StoreConfigError(
            f"unsupported database URL {redacted_url(url)}: use sqlite:///path or postgresql+psycopg://..."
        )
    options = (
        f"-c statement_timeout={int(statement_timeout_ms)} -c lock_timeout={int(lock_timeout_ms)} "
        f"-c idle_in_transaction_session_timeout={int(idle_in_transaction_timeout_ms)}"
    )
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=pool_timeout_s,
        pool_pre_ping=True,
        pool_recycle=pool_recycle_s,
        hide_parameters=True,
        connect_args={
            "connect_timeout": max(1, int(round(connect_timeout_s))),
            "application_name": "ciphercare",
            "options": options,
        },
    )


class OffchainStore:
    """Repository over the off-chain database."""

    def __init__(self, engine: Engine, kek: KeyEncryptionKey | None = None, *, workers: int = 10) -> None:
        self.engine = engine
        self.kek = kek
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        #: Async handlers reach the store through :meth:`run`, never on the event loop (``offloop.py``).
        self.offloop = StoreExecutor(workers)

    @classmethod
    def from_url(cls, url: str, *, kek: KeyEncryptionKey | None = None, **engine_options: Any) -> OffchainStore:
        # As many store threads as the pool hands out connections (pool_size plus as many overflow).
        workers = 2 * int(engine_options.get("pool_size", 5))
        return cls(make_engine(url, **engine_options), kek, workers=workers)

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await a store call (``store.run(store.put_document, ...)``) off the event loop (``offloop.py``)."""
        return await self.offloop.run(fn, *args, **kwargs)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def migrate(self, revision: str = "head") -> None:
        """Bring the schema to ``revision`` with Alembic (one log line when it changed)."""
        before = self.schema_revision()
        self._alembic("upgrade", revision)
        after = self.schema_revision()
        if after != before:
            log.info("off-chain schema migrated", extra={"from_revision": before or "none", "to_revision": after,
                                                         "dialect": self.dialect})

    def downgrade(self, revision: str) -> None:
        """Take the schema back to ``revision`` (tests of the migrations)."""
        self._alembic("downgrade", revision)

    def _alembic(self, action: str, revision: str) -> None:
        config = Config()
        config.set_main_option(
            "script_location", str(resources.files("ciphercare.services.store") / "migrations")
        )
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            getattr(command, action)(config, revision)

    def schema_revision(self) -> str | None:
        with self.engine.connect() as connection:
            try:
                return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
            except Exception:  # noqa: BLE001 - no table yet
                return None

    def session(self) -> Session:
        return self._sessions()

    def close(self) -> None:
        self.offloop.close()
        self.engine.dispose()

    def _insert(self, model: type) -> Any:
        return pg_insert(model) if self.dialect == "postgresql" else sqlite_insert(model)

    def _require_kek(self) -> KeyEncryptionKey:
        if self.kek is None:
            raise StoreConfigError("the off-chain store has no key-encryption key; PHI cannot be sealed or opened")
        return self.kek

    # Data keys ------------------------------------------------------------

    def _data_key(self, session: Session, pid: str, *, create: bool) -> tuple[str, bytes] | None:
        """The patient's (key id, data key); created when absent and ``create``.

        Concurrent creators race on the primary key (INSERT .. ON CONFLICT DO NOTHING),
        then everyone reads the winner. A writer (``create``) reads the row FOR SHARE on
        PostgreSQL, so an erasure (which deletes it) waits until the writer's document is
        committed and then deletes that document too.
        """
        kek = self._require_kek()
        query = select(DataKey).where(DataKey.pid == pid)
        if create and self.dialect == "postgresql":
            query = query.with_for_update(read=True)
        row = session.scalars(query).first()
        if row is None and create:
            key_id = new_key_id()
            session.execute(
                self._insert(DataKey).values(
                    pid=pid, key_id=key_id, wrapped_key=kek.wrap(new_data_key(), pid, key_id), kek_id=kek.kek_id,
                    created_ms=_now_ms(),
                ).on_conflict_do_nothing(index_elements=["pid"])
            )
            row = session.scalars(query).first()
        if row is None:
            return None
        return row.key_id, kek.unwrap(bytes(row.wrapped_key), pid, row.key_id, row.kek_id)

    # Documents ------------------------------------------------------------

    def put_document(self, kind: str, body: bytes, *, pid: str) -> str:
        """Seal ``body`` under the data key of ``pid`` and store it by the SHA-256 of the plaintext.

        Idempotent: the same body for the same patient is stored once. Returns the hex digest,
        which is what the ledger records.
        """
        if kind not in DOCUMENT_KINDS:
            raise ValueError(f"unknown document kind {kind!r}")
        if not pid:
            raise ValueError("a document must belong to a patient pseudonym")
        digest = hashlib.sha256(body).hexdigest()
        for _ in range(3):
            try:
                return self._put_sealed(kind, body, pid, digest)
            except _KeyErasedMeanwhile:
                continue
        raise StoreConfigError(f"could not seal a document of kind {kind}: its patient's key kept being erased")

    def _put_sealed(self, kind: str, body: bytes, pid: str, digest: str) -> str:
        """One attempt: seal under the current key, insert, and confirm the key outlived the write."""
        with self.session() as session, session.begin():
            key = self._data_key(session, pid, create=True)
            if key is None:  # pragma: no cover - created just above in this transaction
                raise StoreConfigError(f"no data key could be created for a document of kind {kind}")
            key_id, data_key = key
            sealed = seal_document(data_key, body, sha256=digest, pid=pid, kind=kind, key_id=key_id)
            session.execute(
                self._insert(Document).values(
                    sha256=digest, pid=pid, kind=kind, body=sealed, key_id=key_id, created_ms=_now_ms(),
                    ledger_seq=None,
                ).on_conflict_do_nothing(index_elements=["sha256", "pid"])
            )
            # Inside the write transaction now: if an erasure destroyed the key since we read it
            # (SQLite reads it before taking the write lock), start again under a new key.
            if session.scalar(select(DataKey.key_id).where(DataKey.pid == pid)) != key_id:
                raise _KeyErasedMeanwhile  # rolls this transaction back
        return digest

    def get_document(self, sha256: str, *, pid: str) -> bytes | None:
        """The plaintext of document ``sha256`` of ``pid``, re-hashed before it is returned.

        ``None`` if it never existed; :class:`DocumentErasedError` if the patient was erased
        (or its data key is gone); :class:`DocumentIntegrityError` if it was altered.
        """
        with self.session() as session:
            row = session.get(Document, (sha256, pid))
            if row is None:
                if self._erased(session, pid):
                    raise DocumentErasedError(f"document {sha256} belonged to an erased patient")
                return None
            if row.key_id is None:
                plaintext = bytes(row.body)  # written before 0002 and not sealed yet
            else:
                key = self._data_key(session, pid, create=False)
                if key is None or key[0] != row.key_id:
                    raise DocumentErasedError(f"document {sha256}: its data key has been destroyed")
                try:
                    plaintext = open_document(key[1], bytes(row.body), sha256=sha256, pid=pid, kind=row.kind,
                                              key_id=row.key_id)
                except CryptoError as exc:
                    raise DocumentIntegrityError(str(exc)) from exc
        if hashlib.sha256(plaintext).hexdigest() != sha256:
            raise DocumentIntegrityError(f"document {sha256} does not match its hash")
        return plaintext

    @staticmethod
    def _erased(session: Session, pid: str, after_seq: int | None = None) -> bool:
        """Whether ``pid`` was erased (after ledger entry ``after_seq``, when given)."""
        query = select(Erasure.event_id).where(Erasure.pid == pid)
        if after_seq is not None:
            query = query.where(Erasure.seq > after_seq)
        return session.scalars(query.limit(1)).first() is not None

    def legacy_document_count(self) -> int:
        """Documents still in plaintext from before migration 0002."""
        with self.session() as session:
            return int(session.scalar(select(func.count()).select_from(Document).where(Document.key_id.is_(None))) or 0)

    def legacy_documents(self) -> list[str]:
        with self.session() as session:
            return list(session.scalars(select(Document.sha256).where(Document.key_id.is_(None))))

    def seal_legacy_documents(self, owners: dict[str, str]) -> tuple[int, int]:
        """Seal pre-0002 plaintext rows under their patient's data key; ``owners`` maps sha256 -> pid.

        Returns (sealed, left): rows no ledger record attributes to a patient are left as they
        are and reported as orphans.
        """
        sealed = left = 0
        with self.session() as session, session.begin():
            rows = list(session.scalars(select(Document).where(Document.key_id.is_(None), Document.pid == "")))
            for row in rows:
                pid = owners.get(row.sha256)
                if not pid:
                    left += 1
                    continue
                key = self._data_key(session, pid, create=True)
                if key is None:  # pragma: no cover
                    raise StoreConfigError("no data key")
                body = bytes(row.body)
                session.execute(
                    self._insert(Document).values(
                        sha256=row.sha256, pid=pid, kind=row.kind,
                        body=seal_document(key[1], body, sha256=row.sha256, pid=pid, kind=row.kind, key_id=key[0]),
                        key_id=key[0], created_ms=row.created_ms, ledger_seq=row.ledger_seq,
                    ).on_conflict_do_nothing(index_elements=["sha256", "pid"])
                )
                session.delete(row)
                sealed += 1
        return sealed, left

    # Privacy projection (references and erasures from the ledger) ---------------

    def _advance_cursor(self, session: Session, name: str, next_seq: int) -> None:
        session.execute(
            self._insert(ProjectionCursor).values(name=name, next_seq=0).on_conflict_do_nothing(
                index_elements=["name"])
        )
        session.execute(
            update(ProjectionCursor)
            .where(ProjectionCursor.name == name, ProjectionCursor.next_seq < next_seq)
            .values(next_seq=next_seq)
        )

    def apply_privacy_batch(
        self, refs: Sequence[DocumentRef], erasures: Sequence[ErasureEvent], next_seq: int | None
    ) -> PrivacyBatchResult:
        """Mark referenced documents and apply erasures, in ledger order, in ONE transaction with the cursor.

        Idempotent: marking keeps the first referencing seq, and an erasure already applied
        (same ledger event) is skipped, so replaying the ledger from any cursor is safe.
        """
        result = PrivacyBatchResult()
        items: list[tuple[int, DocumentRef | ErasureEvent]] = [(r.seq, r) for r in refs]
        items += [(e.seq, e) for e in erasures]
        items.sort(key=lambda item: item[0])
        with self.session() as session, session.begin():
            for _, item in items:
                if isinstance(item, DocumentRef):
                    matched = _rowcount(session.execute(
                        update(Document)
                        .where(Document.sha256 == item.sha256, Document.pid == item.pid)
                        .values(ledger_seq=func.coalesce(Document.ledger_seq, item.seq))
                    ))
                    if matched:
                        result.referenced += matched
                    elif not self._erased(session, item.pid, after_seq=item.seq):
                        result.missing.append(item)
                else:
                    applied = self._apply_erasure(session, item)
                    if applied is not None:
                        result.erasures_applied.append(applied)
            if next_seq is not None:
                self._advance_cursor(session, PRIVACY_PROJECTION, next_seq)
        if result.erasures_applied:
            self._scrub_freed_space()
        return result

    def _apply_erasure(self, session: Session, erasure: ErasureEvent) -> Erasure | None:
        if session.get(Erasure, erasure.event_id) is not None:
            return None
        # The key first: a concurrent writer holding it FOR SHARE finishes before this DELETE
        # proceeds, and the document DELETE below then sees that writer's row too.
        keys = _rowcount(session.execute(delete(DataKey).where(DataKey.pid == erasure.pid)))
        documents = _rowcount(session.execute(delete(Document).where(Document.pid == erasure.pid)))
        session.execute(delete(Pseudonym).where(Pseudonym.pid == erasure.pid))
        row = Erasure(
            event_id=erasure.event_id, pid=erasure.pid, seq=erasure.seq, tx_id=erasure.tx_id,
            erased_ms=erasure.erased_ms, applied_ms=_now_ms(), documents_shredded=documents, keys_destroyed=keys,
        )
        session.add(row)
        return row

    def _scrub_freed_space(self) -> None:
        """Best effort to drop the bytes of deleted rows from the database files.

        SQLite: ``secure_delete`` zeroed them in the main file; checkpointing truncates the WAL,
        which still held the old pages. PostgreSQL: VACUUM removes the dead tuples (their space
        is reused, not zeroed; WAL archives and backups keep wrapped copies until they expire or
        the KEK is rotated -- see docs/PRIVACY.md).
        """
        if self.dialect == "sqlite":
            with self.engine.connect() as connection:
                connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        elif self.dialect == "postgresql":
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                connection.exec_driver_sql("VACUUM data_keys, documents, pseudonyms")

    def erasures(self, pid: str | None = None) -> list[Erasure]:
        with self.session() as session:
            query = select(Erasure).order_by(Erasure.seq)
            if pid is not None:
                query = query.where(Erasure.pid == pid)
            return list(session.scalars(query))

    def orphan_documents(self, older_than_ms: int | None = None) -> list[OrphanDocument]:
        """Documents no ledger entry has been seen to reference (optionally only those created before a time)."""
        query = select(Document.sha256, Document.pid, Document.kind, Document.created_ms).where(
            Document.ledger_seq.is_(None)
        )
        if older_than_ms is not None:
            query = query.where(Document.created_ms < older_than_ms)
        with self.session() as session:
            return [OrphanDocument(*row) for row in session.execute(query.order_by(Document.created_ms))]

    def delete_documents(self, orphans: Iterable[OrphanDocument]) -> int:
        """Delete these (orphan) documents, only if still unreferenced, and then the data key of every
        patient left with no document at all (a key created for a write that never reached the ledger)."""
        deleted = 0
        pids: set[str] = set()
        with self.session() as session, session.begin():
            for orphan in orphans:
                deleted += _rowcount(session.execute(
                    delete(Document).where(
                        Document.sha256 == orphan.sha256, Document.pid == orphan.pid, Document.ledger_seq.is_(None)
                    )
                ))
                pids.add(orphan.pid)
        self.delete_orphan_data_keys(pids)
        return deleted

    def delete_orphan_data_keys(self, pids: Iterable[str] | None = None, older_than_ms: int | None = None) -> int:
        """Delete data keys (of ``pids``, or every patient) that seal no document; returns how many.

        A writer creates the key and its document in one transaction, so a key with no document is a
        leftover of deleted orphans (or of an erasure's documents), never a write in flight.
        """
        query = delete(DataKey).where(~select(Document.pid).where(Document.pid == DataKey.pid).exists())
        if pids is not None:
            wanted = sorted(set(pids))
            if not wanted:
                return 0
            query = query.where(DataKey.pid.in_(wanted))
        if older_than_ms is not None:
            query = query.where(DataKey.created_ms < older_than_ms)
        with self.session() as session, session.begin():
            return _rowcount(session.execute(query.execution_options(synchronize_session=False)))

    def data_key_count(self) -> int:
        """How many patients have a data key (tests and the store check)."""
        with self.session() as session:
            return int(session.scalar(select(func.count()).select_from(DataKey)) or 0)

    def unreadable_documents(self) -> list[tuple[str, str]]:
        """Sealed documents whose data key is gone (left by a write that raced an erasure)."""
        query = (
            select(Document.sha256, Document.pid)
            .outerjoin(DataKey, DataKey.key_id == Document.key_id)
            .where(Document.key_id.is_not(None), DataKey.key_id.is_(None))
        )
        with self.session() as session:
            return [(sha, pid) for sha, pid in session.execute(query)]

    def delete_unreadable_documents(self) -> int:
        rows = self.unreadable_documents()
        with self.session() as session, session.begin():
            for sha, pid in rows:
                session.execute(delete(Document).where(Document.sha256 == sha, Document.pid == pid))
        return len(rows)

    def rotate_kek(self, new_kek: KeyEncryptionKey) -> int:
        """Re-wrap every data key under ``new_kek`` in one transaction; returns how many."""
        old = self._require_kek()
        count = 0
        with self.session() as session, session.begin():
            for row in session.scalars(select(DataKey).with_for_update()):
                data_key = old.unwrap(bytes(row.wrapped_key), row.pid, row.key_id, row.kek_id)
                row.wrapped_key = new_kek.wrap(data_key, row.pid, row.key_id)
                row.kek_id = new_kek.kek_id
                count += 1
        self.kek = new_kek
        self._scrub_freed_space()
        return count

    # Access-event projection ---------------------------------------------

    def _insert_ignore(self, session: Session, rows: Sequence[AccessEventIndex]) -> None:
        values = [row.__dict__ for row in rows]
        if not values:
            return
        # No conflict target: the inline projection (Record) and the ledger follower may insert the same
        # event concurrently, and on PostgreSQL either unique index (seq or event_id) can detect it first.
        # scoreperf: executemany (SQLAlchemy's insertmanyvalues), not one VALUES clause compiled per call (a
        # 4,096-row batch took seconds to compile).
        session.execute(self._insert(AccessEventRow).on_conflict_do_nothing(), values)

    def project_access_events(self, rows: Iterable[AccessEventIndex], next_seq: int | None = None) -> None:
        """Apply events to the projection (idempotent by seq); advance the cursor when ``next_seq`` given."""
        batch = list(rows)
        with self.session() as session, session.begin():
            self._insert_ignore(session, batch)
            if next_seq is not None:
                self._advance_cursor(session, ACCESS_PROJECTION, next_seq)

    # Batched access events (scoreperf, issue 16 item 3) ------------------

    def stage_access_batch(self, root: str, leaves: Sequence[bytes]) -> None:
        """Keep a batch's salted member leaves under its root, before the root is submitted to the ledger.

        One row per batch (the leaves length-prefixed in one blob): a 4,096-member batch is one insert.
        """
        blob = b"".join(len(leaf).to_bytes(4, "big") + leaf for leaf in leaves)
        with self.session() as session, session.begin():
            session.add(AccessBatch(root=root, count=len(leaves), leaves=blob, created_ms=_now_ms()))

    def drop_access_batch(self, root: str) -> int:
        """Delete a batch's staged members (its root was refused or never committed); returns how many batches."""
        with self.session() as session, session.begin():
            result = session.execute(delete(AccessBatch).where(AccessBatch.root == root))
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def access_batch_leaves(self, root: str) -> list[bytes]:
        """A batch's staged member leaves in position order (empty if none are kept)."""
        with self.session() as session:
            blob = session.scalar(select(AccessBatch.leaves).where(AccessBatch.root == root))
        leaves: list[bytes] = []
        data = bytes(blob or b"")
        offset = 0
        while offset + 4 <= len(data):
            size = int.from_bytes(data[offset:offset + 4], "big")
            leaves.append(data[offset + 4:offset + 4 + size])
            offset += 4 + size
        return leaves

    def has_access_rows(self, seq: int) -> bool:
        """Whether ledger entry ``seq`` already has projected access-event rows."""
        with self.session() as session:
            return session.scalars(select(AccessEventRow.seq).where(AccessEventRow.seq == seq).limit(1)).first() \
                is not None

    def access_batch_count(self) -> int:
        """Batches kept off-chain (committed, or staged and not yet committed)."""
        with self.session() as session:
            return int(session.scalar(select(func.count()).select_from(AccessBatch)) or 0)

    def projection_cursor(self, name: str = ACCESS_PROJECTION) -> int:
        with self.session() as session:
            cursor = session.get(ProjectionCursor, name)
            return cursor.next_seq if cursor else 0

    def projected_seqs(self, below: int) -> set[int]:
        """Seqs of the projected access events below ``below`` (for the consistency check)."""
        with self.session() as session:
            return set(session.scalars(select(AccessEventRow.seq).where(AccessEventRow.seq < below)))

    def get_access_event(self, event_id: str) -> AccessEventIndex | None:
        with self.session() as session:
            row = session.scalars(select(AccessEventRow).where(AccessEventRow.event_id == event_id)).first()
            return _to_index(row) if row else None

    def search_access_events(
        self, query: AccessQuery, *, after_seq: int, limit: int, after_member: int | None = None
    ) -> tuple[list[AccessEventIndex], bool]:
        """Events after (after_seq, after_member) matching ``query``, oldest first; returns (rows, more).

        Without ``after_member`` every row of ``after_seq`` counts as seen (a batch entry has many rows).
        """
        if after_member is None:
            stmt = select(AccessEventRow).where(AccessEventRow.seq > after_seq)
        else:  # scoreperf: pages may end inside a batch entry
            stmt = select(AccessEventRow).where(
                (AccessEventRow.seq > after_seq)
                | ((AccessEventRow.seq == after_seq) & (AccessEventRow.member > after_member))
            )
        equal = (
            (AccessEventRow.pid, query.pid),
            (AccessEventRow.agent_subject, query.agent_subject),
            (AccessEventRow.agent_org, query.agent_org),
            (AccessEventRow.purpose, query.purpose),
            (AccessEventRow.outcome, query.outcome),
        )
        for column, value in equal:
            if value:
                stmt = stmt.where(column == value)
        if query.scope_pid is not None:
            stmt = stmt.where(AccessEventRow.pid == query.scope_pid)
        if query.scope_org is not None:
            stmt = stmt.where(AccessEventRow.agent_org == query.scope_org)
        if query.recorded_from_ms is not None:
            stmt = stmt.where(AccessEventRow.recorded_ms >= query.recorded_from_ms)
        if query.recorded_to_ms is not None:
            stmt = stmt.where(AccessEventRow.recorded_ms < query.recorded_to_ms)
        stmt = stmt.order_by(AccessEventRow.seq, AccessEventRow.member).limit(limit + 1)
        with self.session() as session:
            rows = [_to_index(r) for r in session.scalars(stmt)]
        return rows[:limit], len(rows) > limit


def _to_index(row: AccessEventRow) -> AccessEventIndex:
    return AccessEventIndex(
        seq=row.seq,
        event_id=row.event_id,
        tx_id=row.tx_id,
        recorded_ms=row.recorded_ms,
        pid=row.pid,
        agent_subject=row.agent_subject,
        agent_org=row.agent_org,
        purpose=row.purpose,
        outcome=row.outcome,
        event_json=bytes(row.event_json),
        member=row.member,
    )
