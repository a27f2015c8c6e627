"""C2SP signed-note checkpoints: signing, verification, tampering, key handling."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path

import pytest

from ciphercare.ledger.transparency.checkpoint import (
    CheckpointError,
    CheckpointSigner,
    CheckpointVerifier,
    format_vkey,
    key_hash,
    parse_vkey,
)

ORIGIN = "ciphercare.test/log"
ROOT = hashlib.sha256(b"root").digest()


@pytest.fixture
def signer(tmp_path: Path) -> CheckpointSigner:
    return CheckpointSigner(tmp_path / "keys" / "cp.pem", ORIGIN)


def test_signed_note_known_answer_from_the_note_spec() -> None:
    """The example key and note of golang.org/x/mod/sumdb/note (key hash + Ed25519 over the text)."""
    vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
    sig = "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
    note = (
        "If you think cryptography is the answer to your problem,\n"
        "then you don't know what your problem is.\n"
        "\n"
        f"\u2014 PeterNeumann {sig}\n"
    )
    name, key = parse_vkey(vkey)
    assert name == "PeterNeumann"
    assert key_hash(name, key).hex() == "c74f20a3"
    assert format_vkey(name, key) == vkey
    body = CheckpointVerifier.from_vkey(vkey).open_note(note)
    assert body.startswith(b"If you think")
    with pytest.raises(CheckpointError):
        CheckpointVerifier.from_vkey(vkey).open_note(note.replace("problem,", "problem;"))


def test_roundtrip_and_format(signer: CheckpointSigner) -> None:
    cp = signer.sign(42, ROOT, 1_700_000_000_123)
    text = cp.note.decode()
    body, sig = text.split("\n\n")
    assert body.split("\n") == [ORIGIN, "42", base64.b64encode(ROOT).decode(), "timestamp 1700000000123"]
    assert sig.startswith(f"\u2014 {ORIGIN} ") and sig.endswith("\n")
    raw = base64.b64decode(sig.split(" ")[2])
    assert raw[:4] == key_hash(ORIGIN, signer.public_key) == cp.key_id and len(raw) == 68
    got = signer.verifier().verify(cp.note, origin=ORIGIN)
    assert got == cp
    # Also through the vkey string an offline verifier would be handed.
    assert CheckpointVerifier.from_vkey(signer.vkey).verify(cp.note) == cp


def test_tampered_notes_are_rejected(signer: CheckpointSigner) -> None:
    cp = signer.sign(42, ROOT, 1_700_000_000_123)
    v = signer.verifier()
    note = cp.note.decode()
    for tampered in (
        note.replace("\n42\n", "\n43\n"),
        note.replace("timestamp 1700000000123", "timestamp 1700000000124"),
        note.replace(base64.b64encode(ROOT).decode(), base64.b64encode(bytes(32)).decode()),
        note.replace(ORIGIN + "\n", "other.origin\n", 1),
    ):
        with pytest.raises(CheckpointError, match="invalid signature"):
            v.verify(tampered)
    sig_b64 = note.rsplit(" ", 1)[1].strip()
    raw = bytearray(base64.b64decode(sig_b64))
    raw[10] ^= 1
    with pytest.raises(CheckpointError, match="invalid signature"):
        v.verify(note.replace(sig_b64, base64.b64encode(bytes(raw)).decode()))
    with pytest.raises(CheckpointError, match="blank line"):
        v.verify(note.replace("\n\n", "\n"))
    with pytest.raises(CheckpointError, match="newline"):
        v.verify(note.rstrip("\n"))
    with pytest.raises(CheckpointError, match="origin"):
        v.verify(cp.note, origin="someone.else/log")


def test_wrong_key_is_rejected(signer: CheckpointSigner, tmp_path: Path) -> None:
    cp = signer.sign(1, ROOT, 1)
    other = CheckpointSigner(tmp_path / "other.pem", ORIGIN)
    with pytest.raises(CheckpointError, match="not signed by key"):
        other.verifier().verify(cp.note)
    # Same key bytes under another name is another key id: also not accepted.
    with pytest.raises(CheckpointError, match="not signed by key"):
        CheckpointVerifier(signer.public_key, "renamed").verify(cp.note)


def test_unknown_extra_signatures_are_ignored(signer: CheckpointSigner, tmp_path: Path) -> None:
    cp = signer.sign(7, ROOT, 5)
    witness = CheckpointSigner(tmp_path / "w.pem", ORIGIN, key_name="witness")
    wsig = witness.sign(7, ROOT, 5).note.decode().split("\n\n")[1]
    cosigned = cp.note + wsig.encode()
    assert signer.verifier().verify(cosigned).size == 7
    assert witness.verifier().verify(cosigned).size == 7


def test_key_is_generated_once_with_0600_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "checkpoint.pem"
    first = CheckpointSigner(path, ORIGIN)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    content = path.read_bytes()
    second = CheckpointSigner(path, ORIGIN)
    assert second.public_key == first.public_key
    assert path.read_bytes() == content
    assert second.verifier().verify(first.sign(3, ROOT, 9).note).size == 3
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint.pem"]


def test_vkey_parsing_validates() -> None:
    key = bytes(range(32))
    vkey = format_vkey("k", key)
    assert parse_vkey(vkey) == ("k", key)
    name, hh, k64 = vkey.split("+", 2)
    with pytest.raises(ValueError, match="hash does not match"):
        parse_vkey(f"{name}+00000000+{k64}")
    with pytest.raises(ValueError):
        parse_vkey("nonsense")
    with pytest.raises(ValueError):
        format_vkey("bad name", key)


def test_missing_timestamp_is_rejected(signer: CheckpointSigner) -> None:
    # Sign a body without the timestamp extension by hand with the same key.
    body = f"{ORIGIN}\n1\n{base64.b64encode(ROOT).decode()}\n".encode()
    sig = signer._key.sign(body)
    note = body + f"\n\u2014 {ORIGIN} {base64.b64encode(signer.key_id + sig).decode()}\n".encode()
    with pytest.raises(CheckpointError, match="timestamp"):
        signer.verifier().verify(note)
