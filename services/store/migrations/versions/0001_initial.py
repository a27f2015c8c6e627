"""Initial off-chain schema: documents, access-event projection, cursors, pseudonyms.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "documents",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "access_events",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("event_id", sa.String(64), nullable=False, unique=True),
        sa.Column("tx_id", sa.String(64), nullable=False),
        sa.Column("recorded_ms", sa.BigInteger, nullable=False),
        sa.Column("pid", sa.String(64), nullable=False),
        sa.Column("agent_subject", sa.String(255), nullable=False),
        sa.Column("agent_org", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("event_json", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_access_events_pid_seq", "access_events", ["pid", "seq"])
    op.create_index("ix_access_events_org_seq", "access_events", ["agent_org", "seq"])
    op.create_index("ix_access_events_subject_seq", "access_events", ["agent_subject", "seq"])
    op.create_index("ix_access_events_recorded", "access_events", ["recorded_ms"])
    op.create_table(
        "projection_cursors",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("next_seq", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "pseudonyms",
        sa.Column("pid", sa.String(64), primary_key=True),
        sa.Column("org", sa.String(64), nullable=False),
        sa.Column("mrn_hmac", sa.String(64), nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("key_version", sa.Integer, nullable=False, server_default="1"),
        sa.UniqueConstraint("org", "mrn_hmac", name="uq_pseudonyms_org_mrn"),
    )


def downgrade() -> None:
    op.drop_table("pseudonyms")
    op.drop_table("projection_cursors")
    op.drop_index("ix_access_events_recorded", "access_events")
    op.drop_index("ix_access_events_subject_seq", "access_events")
    op.drop_index("ix_access_events_org_seq", "access_events")
    op.drop_index("ix_access_events_pid_seq", "access_events")
    op.drop_table("access_events")
    op.drop_table("documents")
