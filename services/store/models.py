"""Off-chain tables (SQLAlchemy 2 declarative). Schema changes go through Alembic only.

What lives here and never on the ledger: full FHIR documents and access details
(content-addressed by the SHA-256 the ledger records, sealed under per-patient
data keys), the wrapped data keys, the searchable projection of access events,
the erasures applied, and the pseudonym registry.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Document(Base):
    """A PHI-bearing document kept off-chain, referenced on-chain by the SHA-256 of its plaintext.

    The body is sealed (AES-256-GCM) under the data key of the patient ``pid``
    (``key_id``); ``sha256`` stays the hash of the plaintext canonical JSON, which
    is what the ledger records. Rows from before migration 0002 have ``key_id``
    NULL (plaintext) until start-up seals them. ``ledger_seq`` is the ledger entry
    that references the document, NULL until seen (an orphan if it stays NULL).
    """

    __tablename__ = "documents"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    pid: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)  # fhir-consent | access-detail
    body: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_ms: Mapped[int] = mapped_column(BigInteger, nullable=False)
    ledger_seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)

    __table_args__ = (
        Index("ix_documents_pid", "pid"),
        Index("ix_documents_unreferenced", "ledger_seq", "created_ms"),
    )


class DataKey(Base):
    """A patient's data key, only ever stored wrapped by the key-encryption key ``kek_id``.

    Deleting the row is the erasure: every ciphertext under ``key_id`` becomes noise.
    """

    __tablename__ = "data_keys"

    pid: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32), nullable=False, unique=True)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    kek_id: Mapped[str] = mapped_column(String(16), nullable=False)
    created_ms: Mapped[int] = mapped_column(BigInteger, nullable=False)


class Erasure(Base):
    """A patient erasure applied to this store: the projection of one erasure event on the ledger."""

    __tablename__ = "erasures"

    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    pid: Mapped[str] = mapped_column(String(64), nullable=False)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    tx_id: Mapped[str] = mapped_column(String(64), nullable=False)
    erased_ms: Mapped[int] = mapped_column(BigInteger, nullable=False)
    applied_ms: Mapped[int] = mapped_column(BigInteger, nullable=False)
    documents_shredded: Mapped[int] = mapped_column(Integer, nullable=False)
    keys_destroyed: Mapped[int] = mapped_column(Integer, nullable=False)

    __table_args__ = (Index("ix_erasures_pid", "pid"),)


class AccessEventRow(Base):
    """Searchable projection of the ledger's AccessRecorded events; rebuilt from the ledger at will."""

    __tablename__ = "access_events"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    # scoreperf (issue 16 item 3, migration 0003): position in an accessbatch batch; -1 for a Record event.
    member: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False, server_default="-1")
    event_id: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    tx_id: Mapped[str] = mapped_column(String(64), nullable=False)
    recorded_ms: Mapped[int] = mapped_column(BigInteger, nullable=False)
    pid: Mapped[str] = mapped_column(String(64), nullable=False)
    agent_subject: Mapped[str] = mapped_column(String(255), nullable=False)
    agent_org: Mapped[str] = mapped_column(String(64), nullable=False)
    purpose: Mapped[str] = mapped_column(String(32), nullable=False)
    outcome: Mapped[str] = mapped_column(String(16), nullable=False)
    event_json: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)

    __table_args__ = (
        Index("ix_access_events_pid_seq", "pid", "seq"),
        Index("ix_access_events_org_seq", "agent_org", "seq"),
        Index("ix_access_events_subject_seq", "agent_subject", "seq"),
        Index("ix_access_events_recorded", "recorded_ms"),
    )


class ProjectionCursor(Base):
    """How far a projection has applied the ledger: every seq below next_seq is applied."""

    __tablename__ = "projection_cursors"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    next_seq: Mapped[int] = mapped_column(BigInteger, nullable=False)


class Pseudonym(Base):
    """Pseudonym registry: a hospital's record number is kept only as a keyed hash."""

    __tablename__ = "pseudonyms"

    pid: Mapped[str] = mapped_column(String(64), primary_key=True)
    org: Mapped[str] = mapped_column(String(64), nullable=False)
    mrn_hmac: Mapped[str] = mapped_column(String(64), nullable=False)
    created_ms: Mapped[int] = mapped_column(BigInteger, nullable=False)
    key_version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)

    __table_args__ = (UniqueConstraint("org", "mrn_hmac", name="uq_pseudonyms_org_mrn"),)


__all__ = ["Base", "DataKey", "Document", "Erasure", "AccessEventRow", "ProjectionCursor", "Pseudonym", "Text"]


class AccessBatch(Base):
    """A batch of access events, off-chain: its members' salted leaves (salt || member JSON) under its root.

    ``leaves`` is each leaf with a 4-byte big-endian length prefix, in position order. Written before the
    batch root is submitted to ``accessbatch:RecordBatch``; the access projection reads the members of each
    committed root (scoreperf, issue 16 item 3; migration 0003).
    """

    __tablename__ = "access_batches"

    root: Mapped[str] = mapped_column(String(64), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, nullable=False)
    leaves: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    created_ms: Mapped[int] = mapped_column(BigInteger, nullable=False)
