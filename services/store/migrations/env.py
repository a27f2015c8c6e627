"""Alembic environment: runs against the connection the store hands over (no URL in an ini file)."""

from __future__ import annotations

from alembic import context

from ciphercare.services.store.models import Base

target_metadata = Base.metadata
connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through ciphercare.services.store.OffchainStore.migrate()")
context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
