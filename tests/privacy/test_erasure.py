"""Right to erasure by crypto-shredding, end to end through the CLI, on SQLite and on PostgreSQL.

After ``ciphercare patient erase``: nothing readable about the patient remains (the
canary scan over files, rows, server files and everything the store can still
decrypt), other patients are untouched, the ledger verifies, old proofs still
verify, and the erasure itself is an access event. A backup taken before the
erasure stays readable until the key-encryption key is rotated -- then it is not.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool
from testkit.privacy import (
    Canaries,
    Scanner,
    access_detail,
    consent_document,
    decrypted_documents,
    json_logs,
    log_lines,
)

from ciphercare.services.identity.devissuer import DevIssuer
from ciphercare.services.platform.gateway import embedded_handles
from ciphercare.services.platform.wiring import open_ledger
from ciphercare.services.privacy.operations import ErasureError, erase_patient, open_offchain_store
from ciphercare.services.store.envelope import CryptoError, KeyEncryptionKey, open_document
from ciphercare.v1 import access_log_pb2, consent_pb2

CLI = [sys.executable, "-m", "ciphercare.services.cli.main"]


def run_cli(settings: Any, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CIPHERCARE_DATA_DIR=str(settings.data_dir),
               CIPHERCARE_DATABASE_URL=settings.database_url)
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=180)


def populate(env: Any, pid: str, c: Canaries, prefix: str) -> tuple[str, str]:
    """A consent with a FHIR document and an access with details, for ``pid``; returns (consent id, event id)."""
    labelled = Canaries()
    granted = env.patient(pid).grant(consent_pb2.GrantRequest(
        pid=pid, grantee_organization="hospital-a", decision=consent_pb2.CONSENT_DECISION_PERMIT,
        purposes=["TREAT"], data_classes=["Observation"], fhir_consent_json=consent_document(pid, labelled)))
    recorded = env.hospital().record(access_log_pb2.RecordRequest(
        type="110110", subtype="read", action="R", outcome=access_log_pb2.ACCESS_OUTCOME_SUCCESS,
        purpose_of_use="TREAT", pid=pid, consent_id=granted.consent.id, data_classes=["Observation"],
        detail_json=access_detail(labelled)))
    c.tokens.update({f"{prefix}.{label}": token for label, token in labelled.tokens.items()})
    return granted.consent.id, recorded.event.id


def backup_rows(url: str) -> list[dict[str, Any]]:
    """A 'backup' of the key and document tables, as a dump would hold them."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            keys = {r["pid"]: dict(r) for r in connection.execute(text("SELECT * FROM data_keys")).mappings()}
            docs = [dict(r) for r in connection.execute(text("SELECT * FROM documents")).mappings()]
    finally:
        engine.dispose()
    return [{**doc, "key": keys.get(doc["pid"])} for doc in docs]


def open_from_backup(kek: KeyEncryptionKey, row: dict[str, Any]) -> bytes:
    key = row["key"]
    data_key = kek.unwrap(bytes(key["wrapped_key"]), key["pid"], key["key_id"], key["kek_id"])
    return open_document(data_key, bytes(row["body"]), sha256=row["sha256"], pid=row["pid"], kind=row["kind"],
                         key_id=row["key_id"])


