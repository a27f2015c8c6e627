"""The operator as adversary, without the signing key: rewrite, delete checkpoints, truncate, rotate keys."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import pytest
from testkit.integrity import build, copy_ledger, open_ledger, rewrite_entry, truncate_log
from testkit.ledger import ALICE, ORIGIN
from testkit.process import CLI

from ciphercare.ledger.embedded.checkpoint_log import LogRefusedError
from ciphercare.ledger.embedded.verify import EXIT_CODES, KIND_ROLLED_BACK, KIND_UNSIGNED, verify_ledger
from ciphercare.ledger.transparency.checkpoint import CheckpointSigner


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    data = tmp_path_factory.mktemp("ledger-300")
    return data, build(data, 300)


def test_clean_ledger_verifies_with_its_published_checkpoints(source: tuple[Path, str], tmp_path: Path) -> None:
    data = copy_ledger(source[0], tmp_path)
    report = verify_ledger(data / "ledger.db", source[1])
    assert report.ok, report.first_error
    assert report.size == 300 and report.published_checked >= 38


def test_consistent_rewrite_with_deleted_checkpoints_is_an_unsigned_tail(source: tuple[Path, str],
                                                                         tmp_path: Path) -> None:
    data = copy_ledger(source[0], tmp_path)
    db = data / "ledger.db"
    rewrite_entry(db, 185, "rewritten")
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM checkpoints WHERE size > 185")
    conn.close()
    # The published-checkpoint file outside SQLite still names the original tree: a fork.
    forked = verify_ledger(db, source[1]).first_error
    assert forked is not None and forked.kind == KIND_ROLLED_BACK
    assert "differs from the checkpoint published" in forked.message
    # The operator deletes that file too: the ledger recorded that it keeps one.
    (data / "ledger.db.checkpoints").unlink()
    gone = verify_ledger(db, source[1]).first_error
    assert gone is not None and gone.kind == KIND_ROLLED_BACK and "missing" in gone.message
    # ... and the record of it: what is left is a tail no signed checkpoint covers.
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM meta WHERE key = 'published_file'")
    conn.close()
    tail = verify_ledger(db, source[1]).first_error
    assert tail is not None and tail.kind == KIND_UNSIGNED and tail.exit_code == EXIT_CODES[KIND_UNSIGNED] == 4
    lo, hi = (int(x) for x in tail.message.split("entries ")[1].split(" ")[0].split(".."))
    assert lo <= 185 and hi == 299 and "unsigned tail" in tail.message  # lo: the last signed batch end
    # ... and every checkpoint: still not accepted.
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM checkpoints")
    conn.close()
    none = verify_ledger(db, source[1]).first_error
    assert none is not None and none.kind == KIND_UNSIGNED and "0..299" in none.message


def test_node_refuses_to_start_on_a_rewritten_log(source: tuple[Path, str], tmp_path: Path) -> None:
    data = copy_ledger(source[0], tmp_path)
    rewrite_entry(data / "ledger.db", 185, "rewritten")
    with sqlite3.connect(data / "ledger.db") as conn:
        conn.execute("DELETE FROM checkpoints WHERE size > 185")
    conn.close()
    before = (data / "ledger.db.checkpoints").read_bytes()
    with pytest.raises(LogRefusedError) as refused:
        open_ledger(data)
    message = str(refused.value)
    lo, hi = (int(x) for x in message.split("the entries in ")[1].split(" ")[0].split(".."))
    assert lo <= 185 <= hi == 299
    assert "replica or backup" in message
    assert (data / "ledger.db.checkpoints").read_bytes() == before, "a refused start must not write"
    # Deleting the published file does not get past it: the database remembers it was started.
    (data / "ledger.db.checkpoints").unlink()
    with pytest.raises(LogRefusedError, match="missing or empty"):
        open_ledger(data)


def test_truncated_log_is_refused_at_start_naming_the_missing_range(source: tuple[Path, str],
                                                                    tmp_path: Path) -> None:
    data = copy_ledger(source[0], tmp_path)
    truncate_log(data / "ledger.db", 256)
    with pytest.raises(LogRefusedError) as refused:
        open_ledger(data)
    assert "holds 256 entries" in str(refused.value) and "entries 256..299" in str(refused.value)
    report = verify_ledger(data / "ledger.db", source[1])
    assert report.first_error is not None and report.first_error.kind == KIND_ROLLED_BACK
    assert "256..299" in report.first_error.message
    # No sequence number is reused: nothing was appended by the refused start.
    with sqlite3.connect(data / "ledger.db") as conn:
        assert conn.execute("SELECT MAX(seq) FROM entries").fetchone()[0] == 255
    conn.close()


def test_restart_after_clean_close_appends_after_the_published_size(source: tuple[Path, str],
                                                                     tmp_path: Path) -> None:
    data = copy_ledger(source[0], tmp_path)
    led = open_ledger(data)
    try:
        assert led.submit(ALICE, "kv", "Put", ["after", "restart"]).seq == 300
    finally:
        led.close()
    assert verify_ledger(data / "ledger.db", source[1]).ok


def test_key_rotation_old_key_verifies_what_it_signed(source: tuple[Path, str], tmp_path: Path) -> None:
    data = copy_ledger(source[0], tmp_path)
    old_vkey = source[1]
    (data / "checkpoint.key").rename(data / "old.key")
    # Starting with a new key but without naming the old one as retired is refused.
    with pytest.raises(Exception, match="rotating the signing key"):
        open_ledger(data)
    led = open_ledger(data, retired_vkeys=[old_vkey])
    try:
        new_vkey = led.public_key_vkey()
        assert new_vkey != old_vkey
        led.submit(ALICE, "kv", "Put", ["rotated", "yes"])
        assert led.checkpoint().note.decode().count(new_vkey.split("+")[0]) >= 1
    finally:
        led.close()
    assert verify_ledger(data / "ledger.db", [old_vkey, new_vkey]).ok
    only_new = verify_ledger(data / "ledger.db", new_vkey).first_error
    assert only_new is not None and "not signed by key" in only_new.message
    only_old = verify_ledger(data / "ledger.db", old_vkey).first_error
    assert only_old is not None and "not" in only_old.message  # the newest checkpoints are the new key's


def test_retired_key_cannot_sign_after_the_rotation(source: tuple[Path, str], tmp_path: Path) -> None:
    data = copy_ledger(source[0], tmp_path)
    old = CheckpointSigner.load(data / "checkpoint.key", ORIGIN)
    (data / "checkpoint.key").rename(data / "old.key")
    led = open_ledger(data, retired_vkeys=[old.vkey])
    new_vkey = led.public_key_vkey()
    led.submit(ALICE, "kv", "Put", ["rotated", "yes"])
    led.close()
    # A thief with the retired key re-signs the newest checkpoint: refused, the new key took over at 300.
    with sqlite3.connect(data / "ledger.db") as conn:
        size, _note = conn.execute("SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1").fetchone()
        root = verify_ledger(data / "ledger.db", [old.vkey, new_vkey]).root_hash
        assert root is not None
        conn.execute("UPDATE checkpoints SET note = ? WHERE size = ?", (old.sign(size, root).note, size))
    conn.close()
    err = verify_ledger(data / "ledger.db", [old.vkey, new_vkey], published_path=data / "none").first_error
    assert err is not None and "retired key" in err.message


def test_group_readable_signing_key_is_refused_in_strict_mode(tmp_path: Path) -> None:
    key = tmp_path / "checkpoint.key"
    CheckpointSigner(key, ORIGIN)
    os.chmod(key, 0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        CheckpointSigner(key, ORIGIN, strict_mode=True)
    with pytest.raises(PermissionError):
        open_ledger(tmp_path, strict_key_mode=True)


def test_cli_verify_names_a_damaged_page_in_one_line_with_exit_code_5(source: tuple[Path, str],
                                                                       tmp_path: Path) -> None:
    data = copy_ledger(source[0], tmp_path)
    db = data / "ledger.db"
    raw = bytearray(db.read_bytes())
    page_size = int.from_bytes(raw[16:18], "big")
    for page in (3, 4, 5):  # overwrite b-tree page headers: SQLite's own structure, not row content
        raw[page_size * (page - 1)] = 0x7F
    db.write_bytes(bytes(raw))
    env = {**os.environ, "CIPHERCARE_DATA_DIR": str(data)}
    result = subprocess.run([*CLI, "ledger", "verify", "--path", str(db), "--vkey", source[1]], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 5, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ledger BAD (damaged)") and "Traceback" not in result.stderr
    assert "root page" in lines[0] or "Page " in lines[0]  # the damaged page or table is named
    with pytest.raises(ValueError):
        verify_ledger(db, "not-a-key")  # a bad key is the caller's error, not damage
