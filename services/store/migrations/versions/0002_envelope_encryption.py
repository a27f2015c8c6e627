"""Envelope encryption and erasure: documents keyed by (sha256, pid), data keys, erasures.

Documents become per-patient rows sealed under the patient's data key (``key_id``);
rows written before this revision keep their plaintext with ``pid = ''`` and
``key_id`` NULL until start-up attributes them to a patient via the ledger and
seals them (``OffchainStore.seal_legacy_documents``).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "documents_0002",
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("pid", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("ledger_seq", sa.BigInteger, nullable=True),
        sa.PrimaryKeyConstraint("sha256", "pid", name="pk_documents"),
    )
    op.execute(
        "INSERT INTO documents_0002 (sha256, pid, kind, body, key_id, created_ms, ledger_seq) "
        "SELECT sha256, '', kind, body, NULL, created_ms, NULL FROM documents"
    )
    op.drop_table("documents")
    op.rename_table("documents_0002", "documents")
    op.create_index("ix_documents_pid", "documents", ["pid"])
    op.create_index("ix_documents_unreferenced", "documents", ["ledger_seq", "created_ms"])
    op.create_table(
        "data_keys",
        sa.Column("pid", sa.String(64), primary_key=True),
        sa.Column("key_id", sa.String(32), nullable=False, unique=True),
        sa.Column("wrapped_key", sa.LargeBinary, nullable=False),
        sa.Column("kek_id", sa.String(16), nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "erasures",
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("pid", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("tx_id", sa.String(64), nullable=False),
        sa.Column("erased_ms", sa.BigInteger, nullable=False),
        sa.Column("applied_ms", sa.BigInteger, nullable=False),
        sa.Column("documents_shredded", sa.Integer, nullable=False),
        sa.Column("keys_destroyed", sa.Integer, nullable=False),
    )
    op.create_index("ix_erasures_pid", "erasures", ["pid"])


def downgrade() -> None:
    sealed = op.get_bind().execute(sa.text("SELECT COUNT(*) FROM documents WHERE key_id IS NOT NULL")).scalar()
    if sealed:
        raise RuntimeError(
            f"cannot downgrade below 0002: {sealed} documents are encrypted and 0001 has no place for their keys"
        )
    op.drop_index("ix_erasures_pid", "erasures")
    op.drop_table("erasures")
    op.drop_table("data_keys")
    op.create_table(
        "documents_0001",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
    )
    op.execute(
        "INSERT INTO documents_0001 (sha256, kind, body, created_ms) "
        "SELECT sha256, MIN(kind), MIN(body), MIN(created_ms) FROM documents GROUP BY sha256"
    )
    op.drop_index("ix_documents_unreferenced", "documents")
    op.drop_index("ix_documents_pid", "documents")
    op.drop_table("documents")
    op.rename_table("documents_0001", "documents")
