"""Off-chain store (SQLAlchemy 2 + Alembic)."""

from ciphercare.services.store.repository import (
    AccessEventIndex,
    AccessQuery,
    DocumentIntegrityError,
    OffchainStore,
    make_engine,
)

__all__ = ["AccessEventIndex", "AccessQuery", "DocumentIntegrityError", "OffchainStore", "make_engine"]
