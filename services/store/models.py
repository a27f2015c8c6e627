"""Off-chain tables (SQLAlchemy 2 declarative). Schema changes go through Alembic only.

What lives here and never on the ledger: full FHIR documents and access details
(content-addressed by the SHA-256 the ledger records), the searchable projection
of access events, and the pseudonym registry.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Document(Base):
    """A document kept off-chain and referenced on-chain by its SHA-256 (content-addressed)."""

    __tablename__ = "documents"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)  # fhir-consent | access-detail
    body: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    created_ms: Mapped[int] = mapped_column(BigInteger, nullable=False)


class AccessEventRow(Base):
    """Searchable projection of the ledger's AccessRecorded events; rebuilt from the ledger at will."""

    __tablename__ = "access_events"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
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


__all__ = ["Base", "Document", "AccessEventRow", "ProjectionCursor", "Pseudonym", "Text"]
