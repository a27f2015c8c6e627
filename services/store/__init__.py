"""Off-chain store (SQLAlchemy 2 + Alembic)."""

from ciphercare.services.store.repository import (
    AccessEventIndex,
    AccessQuery,
    DocumentErasedError,
    DocumentIntegrityError,
    OffchainStore,
    StoreConfigError,
    make_engine,
    redacted_url,
)

__all__ = [
    "AccessEventIndex",
    "AccessQuery",
    "DocumentErasedError",
    "DocumentIntegrityError",
    "OffchainStore",
    "StoreConfigError",
    "make_engine",
    "redacted_url",
]
