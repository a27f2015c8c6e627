"""Ed25519-signed checkpoints in the C2SP signed-note / tlog-checkpoint format.

A checkpoint note looks like::

    <origin>\\n
    <tree size, decimal>\\n
    <base64 root hash>\\n
    timestamp <unix ms>\\n          (extension line; tlog-checkpoint allows these)
    \\n
    — <key name> <base64(4-byte key hash || 64-byte Ed25519 signature)>\\n

The signature covers the note text (everything before the blank line,
including its final newline).  The key hash is the first four bytes of
``SHA-256(key name || 0x0A || 0x01 || public key)`` (0x01 = Ed25519 in the
signed-note spec), and the verifier key is handed out as the note
``vkey`` string ``<name>+<hex key hash>+<base64(0x01 || public key)>``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import stat
import tempfile
import time
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ciphercare.ledger.api import Checkpoint

log = logging.getLogger(__name__)

ALG_ED25519 = 0x01
SIG_DASH = "\u2014"  # the em dash that starts every signature line
MAX_SIGNATURES = 100
TIMESTAMP_EXT = "timestamp"


class CheckpointError(ValueError):
    """A checkpoint note is malformed, unsigned by the expected key, or its signature is bad."""


def _check_key_name(name: str) -> None:
    if not name:
        raise ValueError("key name must not be empty")
    if any(c.isspace() for c in name) or "+" in name:
        raise ValueError(f"key name {name!r} must not contain white space or '+'")


def _check_origin(origin: str) -> None:
    if not origin:
        raise ValueError("checkpoint origin must not be empty")
    if "\n" in origin or any(ord(c) < 0x20 for c in origin):
        raise ValueError(f"checkpoint origin {origin!r} must be one line without control characters")


def key_hash(key_name: str, public_key: bytes) -> bytes:
    """The signed-note key id: first 4 bytes of SHA-256(name || '\\n' || 0x01 || public key)."""
    return hashlib.sha256(key_name.encode("utf-8") + b"\n" + bytes([ALG_ED25519]) + public_key).digest()[:4]


def format_vkey(key_name: str, public_key: bytes) -> str:
    """The note verifier-key string ``<name>+<hex key hash>+<base64(0x01 || key)>``."""
    _check_key_name(key_name)
    if len(public_key) != 32:
        raise ValueError(f"Ed25519 public key must be 32 bytes, got {len(public_key)}")
    return "{}+{}+{}".format(
        key_name,
        key_hash(key_name, public_key).hex(),
        base64.b64encode(bytes([ALG_ED25519]) + public_key).decode("ascii"),
    )


def parse_vkey(vkey: str) -> tuple[str, bytes]:
    """Parse a note verifier key; returns ``(key name, 32-byte public key)``."""
    parts = vkey.strip().split("+", 2)
    if len(parts) != 3:
        raise ValueError("verifier key must have the form <name>+<hex keyhash>+<base64 key>")
    name, hash_hex, key_b64 = parts
    _check_key_name(name)
    try:
        expected_hash = bytes.fromhex(hash_hex)
        raw = base64.b64decode(key_b64, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise ValueError(f"verifier key is not valid hex/base64: {exc}") from exc
    if len(expected_hash) != 4:
        raise ValueError("verifier key hash must be 4 bytes (8 hex digits)")
    if len(raw) != 33 or raw[0] != ALG_ED25519:
        raise ValueError("verifier key is not an Ed25519 (algorithm 0x01) key")
    public_key = raw[1:]
    if key_hash(name, public_key) != expected_hash:
        raise ValueError("verifier key hash does not match its name and key")
    return name, public_key


def checkpoint_body(origin: str, size: int, root_hash: bytes, timestamp_ms: int) -> bytes:
    """The note text that gets signed."""
    _check_origin(origin)
    if size < 0:
        raise ValueError(f"tree size must be non-negative, got {size}")
    if len(root_hash) != 32:
        raise ValueError(f"root hash must be 32 bytes, got {len(root_hash)}")
    if timestamp_ms < 0:
        raise ValueError(f"timestamp must be non-negative, got {timestamp_ms}")
    root_b64 = base64.b64encode(root_hash).decode("ascii")
    return f"{origin}\n{size}\n{root_b64}\n{TIMESTAMP_EXT} {timestamp_ms}\n".encode()


def _raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _write_new_key(path: Path) -> None:
    """Create a fresh PEM Ed25519 key at ``path`` with mode 0600, atomically and never overwriting."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd, tmp = tempfile.mkstemp(prefix=".key-", dir=str(path.parent))  # mkstemp creates it 0600
    try:
        os.write(fd, pem)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        try:
            os.link(tmp, path)  # fails if another process created the key first
        except FileExistsError:
            log.info("signing key %s was created concurrently; using it", path)
    finally:
        if fd >= 0:
            os.close(fd)
        os.unlink(tmp)
    dir_fd = os.open(str(path.parent), os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class CheckpointSigner:
    """Signs checkpoints with an Ed25519 key kept as a PEM file (generated 0600 on first use)."""

    def __init__(
        self,
        key_path: str | os.PathLike[str],
        origin: str,
        key_name: str | None = None,
        *,
        strict_mode: bool = False,
    ) -> None:
        _check_origin(origin)
        self.origin = origin
        self.key_name = key_name if key_name is not None else origin
        _check_key_name(self.key_name)
        self.key_path = Path(key_path)
        if not self.key_path.exists():
            _write_new_key(self.key_path)
            log.info("generated checkpoint signing key %s", self.key_path)
        problem = check_key_file_mode(self.key_path)
        if problem is not None:
            if strict_mode:
                raise PermissionError(problem)
            log.warning("%s", problem)
        key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{self.key_path} does not hold an Ed25519 private key")
        self._key = key
        self.public_key = _raw_public_key(key.public_key())
        self.key_id = key_hash(self.key_name, self.public_key)

    @classmethod
    def load(cls, key_path: str | os.PathLike[str], origin: str, key_name: str | None = None) -> CheckpointSigner:
        """Open an EXISTING key (never generates one; for tools such as ``ledger verify``)."""
        if not Path(key_path).is_file():
            raise FileNotFoundError(f"no checkpoint signing key at {key_path}")
        return cls(key_path, origin, key_name)

    @property
    def vkey(self) -> str:
        """The verifier key string (``<name>+<hex key hash>+<base64 key>``) to hand to offline verifiers."""
        return format_vkey(self.key_name, self.public_key)

    def verifier(self) -> CheckpointVerifier:
        """A verifier for this signer's notes."""
        return CheckpointVerifier(self.public_key, self.key_name)

    def sign(self, size: int, root_hash: bytes, timestamp_ms: int | None = None) -> Checkpoint:
        """Sign a checkpoint for ``size`` leaves with root ``root_hash``."""
        if timestamp_ms is None:
            timestamp_ms = time.time_ns() // 1_000_000
        body = checkpoint_body(self.origin, size, root_hash, timestamp_ms)
        sig = self._key.sign(body)
        sig_b64 = base64.b64encode(self.key_id + sig).decode("ascii")
        note = body + f"\n{SIG_DASH} {self.key_name} {sig_b64}\n".encode()
        return Checkpoint(
            origin=self.origin,
            size=size,
            root_hash=bytes(root_hash),
            timestamp_ms=timestamp_ms,
            note=note,
            key_name=self.key_name,
            key_id=self.key_id,
        )


class CheckpointVerifier:
    """Parses a checkpoint note and checks its Ed25519 signature by one known key."""

    def __init__(self, public_key: bytes | Ed25519PublicKey, key_name: str) -> None:
        _check_key_name(key_name)
        if isinstance(public_key, Ed25519PublicKey):
            raw = _raw_public_key(public_key)
        else:
            raw = bytes(public_key)
        if len(raw) != 32:
            raise ValueError(f"Ed25519 public key must be 32 bytes, got {len(raw)}")
        self.key_name = key_name
        self.public_key = raw
        self.key_id = key_hash(key_name, raw)
        self._key = Ed25519PublicKey.from_public_bytes(raw)

    @classmethod
    def from_vkey(cls, vkey: str) -> CheckpointVerifier:
        """Build a verifier from a ``<name>+<hash>+<key>`` verifier-key string."""
        name, key = parse_vkey(vkey)
        return cls(key, name)

    @property
    def vkey(self) -> str:
        """This verifier's key in note verifier-key form."""
        return format_vkey(self.key_name, self.public_key)

    def verify(self, note: bytes | str, origin: str | None = None) -> Checkpoint:
        """Check ``note``'s signature and parse it; raises :class:`CheckpointError` with the reason."""
        data = note.encode("utf-8") if isinstance(note, str) else bytes(note)
        body = self.open_note(data)
        return self._parse_body(body, data, origin)

    def open_note(self, note: bytes | str) -> bytes:
        """Check a signed note's signature by this key and return its text (any note, not only checkpoints)."""
        data = note.encode("utf-8") if isinstance(note, str) else bytes(note)
        try:
            text_str = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CheckpointError(f"note is not valid UTF-8: {exc}") from exc
        if any(ord(c) < 0x20 and c != "\n" for c in text_str):
            raise CheckpointError("note contains control characters other than newline")
        if not data.endswith(b"\n"):
            raise CheckpointError("note does not end with a newline")
        split = data.rfind(b"\n\n")
        if split < 0:
            raise CheckpointError("note has no blank line before its signatures")
        body = data[: split + 1]
        sig_block = data[split + 2 :]
        sig_lines = sig_block.decode("utf-8").split("\n")[:-1]
        if not sig_lines:
            raise CheckpointError("note has no signature lines")
        if len(sig_lines) > MAX_SIGNATURES:
            raise CheckpointError(f"note has more than {MAX_SIGNATURES} signatures")
        found = False
        for line in sig_lines:
            prefix = SIG_DASH + " "
            if not line.startswith(prefix):
                raise CheckpointError(f"malformed signature line {line!r}")
            fields = line[len(prefix) :].split(" ")
            if len(fields) != 2 or not fields[0]:
                raise CheckpointError(f"malformed signature line {line!r}")
            name, sig_b64 = fields
            try:
                raw = base64.b64decode(sig_b64, validate=True)
            except binascii.Error as exc:
                raise CheckpointError(f"signature of {name!r} is not base64: {exc}") from exc
            if len(raw) < 5:
                raise CheckpointError(f"signature of {name!r} is too short")
            if name != self.key_name or raw[:4] != self.key_id:
                continue  # another signer's line: ignored, as the note spec says
            if len(raw) != 4 + 64:
                raise CheckpointError(f"signature of {name!r} is not a 64-byte Ed25519 signature")
            try:
                self._key.verify(raw[4:], body)
            except InvalidSignature as exc:
                raise CheckpointError(f"invalid signature by key {name!r}") from exc
            found = True
        if not found:
            raise CheckpointError(f"note is not signed by key {self.key_name!r} (key id {self.key_id.hex()})")
        return body

    def _parse_body(self, body: bytes, note: bytes, origin: str | None) -> Checkpoint:
        lines = body.decode("utf-8").split("\n")[:-1]
        if len(lines) < 3:
            raise CheckpointError("checkpoint body needs origin, size and root hash lines")
        note_origin, size_str, root_b64 = lines[0], lines[1], lines[2]
        if not note_origin:
            raise CheckpointError("checkpoint origin is empty")
        if origin is not None and note_origin != origin:
            raise CheckpointError(f"checkpoint origin {note_origin!r} is not the expected {origin!r}")
        if not size_str.isascii() or not size_str.isdigit() or (len(size_str) > 1 and size_str[0] == "0"):
            raise CheckpointError(f"checkpoint size {size_str!r} is not a canonical decimal number")
        try:
            root = base64.b64decode(root_b64, validate=True)
        except binascii.Error as exc:
            raise CheckpointError(f"checkpoint root hash is not base64: {exc}") from exc
        if len(root) != 32:
            raise CheckpointError(f"checkpoint root hash has {len(root)} bytes, expected 32")
        timestamp_ms: int | None = None
        for ext in lines[3:]:
            if not ext:
                raise CheckpointError("checkpoint has an empty extension line")
            if ext.startswith(TIMESTAMP_EXT + " "):
                value = ext[len(TIMESTAMP_EXT) + 1 :]
                if timestamp_ms is not None:
                    raise CheckpointError("checkpoint has more than one timestamp line")
                if not value.isascii() or not value.isdigit():
                    raise CheckpointError(f"checkpoint timestamp {value!r} is not a decimal number")
                timestamp_ms = int(value)
        if timestamp_ms is None:
            raise CheckpointError("checkpoint has no 'timestamp <ms>' extension line")
        return Checkpoint(
            origin=note_origin,
            size=int(size_str),
            root_hash=root,
            timestamp_ms=timestamp_ms,
            note=note,
            key_name=self.key_name,
            key_id=self.key_id,
        )


class CheckpointKeyring:
    """The log keys a verifier trusts, oldest first (key rotation).

    A checkpoint is accepted when a key of the ring signed it. Rotation is
    one-way: once a newer key has signed some tree size, a checkpoint for a
    larger size signed by an older (retired) key is refused, so a stolen old
    key cannot extend the log.  :meth:`verify_sequence` enforces that over a
    run of checkpoints in size order; :meth:`verify` checks one note alone.
    """

    def __init__(self, verifiers: list[CheckpointVerifier]) -> None:
        if not verifiers:
            raise ValueError("a keyring needs at least one verifier key")
        self.verifiers = list(verifiers)

    @classmethod
    def from_vkeys(cls, vkeys: list[str] | tuple[str, ...] | str) -> CheckpointKeyring:
        """Keys from vkey strings (a list, or one string with comma-separated vkeys), oldest first."""
        if isinstance(vkeys, str):
            vkeys = [v for v in (p.strip() for p in vkeys.split(",")) if v]
        return cls([CheckpointVerifier.from_vkey(v) for v in vkeys])

    @property
    def vkeys(self) -> list[str]:
        return [v.vkey for v in self.verifiers]

    @property
    def current(self) -> CheckpointVerifier:
        return self.verifiers[-1]

    def signer_index(self, note: bytes | str) -> int:
        """Index of the newest ring key whose signature on ``note`` verifies; raises CheckpointError if none."""
        errors: list[str] = []
        for i in range(len(self.verifiers) - 1, -1, -1):
            try:
                self.verifiers[i].open_note(note)
                return i
            except CheckpointError as exc:
                errors.append(str(exc))
        if len(self.verifiers) == 1:
            raise CheckpointError(errors[0])
        raise CheckpointError("not signed by any trusted log key: " + "; ".join(errors))

    def verify(self, note: bytes | str, origin: str | None = None) -> Checkpoint:
        """Verify ``note`` by whichever ring key signed it and parse it."""
        index = self.signer_index(note)
        return self.verifiers[index].verify(note, origin=origin)

    def verify_indexed(self, note: bytes | str, origin: str | None = None) -> tuple[Checkpoint, int]:
        """Like :meth:`verify`, also returning the index of the signing key in the ring."""
        index = self.signer_index(note)
        return self.verifiers[index].verify(note, origin=origin), index


def check_key_file_mode(path: Path) -> str | None:
    """A warning when the signing key file is readable by group/other or not owned by this user, else None."""
    st = path.stat()
    mode = stat.S_IMODE(st.st_mode)
    problems = []
    if mode & 0o077:
        problems.append(f"mode {mode:o} lets group/other read it (chmod 600)")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        problems.append(f"it is owned by uid {st.st_uid}, not this process's uid {os.getuid()}")
    if not problems:
        return None
    return f"checkpoint signing key {path}: " + "; ".join(problems)
