"""Batched access events: one projection row per batch member, and the members kept off-chain.

``access_events`` gains ``member`` (the event's position in its ledger batch; -1 for an event that has
its own transaction) and its key becomes ``(seq, member)``: one ``accessbatch:RecordBatch`` entry
projects one row per patient. ``access_batches`` keeps each batch's salted member leaves (salt || member
JSON, length-prefixed, in one blob) under its root: written before the root is submitted, read by the
projection when the batch commits (and whenever the projection is rebuilt from the ledger).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_INDEXES = (
    ("ix_access_events_pid_seq", ["pid", "seq"]),
    ("ix_access_events_org_seq", ["agent_org", "seq"]),
    ("ix_access_events_subject_seq", ["agent_subject", "seq"]),
    ("ix_access_events_recorded", ["recorded_ms"]),
)
_COLUMNS = "seq, event_id, tx_id, recorded_ms, pid, agent_subject, agent_org, purpose, outcome, event_json"


def _access_events(name: str, with_member: bool) -> None:
    # Constraint names differ between the two shapes: PostgreSQL keeps them across the rename, and the new
    # table is created before the old one is dropped.
    suffix = "member" if with_member else "seq"
    columns = [
        sa.Column("seq", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("tx_id", sa.String(64), nullable=False),
        sa.Column("recorded_ms", sa.BigInteger, nullable=False),
        sa.Column("pid", sa.String(64), nullable=False),
        sa.Column("agent_subject", sa.String(255), nullable=False),
        sa.Column("agent_org", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("event_json", sa.LargeBinary, nullable=False),
        sa.UniqueConstraint("event_id", name=f"uq_access_events_event_id_{suffix}"),
    ]
    if with_member:
        columns.append(sa.Column("member", sa.Integer, nullable=False, server_default="-1", autoincrement=False))
        op.create_table(name, *columns, sa.PrimaryKeyConstraint("seq", "member", name=f"pk_access_events_{suffix}"))
    else:
        op.create_table(name, *columns, sa.PrimaryKeyConstraint("seq", name=f"pk_access_events_{suffix}"))


def _swap(with_member: bool) -> None:
    _access_events("access_events_0003", with_member)
    op.execute(f"INSERT INTO access_events_0003 ({_COLUMNS}) SELECT {_COLUMNS} FROM access_events")
    for index, _ in _INDEXES:
        op.drop_index(index, "access_events")
    op.drop_table("access_events")
    op.rename_table("access_events_0003", "access_events")
    for index, columns in _INDEXES:
        op.create_index(index, "access_events", columns)


def upgrade() -> None:
    _swap(with_member=True)
    op.create_table(
        "access_batches",
        sa.Column("root", sa.String(64), primary_key=True),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("leaves", sa.LargeBinary, nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("access_batches")
    op.execute("DELETE FROM access_events WHERE member >= 0")
    _swap(with_member=False)