def test_patient_erase_shreds_everything_readable_and_keeps_the_ledger_verifiable(
        tmp_path: Path, store_url: str, server_kit: Any) -> None:
    c = Canaries()
    erased, kept = "pt-erase-" + c.mrn("x")[:6], "pt-keep-" + c.mrn("y")[:6]
    del c.tokens["x"], c.tokens["y"]
    settings = server_kit.make_settings(tmp_path / "data", database_url=store_url, orphan_grace_s=0)

    server = server_kit.ServerThread(settings).start()
    try:
        env = server_kit.Env(server=server, issuer=DevIssuer.from_settings(settings))
        consent_id, event_id = populate(env, erased, c, "erased")
        populate(env, kept, c, "kept")
        officer = env.officer()
        verifier, before = officer.verifier()
        size_before = before.checkpoint.tree_size
        # While the server owns the embedded ledger, an offline erase refuses to touch it.
        busy = run_cli(settings, "patient", "erase", erased)
        assert busy.returncode == 1 and "in use by another process" in busy.stderr
        assert len(busy.stderr.strip().splitlines()) == 1
    finally:
        server.stop()

    erased_tokens = {k: v for k, v in c.tokens.items() if k.startswith("erased.")}
    kept_tokens = {k: v for k, v in c.tokens.items() if k.startswith("kept.")}
    readable = Scanner(c.tokens)
    readable.scan_bytes("decrypted documents", decrypted_documents(settings))
    assert {f.canary for f in readable.findings} == set(c.tokens)  # before: everything readable (non-vacuity)
    backup = backup_rows(store_url)
    kek_before = KeyEncryptionKey.load_or_create(settings.resolved_kek_path)

    result = run_cli(settings, "patient", "erase", erased)
    assert result.returncode == 0, result.stderr
    assert f"patient {erased} erased" in result.stdout and "2 documents shredded" in result.stdout
    verified = run_cli(settings, "ledger", "verify")
    assert verified.returncode == 0 and "ledger OK" in verified.stdout, verified.stderr

    with json_logs(settings) as logs:
        server = server_kit.ServerThread(settings).start()
        try:
            env = server_kit.Env(server=server, issuer=DevIssuer.from_settings(settings))
            officer = env.officer()
            with pytest.raises(grpc.RpcError) as gone:
                env.patient(erased).call(env.patient(erased).consent.Get,
                                         consent_pb2.GetConsentRequest(consent_id=consent_id))
            assert gone.value.code() == grpc.StatusCode.NOT_FOUND and "erased" in gone.value.details()
            # The consent record (pseudonym, codes) and its history stay on the ledger; the decision still works.
            assert env.hospital().check(erased, "hospital-a", "TREAT", "Observation").decision == \
                consent_pb2.CONSENT_DECISION_PERMIT
            events = list(officer.search_all(access_log_pb2.SearchRequest(pid=erased)))
            erasure = [e for e in events if e.outcome_description == "patient-erasure"]
            assert len(erasure) == 1 and erasure[0].action == "D" and erasure[0].subtype == "delete"
            # Proofs over the log still verify: the old event, and the log before/after the erasure.
            verifier, _ = officer.verifier()
            officer.verify_event_inclusion(event_id, verifier)
            officer.verify_event_inclusion(erasure[0].id, verifier)
            assert officer.verify_consistency(size_before, verifier)[0] == size_before
        finally:
            server.stop()
        startup = [json.loads(line) for line in log_lines(logs) if '"store check"' in line]
    assert startup and startup[0]["ok"] is True and startup[0]["erasures_applied"] == 0  # applied by the CLI

    # Nothing readable about the erased patient remains; the other patient is untouched.
    after = Scanner(c.tokens)
    after.scan_bytes("decrypted documents", decrypted_documents(settings))
    assert {f.canary for f in after.findings} == set(kept_tokens)
    raw = Scanner(c.tokens)
    raw.scan_tree(settings.data_dir)
    raw.scan_database(store_url)
    if store_url.startswith("postgresql"):
        raw.scan_postgres_files(store_url)
    assert not raw.findings, raw.report()

    # A backup from before the erasure still opens with the KEK that wrapped its keys ...
    old_rows = [row for row in backup if row["pid"] == erased]
    assert len(old_rows) == 2
    assert any(erased_tokens["erased.detail.patient_name"].encode() in open_from_backup(kek_before, row)
               for row in old_rows)
    # ... until the KEK is rotated and the old one destroyed: then no key on the machine opens it.
    rotated = run_cli(settings, "store", "rotate-kek", "--destroy-old")
    assert rotated.returncode == 0 and "data keys re-wrapped" in rotated.stdout, rotated.stderr
    assert not list(settings.data_dir.glob("kek.key.retired-*"))
    kek_now = KeyEncryptionKey.load_or_create(settings.resolved_kek_path)
    assert kek_now.kek_id != kek_before.kek_id
    for row in old_rows:
        with pytest.raises(CryptoError):
            open_from_backup(kek_now, row)
    still = Scanner(kept_tokens)
    still.scan_bytes("decrypted documents", decrypted_documents(settings))
    assert {f.canary for f in still.findings} == set(kept_tokens)
    checked = run_cli(settings, "store", "check")
    assert checked.returncode == 0 and checked.stdout.startswith("store OK"), checked.stdout + checked.stderr
    assert run_cli(settings, "ledger", "verify").returncode == 0


