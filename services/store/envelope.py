"""Envelope encryption for PHI kept off-chain: a per-patient data key, wrapped by a key-encryption key.

Every PHI-bearing document (FHIR Consent bodies, access details) is sealed with
AES-256-GCM under a data key that belongs to one patient pseudonym. The data key
is stored only wrapped (AES-256-GCM) by the key-encryption key (KEK), which lives
outside the database: a file generated on first start (mode 0600), like the
ledger's signing key. Destroying a patient's data key makes every copy of that
patient's ciphertext unreadable (crypto-shredding), wherever the copy is.

Associated data binds each ciphertext to where it belongs (pid, key id, document
hash and kind), so a row copied onto another patient or another key fails to open.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import secrets
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger("ciphercare.crypto")

KEY_BYTES = 32
NONCE_BYTES = 12
_KEK_HEADER = b"ciphercare-kek-v1\n"
_WRAP_AAD = b"ciphercare/data-key/v1\x00"
_DOC_AAD = b"ciphercare/document/v1\x00"


class CryptoError(Exception):
    """A key or ciphertext could not be used; the message names which, never the plaintext."""


class KekMismatchError(CryptoError):
    """A data key was wrapped by a different key-encryption key than the configured one."""


def _aad(prefix: bytes, *parts: str) -> bytes:
    return prefix + b"\x00".join(part.encode("utf-8") for part in parts)


def new_key_id() -> str:
    """A fresh random data-key id (32 hex characters)."""
    return secrets.token_hex(16)


@dataclass(frozen=True)
class KeyEncryptionKey:
    """The KEK: 32 random bytes; ``kek_id`` names it without revealing it."""

    key: bytes

    def __post_init__(self) -> None:
        if len(self.key) != KEY_BYTES:
            raise CryptoError(f"a key-encryption key has {KEY_BYTES} bytes, got {len(self.key)}")

    def __repr__(self) -> str:
        return f"KeyEncryptionKey(kek_id={self.kek_id!r})"

    @property
    def kek_id(self) -> str:
        return hashlib.sha256(b"ciphercare-kek-id\x00" + self.key).hexdigest()[:16]

    @classmethod
    def generate(cls) -> KeyEncryptionKey:
        return cls(secrets.token_bytes(KEY_BYTES))

    @classmethod
    def load_or_create(cls, path: Path) -> KeyEncryptionKey:
        """The KEK kept at ``path``, generated (mode 0600, never overwritten) if the file does not exist.

        Refuses a file that group or others can read: a readable KEK undoes every erasure.
        """
        if not path.exists():
            cls.generate().write_new(path)
            log.info("generated a new key-encryption key", extra={"path": str(path)})
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise CryptoError(f"key-encryption key {path} is accessible to group/other (mode {mode:o}); chmod 600 it")
        return cls.from_file_bytes(path.read_bytes(), str(path))

    @classmethod
    def from_file_bytes(cls, raw: bytes, where: str) -> KeyEncryptionKey:
        if not raw.startswith(_KEK_HEADER):
            raise CryptoError(f"{where} is not a ciphercare key-encryption key file")
        try:
            key = base64.b64decode(raw[len(_KEK_HEADER):].strip(), validate=True)
        except ValueError as exc:
            raise CryptoError(f"{where}: the key is not valid base64") from exc
        if len(key) != KEY_BYTES:
            raise CryptoError(f"{where}: the key has {len(key)} bytes, expected {KEY_BYTES}")
        return cls(key)

    def file_bytes(self) -> bytes:
        return _KEK_HEADER + base64.b64encode(self.key) + b"\n"

    def write_new(self, path: Path) -> None:
        """Write this KEK to ``path`` (0600) atomically; fails if the file already exists."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".kek-", dir=str(path.parent))  # created 0600
        try:
            os.write(fd, self.file_bytes())
            os.fsync(fd)
            os.close(fd)
            fd = -1
            try:
                os.link(tmp, path)
            except FileExistsError:
                log.info("key-encryption key was created concurrently; using it", extra={"path": str(path)})
        finally:
            if fd >= 0:
                os.close(fd)
            os.unlink(tmp)
        dir_fd = os.open(str(path.parent), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    # Wrapping ------------------------------------------------------------------

    def wrap(self, data_key: bytes, pid: str, key_id: str) -> bytes:
        """``nonce || AES-256-GCM(data_key)`` bound to the patient and the key id."""
        if len(data_key) != KEY_BYTES:
            raise CryptoError(f"a data key has {KEY_BYTES} bytes, got {len(data_key)}")
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + AESGCM(self.key).encrypt(nonce, data_key, _aad(_WRAP_AAD, pid, key_id))

    def unwrap(self, wrapped: bytes, pid: str, key_id: str, kek_id: str) -> bytes:
        """The data key inside ``wrapped``; refuses a key wrapped by another KEK or bound to another patient."""
        if kek_id != self.kek_id:
            raise KekMismatchError(
                f"data key {key_id} was wrapped by key-encryption key {kek_id}, but the configured one is "
                f"{self.kek_id}"
            )
        try:
            key = AESGCM(self.key).decrypt(
                wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _aad(_WRAP_AAD, pid, key_id)
            )
        except (InvalidTag, ValueError) as exc:
            raise CryptoError(f"data key {key_id} does not unwrap under key-encryption key {self.kek_id}") from exc
        if len(key) != KEY_BYTES:
            raise CryptoError(f"data key {key_id} has {len(key)} bytes")
        return key


def new_data_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def seal_document(data_key: bytes, plaintext: bytes, *, sha256: str, pid: str, kind: str, key_id: str) -> bytes:
    """``nonce || AES-256-GCM(plaintext)`` with the row's identity as associated data."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce + AESGCM(data_key).encrypt(nonce, plaintext, _aad(_DOC_AAD, sha256, pid, kind, key_id))


def open_document(data_key: bytes, sealed: bytes, *, sha256: str, pid: str, kind: str, key_id: str) -> bytes:
    """The plaintext of a sealed document; :class:`CryptoError` if it was altered or moved."""
    try:
        return AESGCM(data_key).decrypt(
            sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], _aad(_DOC_AAD, sha256, pid, kind, key_id)
        )
    except (InvalidTag, ValueError) as exc:
        raise CryptoError(f"document {sha256} does not decrypt under data key {key_id}") from exc


__all__ = [
    "CryptoError",
    "KekMismatchError",
    "KeyEncryptionKey",
    "new_data_key",
    "new_key_id",
    "open_document",
    "seal_document",
]
