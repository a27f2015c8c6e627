"""The off-chain store: documents by hash, the access-event projection, pseudonyms.

SQLite by default (WAL, foreign keys on), PostgreSQL by URL. The schema is
created and upgraded by Alembic only (:meth:`OffchainStore.migrate`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from ciphercare.services.store.models import AccessEventRow, Document, ProjectionCursor

ACCESS_PROJECTION = "access-events"


class DocumentIntegrityError(RuntimeError):
    """A stored document no longer hashes to its key."""


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
        text = "|".join(
            str(v)
            for v in (
                self.pid, self.agent_subject, self.agent_org, self.purpose, self.outcome,
                self.recorded_from_ms, self.recorded_to_ms, self.scope_pid, self.scope_org,
            )
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def make_engine(url: str, *, pool_size: int = 5, pool_timeout_s: float = 10.0) -> Engine:
    """Create an engine with deliberate pooling and timeouts for the dialect."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": pool_timeout_s, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=pool_timeout_s,
        pool_pre_ping=True,
        pool_recycle=1800,
    )


class OffchainStore:
    """Repository over the off-chain database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def from_url(cls, url: str, *, pool_size: int = 5, pool_timeout_s: float = 10.0) -> OffchainStore:
        return cls(make_engine(url, pool_size=pool_size, pool_timeout_s=pool_timeout_s))

    def migrate(self, revision: str = "head") -> None:
        """Bring the schema to ``revision`` with Alembic."""
        config = Config()
        config.set_main_option(
            "script_location", str(resources.files("ciphercare.services.store") / "migrations")
        )
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)

    def session(self) -> Session:
        return self._sessions()

    def close(self) -> None:
        self.engine.dispose()

    # Documents ------------------------------------------------------------

    def put_document(self, kind: str, body: bytes) -> str:
        """Store ``body`` under its SHA-256 (idempotent) and return the hex digest."""
        digest = hashlib.sha256(body).hexdigest()
        with self.session() as session, session.begin():
            if session.get(Document, digest) is None:
                session.add(Document(sha256=digest, kind=kind, body=body, created_ms=int(time.time() * 1000)))
        return digest

    def get_document(self, sha256: str) -> bytes | None:
        """The document whose hash is ``sha256``, re-hashed before it is returned."""
        with self.session() as session:
            row = session.get(Document, sha256)
            if row is None:
                return None
            if hashlib.sha256(row.body).hexdigest() != sha256:
                raise DocumentIntegrityError(f"document {sha256} does not match its hash")
            return bytes(row.body)

    # Access-event projection ---------------------------------------------

    def _insert_ignore(self, session: Session, rows: Sequence[AccessEventIndex]) -> None:
        values = [row.__dict__ for row in rows]
        if not values:
            return
        if self.engine.dialect.name == "postgresql":
            stmt = pg_insert(AccessEventRow).values(values).on_conflict_do_nothing(index_elements=["seq"])
        else:
            stmt = sqlite_insert(AccessEventRow).values(values).on_conflict_do_nothing(index_elements=["seq"])
        session.execute(stmt)

    def project_access_events(self, rows: Iterable[AccessEventIndex], next_seq: int | None = None) -> None:
        """Apply events to the projection (idempotent by seq); advance the cursor when ``next_seq`` given."""
        batch = list(rows)
        with self.session() as session, session.begin():
            self._insert_ignore(session, batch)
            if next_seq is not None:
                cursor = session.get(ProjectionCursor, ACCESS_PROJECTION, with_for_update=True)
                if cursor is None:
                    session.add(ProjectionCursor(name=ACCESS_PROJECTION, next_seq=next_seq))
                elif next_seq > cursor.next_seq:
                    cursor.next_seq = next_seq

    def projection_cursor(self, name: str = ACCESS_PROJECTION) -> int:
        with self.session() as session:
            cursor = session.get(ProjectionCursor, name)
            return cursor.next_seq if cursor else 0

    def get_access_event(self, event_id: str) -> AccessEventIndex | None:
        with self.session() as session:
            row = session.scalars(select(AccessEventRow).where(AccessEventRow.event_id == event_id)).first()
            return _to_index(row) if row else None

    def search_access_events(
        self, query: AccessQuery, *, after_seq: int, limit: int
    ) -> tuple[list[AccessEventIndex], bool]:
        """Events with seq > after_seq matching ``query``, oldest first; returns (rows, more)."""
        stmt = select(AccessEventRow).where(AccessEventRow.seq > after_seq)
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
        stmt = stmt.order_by(AccessEventRow.seq).limit(limit + 1)
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
    )
