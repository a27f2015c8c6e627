"""Offline ``verify_ledger``: a clean ledger passes; each kind of tampering is named by seq / tx id."""

from __future__ import annotations

import base64
import hashlib
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from testkit.ledger import ALICE, ORIGIN

from ciphercare.ledger.embedded.ledger import EmbeddedLedger
from ciphercare.ledger.embedded.verify import verify_ledger
from ciphercare.ledger.transparency.checkpoint import CheckpointSigner, parse_vkey

MakeLedger = Callable[..., EmbeddedLedger]


@pytest.fixture
def built(make_ledger: MakeLedger, tmp_path: Path) -> tuple[Path, str, list[str]]:
    """A closed ledger of 30 entries in several batches; returns (db path, vkey, tx ids by seq)."""
    led = make_ledger(max_batch=4, max_wait_ms=1.0)
    futs = [led.submit_future(ALICE, "kv", "Put", [f"k{i}", f"value-{i}"]) for i in range(30)]
    receipts = sorted((f.result(30) for f in futs), key=lambda r: r.seq)
    led.submit(ALICE, "kv", "Del", ["k3"])
    vkey = led.public_key_vkey()
    led.close()
    return tmp_path / "ledger.db", vkey, [r.tx_id for r in receipts]


def test_clean_ledger_verifies(built: tuple[Path, str, list[str]]) -> None:
    path, vkey, _ = built
    report = verify_ledger(path, vkey)
    assert report.ok, report.first_error
    assert report.entries_checked == 31 and report.size == 31
    with sqlite3.connect(path) as db:
        (n_cps,) = db.execute("SELECT COUNT(*) FROM checkpoints").fetchone()
    assert report.checkpoints_checked == n_cps >= 8
    assert report.state_keys_checked == 29
    # A raw public key plus the key name works too.
    name, raw = parse_vkey(vkey)
    assert verify_ledger(path, raw, key_name=name).ok
    assert "OK" in report.summary()


def test_one_flipped_byte_in_a_leaf_in_the_file_is_named(built: tuple[Path, str, list[str]]) -> None:
    path, vkey, tx_ids = built
    with sqlite3.connect(path) as db:
        (leaf,) = db.execute("SELECT leaf FROM entries WHERE seq = 17").fetchone()
    db.close()
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0
    data = bytearray(path.read_bytes())
    at = data.find(leaf)
    assert at >= 0 and data.find(leaf, at + 1) < 0, "leaf must be stored once, contiguously"
    pos = at + leaf.index(b"value-17") + len("value-")
    data[pos] ^= 0x01  # '1' -> '0'
    path.write_bytes(bytes(data))
    report = verify_ledger(path, vkey)
    assert not report.ok
    err = report.first_error
    assert err is not None and err.seq == 17 and err.tx_id == tx_ids[17]
    assert "leaf hash" in err.message
    assert report.entries_checked == 17
    assert f"seq 17, tx {tx_ids[17]}" in str(err)


def test_rehashed_leaf_is_caught_by_the_signed_checkpoint(built: tuple[Path, str, list[str]]) -> None:
    """A forger who rewrites a leaf AND its stored hash (history/state untouched) is stopped by the signature."""
    path, vkey, _ = built
    with sqlite3.connect(path) as db:
        (leaf,) = db.execute("SELECT leaf FROM entries WHERE seq = 9").fetchone()
        forged = leaf.replace(b'"args":["k9"', b'"args":["k8"')
        assert forged != leaf
        db.execute(
            "UPDATE entries SET leaf = ?, leaf_hash = ? WHERE seq = 9",
            (forged, hashlib.sha256(b"\x00" + forged).digest()),
        )
        first_cp_after = db.execute("SELECT MIN(size) FROM checkpoints WHERE size > 9").fetchone()[0]
    db.close()
    err = verify_ledger(path, vkey).first_error
    assert err is not None and err.checkpoint_size == first_cp_after
    assert "does not match the recomputed root" in err.message


def test_tampered_checkpoint_is_named(built: tuple[Path, str, list[str]]) -> None:
    path, vkey, _ = built
    with sqlite3.connect(path) as db:
        size, note = db.execute("SELECT size, note FROM checkpoints WHERE size > 10 ORDER BY size LIMIT 1").fetchone()
        lines = note.decode().split("\n")
        lines[2] = base64.b64encode(bytes(32)).decode()
        db.execute("UPDATE checkpoints SET note = ? WHERE size = ?", ("\n".join(lines).encode(), size))
    db.close()
    report = verify_ledger(path, vkey)
    err = report.first_error
    assert err is not None and err.checkpoint_size == size and err.seq == size - 1
    assert "invalid signature" in err.message
    assert report.entries_checked == size


def test_state_and_history_tampering_is_named(built: tuple[Path, str, list[str]]) -> None:
    path, vkey, tx_ids = built
    with sqlite3.connect(path) as db:
        db.execute("UPDATE state SET value = ? WHERE key = 'k21'", (b"forged",))
    db.close()
    err = verify_ledger(path, vkey).first_error
    assert err is not None and err.seq == 21 and err.tx_id == tx_ids[21] and "k21" in err.message

    with sqlite3.connect(path) as db:
        db.execute("UPDATE state SET value = ? WHERE key = 'k21'", (b"value-21",))
        db.execute("DELETE FROM history WHERE key = 'k5'")
    db.close()
    err = verify_ledger(path, vkey).first_error
    assert err is not None and err.seq == 5 and "history" in err.message


def test_missing_entry_and_wrong_key(built: tuple[Path, str, list[str]], tmp_path: Path) -> None:
    path, vkey, _ = built
    other = CheckpointSigner(tmp_path / "other.key", ORIGIN)
    err = verify_ledger(path, other.vkey).first_error
    assert err is not None and "created with key" in err.message
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM entries WHERE seq = 12")
    db.close()
    err = verify_ledger(path, vkey).first_error
    assert err is not None and err.seq == 12 and "missing" in err.message


def test_verify_is_read_only(built: tuple[Path, str, list[str]]) -> None:
    path, vkey, _ = built
    before = path.read_bytes()
    assert verify_ledger(path, vkey).ok
    assert path.read_bytes() == before
    with pytest.raises(FileNotFoundError):
        verify_ledger(path.with_name("absent.db"), vkey)
