"""The published-checkpoint file: records read backwards across chunk boundaries, torn tails, damaged lines."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from testkit.integrity import build, copy_ledger, open_ledger

from ciphercare.ledger.embedded.checkpoint_log import CheckpointFile, LogRefusedError, iter_reverse, read_records
from ciphercare.ledger.embedded.verify import KIND_DAMAGED, KIND_TAMPERED, verify_ledger


def test_reverse_reading_matches_forward_reading_across_chunks(tmp_path: Path) -> None:
    f = CheckpointFile(tmp_path / "cp")
    notes = [(i, f"note {i} ".encode() * (1 + i % 700)) for i in range(400)]  # lines up to ~7 KB: many chunks
    for size, note in notes:
        f.append(size, note)
    f.close()
    forward, torn = read_records(tmp_path / "cp")
    assert not torn and [(r.size, r.note) for r in forward] == notes
    assert [(r.size, r.note) for r in iter_reverse(tmp_path / "cp")] == notes[::-1]


def test_a_torn_last_record_is_skipped_and_cut_on_open(tmp_path: Path) -> None:
    f = CheckpointFile(tmp_path / "cp")
    f.append(1, b"one")
    f.append(2, b"two")
    f.close()
    with open(tmp_path / "cp", "ab") as raw:
        raw.write(b"3 dGhy")  # a crash mid-append: no newline
    assert [r.size for r in iter_reverse(tmp_path / "cp")] == [2, 1]
    assert read_records(tmp_path / "cp")[1] is True
    again = CheckpointFile(tmp_path / "cp")
    assert again.latest() is not None and again.latest().size == 2  # type: ignore[union-attr]
    again.append(3, b"three")
    again.close()
    assert [r.size for r in read_records(tmp_path / "cp")[0]] == [1, 2, 3]


def test_damaged_published_file_is_named_by_verify_and_refuses_start(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    vkey = build(src, 40)
    data = copy_ledger(src, tmp_path / "garbled")
    lines = (data / "ledger.db.checkpoints").read_bytes().split(b"\n")
    lines[3] = b"12 not*base64"
    (data / "ledger.db.checkpoints").write_bytes(b"\n".join(lines))
    err = verify_ledger(data / "ledger.db", vkey).first_error
    assert err is not None and err.kind == KIND_DAMAGED and "line 4" in err.message
    data = copy_ledger(src, tmp_path / "forged")
    records, _ = read_records(data / "ledger.db.checkpoints")
    last = records[-1]
    forged = last.note.replace(b"\n40\n", b"\n41\n")
    with open(data / "ledger.db.checkpoints", "ab") as raw:
        raw.write(b"41 " + base64.b64encode(forged) + b"\n")
    err = verify_ledger(data / "ledger.db", vkey).first_error
    assert err is not None and err.kind == KIND_TAMPERED
    with pytest.raises(LogRefusedError, match="does not verify"):
        open_ledger(data)
