"""An independent reference for the tests, written from RFC 9162 and the C2SP signed-note spec.

Deliberately shares no code with ciphercare.ledger: the tests check the
ledger's proofs and checkpoints against this, not against the ledger's own
verification code.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def leaf_hash(leaf: bytes) -> bytes:
    """RFC 9162 §2.1.1: MTH({d(0)}) = SHA-256(0x00 || d(0))."""
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1 Merkle Tree Hash, by the recursive definition."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaf_hash(leaves[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return node_hash(mth(leaves[:k]), mth(leaves[k:]))


def verify_inclusion(leaf: bytes, index: int, size: int, path: list[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf_hash(leaf)
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(first: int, second: int, proof: list[bytes], first_root: bytes, second_root: bytes) -> bool:
    """RFC 9162 §2.1.4.2."""
    if first == second:
        return not proof and first_root == second_root
    if first == 0 or first > second or not proof:
        return False
    path = list(proof)
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == first_root and sr == second_root and sn == 0


def parse_vkey(vkey: str) -> tuple[str, bytes, Ed25519PublicKey]:
    """C2SP signed-note verifier key: ``name+hexkeyhash+base64(0x01 || pubkey)``."""
    name, key_hash_hex, key_b64 = vkey.split("+", 2)
    raw = base64.b64decode(key_b64)
    if raw[0] != 0x01 or len(raw) != 33:
        raise ValueError("not an Ed25519 verifier key")
    expected = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    if expected.hex() != key_hash_hex:
        raise ValueError("verifier key hash does not match")
    return name, expected, Ed25519PublicKey.from_public_bytes(raw[1:])


def verify_note(note: str, vkey: str) -> tuple[str, int, bytes]:
    """Verify a signed checkpoint note; return (origin, size, root hash)."""
    name, key_id, public_key = parse_vkey(vkey)
    body, _, signatures = note.partition("\n\n")
    body += "\n"
    for line in signatures.splitlines():
        if not line.startswith("\u2014 "):
            continue
        sig_name, sig_b64 = line[2:].rsplit(" ", 1)
        blob = base64.b64decode(sig_b64)
        if sig_name == name and blob[:4] == key_id:
            public_key.verify(blob[4:], body.encode())  # raises InvalidSignature
            lines = body.split("\n")
            return lines[0], int(lines[1]), base64.b64decode(lines[2])
    raise ValueError("no signature by this key")
