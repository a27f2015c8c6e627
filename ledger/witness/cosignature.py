"""C2SP tlog-cosignature, Ed25519 (``cosignature/v1``).

A cosignature is a note signature line ``— <witness name> base64(key id || timestamp || signature)``:

* key id: ``SHA-256(<name> || "\\n" || 0x04 || 32-byte Ed25519 public key)[:4]``;
* timestamp: 8 bytes, big-endian POSIX seconds when the witness signed;
* signature: Ed25519 over ``"cosignature/v1\\n" || "time <timestamp>\\n" || <checkpoint note body>``
  (the body includes the final newline and no signature lines).

Witness verifier keys are note vkeys with signature type 0x04:
``<name>+<hex key id>+<base64(0x04 || public key)>``.

ML-DSA-44 (FIPS 204, type 0x06, optional in the spec) is supported too: key id
``SHA-256(<name> || "\n" || 0x06 || 1312-byte key)[:4]``, a 2420-byte signature (empty
context) over the binary ``cosigned_message`` (``"subtree/v1\n\0"``, the cosigner name
and the log origin with 1-byte length prefixes, timestamp, start 0, end = tree size, root hash).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import mldsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ciphercare.ledger.transparency.checkpoint import SIG_DASH, _check_key_name, _write_new_key, check_key_file_mode

ALG_COSIGNATURE_V1 = 0x04
ALG_MLDSA44 = 0x06
_SIG_LEN = {ALG_COSIGNATURE_V1: 64, ALG_MLDSA44: 2420}
_KEY_LEN = {ALG_COSIGNATURE_V1: 32, ALG_MLDSA44: 1312}
ALGORITHMS = {"ed25519": ALG_COSIGNATURE_V1, "ml-dsa-44": ALG_MLDSA44}
COSIGNATURE_HEADER = b"cosignature/v1\n"
MAX_TIMESTAMP = 2**63 - 1


class CosignatureError(ValueError):
    """A cosignature line is malformed or does not verify."""


def cosigner_key_id(name: str, public_key: bytes, alg: int = ALG_COSIGNATURE_V1) -> bytes:
    """The tlog-cosignature key id (0x04 Ed25519 cosignature/v1, 0x06 ML-DSA-44)."""
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([alg]) + public_key).digest()[:4]


def format_witness_vkey(name: str, public_key: bytes, alg: int = ALG_COSIGNATURE_V1) -> str:
    """``<name>+<hex key id>+<base64(type || key)>``."""
    _check_key_name(name)
    if alg not in _KEY_LEN or len(public_key) != _KEY_LEN[alg]:
        raise ValueError(f"a type {alg:#04x} public key must be {_KEY_LEN.get(alg, '?')} bytes")
    raw = bytes([alg]) + public_key
    return f"{name}+{cosigner_key_id(name, public_key, alg).hex()}+{base64.b64encode(raw).decode('ascii')}"


def parse_witness_vkey(vkey: str) -> tuple[str, bytes, int]:
    """Parse a witness vkey; returns ``(name, public key, signature type)``."""
    parts = vkey.strip().split("+", 2)
    if len(parts) != 3:
        raise ValueError("witness key must have the form <name>+<hex key id>+<base64 key>")
    name, hash_hex, key_b64 = parts
    _check_key_name(name)
    try:
        expected = bytes.fromhex(hash_hex)
        raw = base64.b64decode(key_b64, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise ValueError(f"witness key is not valid hex/base64: {exc}") from exc
    if not raw or raw[0] not in _KEY_LEN or len(raw) != 1 + _KEY_LEN[raw[0]]:
        raise ValueError("witness key is not an Ed25519 (0x04) or ML-DSA-44 (0x06) cosigner key")
    if cosigner_key_id(name, raw[1:], raw[0]) != expected:
        raise ValueError("witness key id does not match its name and key")
    return name, raw[1:], raw[0]


def mldsa_message(name: str, timestamp: int, body: bytes) -> bytes:
    """The ML-DSA-44 ``cosigned_message`` for a checkpoint note ``body``."""
    lines = body.decode("utf-8").split("\n")
    if len(lines) < 4:
        raise CosignatureError("checkpoint body needs origin, size and root hash lines")
    origin, size_text, root_b64 = lines[0].encode("utf-8"), lines[1], lines[2]
    try:
        root = base64.b64decode(root_b64, validate=True)
    except binascii.Error as exc:
        raise CosignatureError("checkpoint root hash is not base64") from exc
    if not size_text.isdigit() or len(root) != 32 or not 0 < len(origin) < 256:
        raise CosignatureError("checkpoint body is malformed")
    encoded_name = name.encode("utf-8")
    return (b"subtree/v1\n\x00" + bytes([len(encoded_name)]) + encoded_name + struct.pack(">Q", timestamp)
            + bytes([len(origin)]) + origin + struct.pack(">QQ", 0, int(size_text)) + root)


def signed_message(body: bytes, timestamp: int) -> bytes:
    """What a cosignature/v1 signature covers."""
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise ValueError("cosignature timestamp out of range")
    return COSIGNATURE_HEADER + f"time {timestamp}\n".encode() + body


def split_note(note: bytes) -> tuple[bytes, list[str]]:
    """``(body including its final newline, signature lines)`` of a signed note; raises CosignatureError."""
    split = note.rfind(b"\n\n")
    if split < 0 or not note.endswith(b"\n"):
        raise CosignatureError("not a signed note (no blank line before the signatures)")
    try:
        lines = note[split + 2 :].decode("utf-8").split("\n")[:-1]
    except UnicodeDecodeError as exc:
        raise CosignatureError(f"signature lines are not UTF-8: {exc}") from exc
    return note[: split + 1], lines


class WitnessSigner:
    """A witness's cosigning key, kept as a 0600 PEM file (generated on first use): Ed25519 or ML-DSA-44."""

    def __init__(self, key_path: str | os.PathLike[str], name: str, alg: str = "ed25519") -> None:
        _check_key_name(name)
        if alg not in ALGORITHMS:
            raise ValueError(f"unknown cosignature algorithm {alg!r} (choose from {sorted(ALGORITHMS)})")
        self.name = name
        self.alg = ALGORITHMS[alg]
        self.key_path = Path(key_path)
        if not self.key_path.exists():
            if self.alg == ALG_COSIGNATURE_V1:
                _write_new_key(self.key_path)
            else:
                pem = mldsa.MLDSA44PrivateKey.generate().private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
                fd = os.open(str(self.key_path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    os.write(fd, pem)
                    os.fsync(fd)
                finally:
                    os.close(fd)
        problem = check_key_file_mode(self.key_path)
        if problem is not None:
            raise PermissionError(problem.replace("checkpoint signing key", "witness key"))
        key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        want = Ed25519PrivateKey if self.alg == ALG_COSIGNATURE_V1 else mldsa.MLDSA44PrivateKey
        if not isinstance(key, want):
            raise ValueError(f"{self.key_path} does not hold an {alg} private key")
        self._key: Ed25519PrivateKey | mldsa.MLDSA44PrivateKey = key
        self.public_key = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.key_id = cosigner_key_id(name, self.public_key, self.alg)

    @property
    def vkey(self) -> str:
        return format_witness_vkey(self.name, self.public_key, self.alg)

    def verifier(self) -> CosignatureVerifier:
        return CosignatureVerifier(self.name, self.public_key, self.alg)

    def cosign(self, body: bytes, timestamp: int | None = None) -> str:
        """The signature line (with its newline) cosigning the checkpoint note ``body``."""
        ts = int(time.time()) if timestamp is None else timestamp
        if self.alg == ALG_COSIGNATURE_V1:
            sig = self._key.sign(signed_message(body, ts))
        else:
            sig = self._key.sign(mldsa_message(self.name, ts, body))
        blob = self.key_id + struct.pack(">Q", ts) + sig
        return f"{SIG_DASH} {self.name} {base64.b64encode(blob).decode('ascii')}\n"


@dataclass(frozen=True)
class Cosignature:
    """A verified cosignature: who, and when (POSIX seconds)."""

    name: str
    timestamp: int
    line: str


class CosignatureVerifier:
    """Checks cosignature lines of one witness key (Ed25519 cosignature/v1 or ML-DSA-44)."""

    def __init__(self, name: str, public_key: bytes, alg: int = ALG_COSIGNATURE_V1) -> None:
        _check_key_name(name)
        self.name = name
        self.alg = alg
        self.public_key = bytes(public_key)
        self.key_id = cosigner_key_id(name, self.public_key, alg)
        self._key: Ed25519PublicKey | mldsa.MLDSA44PublicKey
        if alg == ALG_COSIGNATURE_V1:
            self._key = Ed25519PublicKey.from_public_bytes(self.public_key)
        else:
            self._key = mldsa.MLDSA44PublicKey.from_public_bytes(self.public_key)

    @classmethod
    def from_vkey(cls, vkey: str) -> CosignatureVerifier:
        name, key, alg = parse_witness_vkey(vkey)
        return cls(name, key, alg)

    @property
    def vkey(self) -> str:
        return format_witness_vkey(self.name, self.public_key, self.alg)

    def matches(self, line: str) -> bool:
        """Does ``line`` claim to be by this witness key (name and key id)?"""
        prefix = f"{SIG_DASH} {self.name} "
        if not line.startswith(prefix):
            return False
        try:
            raw = base64.b64decode(line[len(prefix) :].strip(), validate=True)
        except binascii.Error:
            return False
        return raw[:4] == self.key_id

    def verify_line(self, body: bytes, line: str, *, max_future_s: int = 300) -> Cosignature:
        """Verify one signature line over the note ``body``; returns the cosignature or raises."""
        prefix = f"{SIG_DASH} {self.name} "
        if not line.startswith(prefix):
            raise CosignatureError(f"not a signature line by {self.name!r}")
        try:
            raw = base64.b64decode(line[len(prefix) :].strip(), validate=True)
        except binascii.Error as exc:
            raise CosignatureError(f"cosignature of {self.name!r} is not base64") from exc
        if len(raw) != 4 + 8 + _SIG_LEN[self.alg] or raw[:4] != self.key_id:
            raise CosignatureError(f"cosignature of {self.name!r} has the wrong key id or length")
        (ts,) = struct.unpack(">Q", raw[4:12])
        if ts > MAX_TIMESTAMP:
            raise CosignatureError("cosignature timestamp exceeds 2^63-1")
        if ts > time.time() + max_future_s:
            raise CosignatureError(f"cosignature of {self.name!r} is dated in the future ({ts})")
        try:
            if isinstance(self._key, Ed25519PublicKey):
                self._key.verify(raw[12:], signed_message(body, ts))
            else:
                self._key.verify(raw[12:], mldsa_message(self.name, ts, body))
        except InvalidSignature as exc:
            raise CosignatureError(f"invalid cosignature by witness {self.name!r}") from exc
        return Cosignature(self.name, ts, line.rstrip("\n"))

    def find(self, note: bytes) -> Cosignature | None:
        """This witness's valid cosignature on ``note`` (body + signature lines), or None."""
        body, lines = split_note(note)
        for line in lines:
            if self.matches(line):
                try:
                    return self.verify_line(body, line)
                except CosignatureError:
                    return None
        return None
