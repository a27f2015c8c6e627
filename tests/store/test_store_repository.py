"""The off-chain store on SQLite and on a real PostgreSQL: migrations, sealing, erasure, concurrency, timeouts."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import inspect, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from ciphercare.services.store import DocumentErasedError, DocumentIntegrityError, OffchainStore, StoreConfigError
from ciphercare.services.store.envelope import CryptoError, KekMismatchError, KeyEncryptionKey
from ciphercare.services.store.models import AccessEventRow, DataKey, Document, Erasure, ProjectionCursor
from ciphercare.services.store.repository import (
    AccessEventIndex,
    DocumentRef,
    ErasureEvent,
    make_engine,
    normalize_url,
)


@pytest.fixture
def kek() -> KeyEncryptionKey:
    return KeyEncryptionKey.generate()


@pytest.fixture
def store(store_url: str, kek: KeyEncryptionKey) -> Iterator[OffchainStore]:
    opened = OffchainStore.from_url(store_url, kek=kek, pool_size=8)
    opened.migrate()
    try:
        yield opened
    finally:
        opened.close()


def body(**fields: object) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def raw_rows(store: OffchainStore, model: type) -> list[dict[str, object]]:
    with store.session() as session:
        return [
            {c.key: getattr(row, c.key) for c in inspect(model).columns}
            for row in session.scalars(select(model))
        ]


def test_backend_is_the_one_asked_for(store: OffchainStore, store_url: str) -> None:
    assert store.dialect == ("postgresql" if store_url.startswith("postgresql") else "sqlite")
    assert store.schema_revision() == "0003"
    tables = set(inspect(store.engine).get_table_names())
    assert {"documents", "data_keys", "erasures", "access_events", "projection_cursors", "pseudonyms"} <= tables


def test_documents_are_sealed_per_patient_and_hash_the_plaintext(store: OffchainStore) -> None:
    plain = body(note="Kxmarker findings", mrn="MRN-4471")
    sha = store.put_document("access-detail", plain, pid="pt-001")
    assert sha == hashlib.sha256(plain).hexdigest()  # what the ledger records
    assert store.put_document("access-detail", plain, pid="pt-001") == sha  # idempotent
    store.put_document("access-detail", plain, pid="pt-002")  # same content, another patient: its own row and key
    rows = raw_rows(store, Document)
    assert len(rows) == 2 and {r["pid"] for r in rows} == {"pt-001", "pt-002"}
    for row in rows:
        assert b"Kxmarker" not in row["body"] and b"MRN-4471" not in row["body"]
        assert row["key_id"] and row["ledger_seq"] is None
    assert rows[0]["body"] != rows[1]["body"]
    keys = raw_rows(store, DataKey)
    assert len(keys) == 2 and len({k["key_id"] for k in keys}) == 2
    assert all(k["kek_id"] == store.kek.kek_id and len(k["wrapped_key"]) == 12 + 32 + 16 for k in keys)
    assert store.get_document(sha, pid="pt-001") == plain
    assert store.get_document(sha, pid="pt-003") is None


def test_altered_or_moved_ciphertext_is_refused(store: OffchainStore) -> None:
    sha = store.put_document("fhir-consent", body(resourceType="Consent", x=1), pid="pt-010")
    store.put_document("fhir-consent", body(resourceType="Consent", x=2), pid="pt-011")
    with store.session() as session, session.begin():
        row = session.get(Document, (sha, "pt-010"))
        sealed = bytearray(row.body)
        sealed[-1] ^= 1
        row.body = bytes(sealed)
    with pytest.raises(DocumentIntegrityError):
        store.get_document(sha, pid="pt-010")
    # A row re-labelled to another patient does not open under that patient's key (associated data).
    other = store.put_document("fhir-consent", body(resourceType="Consent", x=3), pid="pt-010")
    with store.session() as session, session.begin():
        session.execute(update(Document).where(Document.sha256 == other).values(pid="pt-011"))
    with pytest.raises((DocumentIntegrityError, DocumentErasedError)):
        store.get_document(other, pid="pt-011")


def test_the_store_refuses_phi_without_the_right_kek(store: OffchainStore, store_url: str) -> None:
    sha = store.put_document("access-detail", body(a=1), pid="pt-020")
    without = OffchainStore.from_url(store_url)
    wrong = OffchainStore.from_url(store_url, kek=KeyEncryptionKey.generate())
    try:
        with pytest.raises(StoreConfigError):
            without.put_document("access-detail", body(a=2), pid="pt-020")
        with pytest.raises(StoreConfigError):
            without.get_document(sha, pid="pt-020")
        with pytest.raises(KekMismatchError):
            wrong.get_document(sha, pid="pt-020")
    finally:
        without.close()
        wrong.close()


def test_erasure_destroys_the_key_and_documents_and_replays_are_no_ops(store: OffchainStore) -> None:
    plain = body(name="Kxerasable")
    sha = store.put_document("fhir-consent", plain, pid="pt-030")
    kept = store.put_document("fhir-consent", body(name="Kxkept"), pid="pt-031")
    store.apply_privacy_batch([DocumentRef(sha, "pt-030", 5)], [], 6)
    erasure = ErasureEvent("ae-" + "a" * 32, "pt-030", 7, "tx7", 1_700_000_000_000)
    result = store.apply_privacy_batch([], [erasure], 8)
    assert [e.pid for e in result.erasures_applied] == ["pt-030"]
    assert result.erasures_applied[0].documents_shredded == 1 and result.erasures_applied[0].keys_destroyed == 1
    assert [k["pid"] for k in raw_rows(store, DataKey)] == ["pt-031"]
    assert {r["pid"] for r in raw_rows(store, Document)} == {"pt-031"}
    with pytest.raises(DocumentErasedError):
        store.get_document(sha, pid="pt-030")
    assert store.get_document(kept, pid="pt-031") == body(name="Kxkept")
    # A reference from before the erasure is expected to be gone; one from after it is missing.
    again = store.apply_privacy_batch([DocumentRef(sha, "pt-030", 5), DocumentRef(sha, "pt-030", 9)], [erasure], 10)
    assert again.erasures_applied == [] and [m.seq for m in again.missing] == [9]
    # New data after the erasure gets a new key and is readable; replaying the old erasure leaves it alone.
    new = store.put_document("fhir-consent", body(name="new consent"), pid="pt-030")
    store.apply_privacy_batch([], [erasure], None)
    assert store.get_document(new, pid="pt-030") == body(name="new consent")
    assert len(store.erasures("pt-030")) == 1
    assert store.projection_cursor("privacy") == 10


def test_orphans_are_unreferenced_documents_and_only_those_are_deleted(store: OffchainStore) -> None:
    referenced = store.put_document("access-detail", body(a="ref"), pid="pt-040")
    orphan = store.put_document("access-detail", body(a="orphan"), pid="pt-040")
    store.apply_privacy_batch([DocumentRef(referenced, "pt-040", 3)], [], 4)
    orphans = store.orphan_documents()
    assert [(o.sha256, o.pid) for o in orphans] == [(orphan, "pt-040")]
    assert store.orphan_documents(older_than_ms=orphans[0].created_ms) == []
    assert store.delete_documents(orphans) == 1
    assert store.get_document(orphan, pid="pt-040") is None
    assert store.get_document(referenced, pid="pt-040") == body(a="ref")


def test_concurrent_writers_race_for_one_patient_key_and_one_document(store: OffchainStore) -> None:
    """The get-or-create of a data key and the idempotent document insert under real concurrency."""
    barrier = threading.Barrier(8)
    same = body(resourceType="Consent", shared=True)

    def write(i: int) -> tuple[str, str]:
        barrier.wait()
        return (store.put_document("fhir-consent", same, pid="pt-050"),
                store.put_document("access-detail", body(i=i), pid="pt-050"))

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(write, range(8)))
    assert len({shared for shared, _ in results}) == 1
    keys = [k for k in raw_rows(store, DataKey) if k["pid"] == "pt-050"]
    assert len(keys) == 1
    rows = [r for r in raw_rows(store, Document) if r["pid"] == "pt-050"]
    assert len(rows) == 9 and {r["key_id"] for r in rows} == {keys[0]["key_id"]}
    for shared, detail in results:
        assert store.get_document(shared, pid="pt-050") == same
        assert store.get_document(detail, pid="pt-050") is not None


def test_erasure_racing_writers_leaves_nothing_readable_from_before(store: OffchainStore) -> None:
    stop = threading.Event()
    written: list[str] = []

    def writer() -> None:
        i = 0
        while not stop.is_set():
            written.append(store.put_document("access-detail", body(seq=i, note="Kxracing"), pid="pt-060"))
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(0.3)
    # Every write that had returned before the erasure began must end up unreadable; writes racing
    # with it or after it may survive only under the data key created after the erasure.
    erased_at = len(written)
    store.apply_privacy_batch([], [ErasureEvent("ae-" + "b" * 32, "pt-060", 1, "tx1", 0)], None)
    time.sleep(0.2)
    stop.set()
    thread.join(10)
    assert erased_at > 0
    # Every document is either gone, or sealed under the key created after the erasure.
    current = {k["key_id"] for k in raw_rows(store, DataKey) if k["pid"] == "pt-060"}
    assert {r["key_id"] for r in raw_rows(store, Document) if r["pid"] == "pt-060"} <= current
    assert store.unreadable_documents() == []
    for sha in written[:erased_at]:
        with pytest.raises(DocumentErasedError):
            store.get_document(sha, pid="pt-060")


def test_projection_cursor_creation_races_safely(store: OffchainStore) -> None:
    barrier = threading.Barrier(6)

    def project(i: int) -> None:
        barrier.wait()
        row = AccessEventIndex(i, f"ae-{i:032x}", f"tx{i}", 0, "pt-070", "s", "hospital-a", "TREAT", "success", b"{}")
        store.project_access_events([row], next_seq=i + 1)

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(project, range(6)))
    assert store.projection_cursor() == 6
    assert len(raw_rows(store, AccessEventRow)) == 6
    assert [r["name"] for r in raw_rows(store, ProjectionCursor)] == ["access-events"]


def test_kek_rotation_rewraps_every_key(store: OffchainStore, kek: KeyEncryptionKey) -> None:
    shas = [store.put_document("access-detail", body(i=i), pid=f"pt-08{i}") for i in range(3)]
    new = KeyEncryptionKey.generate()
    assert store.rotate_kek(new) == 3
    assert {k["kek_id"] for k in raw_rows(store, DataKey)} == {new.kek_id}
    for i, sha in enumerate(shas):
        assert store.get_document(sha, pid=f"pt-08{i}") == body(i=i)
    row = raw_rows(store, DataKey)[0]
    with pytest.raises(CryptoError):
        kek.unwrap(row["wrapped_key"], row["pid"], row["key_id"], row["kek_id"])


def test_legacy_plaintext_documents_from_0001_are_sealed(store_url: str, kek: KeyEncryptionKey) -> None:
    store = OffchainStore.from_url(store_url, kek=kek)
    try:
        store.migrate("0001")
        plain = body(resourceType="Consent", legacy="Kxlegacy")
        sha = hashlib.sha256(plain).hexdigest()
        with store.engine.begin() as connection:
            for digest, payload in ((sha, plain), ("f" * 64, b"{}")):
                connection.execute(
                    text("INSERT INTO documents (sha256, kind, body, created_ms) VALUES (:s, 'fhir-consent', :b, 1)"),
                    {"s": digest, "b": payload},
                )
        store.migrate()
        assert store.legacy_document_count() == 2
        assert store.seal_legacy_documents({sha: "pt-090"}) == (1, 1)
        assert store.get_document(sha, pid="pt-090") == plain
        sealed = [r for r in raw_rows(store, Document) if r["pid"] == "pt-090"][0]
        assert b"Kxlegacy" not in sealed["body"] and sealed["key_id"]
        # Downgrade refuses while sealed documents exist (0001 has nowhere to keep their keys).
        with pytest.raises(RuntimeError, match="encrypted"):
            store.downgrade("0001")
    finally:
        store.close()


def test_sql_parameters_never_reach_error_messages(store: OffchainStore) -> None:
    with pytest.raises(IntegrityError) as info:
        with store.session() as session, session.begin():
            for _ in range(2):
                session.add(Erasure(event_id="ae-dup", pid="Kxparam-pid", seq=1, tx_id="Kxparam-tx", erased_ms=0,
                                    applied_ms=0, documents_shredded=0, keys_destroyed=0))
                session.flush()
    assert "Kxparam" not in str(info.value)


def test_engine_timeouts_and_pool_limits(store_url: str) -> None:
    if not store_url.startswith("postgresql"):
        engine = make_engine(store_url, pool_timeout_s=1.5)
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA secure_delete").scalar() == 1
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 1500
        engine.dispose()
        return
    engine = make_engine(store_url, pool_size=1, pool_timeout_s=0.5, statement_timeout_ms=300, lock_timeout_ms=200)
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SHOW statement_timeout").scalar() == "300ms"
            assert connection.exec_driver_sql("SHOW lock_timeout").scalar() == "200ms"
            assert connection.exec_driver_sql("SHOW application_name").scalar() == "ciphercare"
            with pytest.raises(OperationalError):
                connection.exec_driver_sql("SELECT pg_sleep(2)")
        held = [engine.connect(), engine.connect()]  # pool_size 1 + overflow 1
        started = time.monotonic()
        with pytest.raises(PoolTimeout):
            engine.connect()
        assert 0.4 < time.monotonic() - started < 5
        for connection in held:
            connection.close()
    finally:
        engine.dispose()


def test_postgres_urls_mean_psycopg3() -> None:
    assert normalize_url("postgresql://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert normalize_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    with pytest.raises(StoreConfigError) as info:
        make_engine("mysql://user:secret@h/db")
    assert "secret" not in str(info.value)


def test_lock_timeout_bounds_a_blocked_writer(store_url: str, kek: KeyEncryptionKey) -> None:
    """A writer blocked by another transaction fails after the lock timeout instead of hanging."""
    store = OffchainStore.from_url(store_url, kek=kek, lock_timeout_ms=200, pool_timeout_s=0.3)
    store.migrate()
    sqlite = store.dialect == "sqlite"
    try:
        sha = store.put_document("access-detail", body(a=1), pid="pt-100")
        with store.engine.connect() as holder:
            if sqlite:  # SQLite has one writer lock for the whole file
                holder.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                holder.execute(text("BEGIN"))
                holder.execute(text("SELECT 1 FROM documents WHERE sha256 = :s FOR UPDATE"), {"s": sha})
            started = time.monotonic()
            with pytest.raises(DBAPIError):
                store.apply_privacy_batch([DocumentRef(sha, "pt-100", 1)], [], None)
            assert 0.1 < time.monotonic() - started < 5
            holder.exec_driver_sql("ROLLBACK")
    finally:
        store.close()


def test_concurrent_projection_of_the_same_events_is_idempotent(store: OffchainStore) -> None:
    """The inline projection and the ledger follower race on the same rows; neither may fail."""
    import threading

    from ciphercare.services.store import AccessEventIndex, AccessQuery

    rows = [AccessEventIndex(seq=i, event_id=f"ae-{i:032x}", tx_id=f"{i:064x}", recorded_ms=1_700_000_000_000 + i,
                             pid=f"pt-{i:04d}", agent_subject="svc", agent_org="hospital-a", purpose="TREAT",
                             outcome="success", event_json=b"{}") for i in range(200)]
    errors: list[BaseException] = []

    def project(chunk: int) -> None:
        try:
            for start in range(0, 200, chunk):
                store.project_access_events(rows[start:start + chunk])
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=project, args=(n,)) for n in (1, 7, 200, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    found, more = store.search_access_events(AccessQuery(), after_seq=-1, limit=500)
    assert [r.seq for r in found] == list(range(200)) and not more
