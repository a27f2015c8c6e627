"""Deleting orphan documents also deletes the data keys that then seal nothing (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ciphercare.services.store import OffchainStore
from ciphercare.services.store.envelope import KeyEncryptionKey


@pytest.fixture
def store(store_url: str) -> Iterator[OffchainStore]:
    opened = OffchainStore.from_url(store_url, kek=KeyEncryptionKey.generate(), pool_size=4)
    opened.migrate()
    try:
        yield opened
    finally:
        opened.close()


def test_orphan_documents_take_their_data_keys_with_them(store: OffchainStore) -> None:
    store.put_document("fhir-consent", b'{"a":1}', pid="pt-orphan-0001")  # a write whose ledger tx never came
    kept = store.put_document("fhir-consent", b'{"b":2}', pid="pt-kept-0002")
    store.put_document("access-detail", b'{"c":3}', pid="pt-kept-0002")  # orphan, but its patient keeps a doc
    assert store.data_key_count() == 2
    from ciphercare.services.store.consistency import DocumentRef

    store.apply_privacy_batch([DocumentRef(kept, "pt-kept-0002", 7)], [], 8)  # the ledger references one
    deleted = store.delete_documents(store.orphan_documents())
    assert deleted == 2
    assert store.data_key_count() == 1  # pt-orphan-0001's key is gone, pt-kept-0002's stays
    assert store.get_document(kept, pid="pt-kept-0002") == b'{"b":2}'
    assert store.delete_orphan_data_keys() == 0