def test_an_erasure_on_the_ledger_but_not_yet_in_the_store_is_applied_at_start(
        tmp_path: Path, store_url: str, server_kit: Any) -> None:
    """A crash between the ledger event and the key destruction: the next start repairs it and says so."""
    c = Canaries()
    pid = "pt-crash-" + c.mrn("x")[:6]
    del c.tokens["x"]
    settings = server_kit.make_settings(tmp_path / "data", database_url=store_url, orphan_grace_s=0)
    server = server_kit.ServerThread(settings).start()
    try:
        populate(server_kit.Env(server=server, issuer=DevIssuer.from_settings(settings)), pid, c, "p")
    finally:
        server.stop()

    ledger = open_ledger(settings)
    store = open_offchain_store(settings)
    try:
        class Crash(Exception):
            pass

        def crash(*_: Any) -> None:
            raise Crash

        store.apply_privacy_batch = crash  # type: ignore[method-assign]  # the process dies right after the ledger
        with pytest.raises(ErasureError, match="is on the ledger .* the next start of the server applies it"):
            erase_patient(embedded_handles(ledger), store, pid)
    finally:
        ledger.close()
        store.close()
    left = Scanner(c.tokens)
    left.scan_bytes("decrypted documents", decrypted_documents(settings))
    assert left.findings  # still readable: the store has not applied the erasure

    with json_logs(settings) as logs:
        server = server_kit.ServerThread(settings).start()
        server.stop()
        lines = [json.loads(line) for line in log_lines(logs)]
    report = [line for line in lines if line["msg"] == "store check"]
    assert report and report[0]["erasures_applied"] == 1 and report[0]["ok"] is True
    gone = Scanner(c.tokens)
    gone.scan_bytes("decrypted documents", decrypted_documents(settings))
    assert not gone.findings, gone.report()


def test_a_backup_restored_after_an_erasure_is_erased_again_at_start(
        tmp_path: Path, store_url: str, server_kit: Any) -> None:
    """The ledger remembers erasures: a store restored from an older backup re-applies them when it starts."""
    c = Canaries()
    pid = "pt-restore-" + c.mrn("x")[:6]
    del c.tokens["x"]
    settings = server_kit.make_settings(tmp_path / "data", database_url=store_url, orphan_grace_s=0)
    server = server_kit.ServerThread(settings).start()
    try:
        populate(server_kit.Env(server=server, issuer=DevIssuer.from_settings(settings)), pid, c, "p")
    finally:
        server.stop()

    with copy_of_database(store_url, tmp_path) as backup_url:  # the backup, taken before the erasure
        result = run_cli(settings, "patient", "erase", pid)
        assert result.returncode == 0, result.stderr
        restored = settings.model_copy(update={"database_url": backup_url})
        readable = Scanner(c.tokens)
        readable.scan_bytes("decrypted documents", decrypted_documents(restored))
        assert readable.findings  # the backup still holds the patient's data and key

        with json_logs(restored) as logs:
            server = server_kit.ServerThread(restored).start()
            server.stop()
            report = [json.loads(line) for line in log_lines(logs) if '"store check"' in line][0]
        assert report["erasures_applied"] == 1 and report["ok"] is True
        after = Scanner(c.tokens)
        after.scan_bytes("decrypted documents", decrypted_documents(restored))
        assert not after.findings, after.report()


@contextlib.contextmanager
def copy_of_database(url: str, tmp_path: Path) -> Iterator[str]:
    """A copy of the off-chain database as it is now (a file copy for SQLite, TEMPLATE for PostgreSQL)."""
    if url.startswith("sqlite"):
        source = Path(url.split("///", 1)[1])
        target = tmp_path / "backup.db"
        shutil.copyfile(source, target)
        for suffix in ("-wal", "-shm"):
            if Path(str(source) + suffix).exists():
                shutil.copyfile(str(source) + suffix, str(target) + suffix)
        yield f"sqlite:///{target}"
        return
    parsed = make_url(url)
    name = parsed.database + "_bk"
    engine = create_engine(parsed.set(database="postgres"), poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{parsed.database}"')
        try:
            yield parsed.set(database=name).render_as_string(hide_password=False)
        finally:
            with engine.connect() as connection:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        engine.dispose()
