"""ECDSA P-256 signing with low-S normalisation, and the matching verification a peer performs.

Fabric signs ``SHA-256(message)`` and accepts only low-S signatures (``s <= n/2``,
``bccsp/sw/ecdsa.go``); the official clients normalise S before DER encoding.
A :data:`Signer` takes the message bytes and returns the DER signature; the
digest is taken inside (the official clients split hash and sign; one step is
enough here since SHA-256 is the only hash Fabric's MSP accepts for P-256).
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

#: Order of the P-256 group (FIPS 186-4 D.1.2.3).
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
P256_HALF_N = P256_N >> 1

Signer = Callable[[bytes], bytes]


class SignatureError(ValueError):
    """A signature that does not verify, is malformed or is not low-S."""


def to_low_s(der: bytes) -> bytes:
    """The same signature with ``s`` replaced by ``n - s`` when ``s > n/2``."""
    r, s = decode_dss_signature(der)
    if s > P256_HALF_N:
        s = P256_N - s
    return encode_dss_signature(r, s)


def new_private_key_signer(key: ec.EllipticCurvePrivateKey) -> Signer:
    """A signer for a P-256 private key producing low-S DER signatures over SHA-256."""
    if not isinstance(key.curve, ec.SECP256R1):
        raise ValueError(f"Fabric signers here use P-256, got {key.curve.name}")

    def sign(message: bytes) -> bytes:
        return to_low_s(key.sign(message, ec.ECDSA(hashes.SHA256())))

    return sign


def verify(public_key: ec.EllipticCurvePublicKey, message: bytes, signature: bytes) -> None:
    """Verify a DER ECDSA-SHA256 signature as a peer does: well-formed, low-S, valid."""
    if not isinstance(public_key.curve, ec.SECP256R1):
        raise SignatureError(f"creator key is on {public_key.curve.name}, not P-256")
    try:
        r, s = decode_dss_signature(signature)
    except ValueError as exc:
        raise SignatureError("signature is not a DER ECDSA signature") from exc
    if encode_dss_signature(r, s) != signature:
        raise SignatureError("signature is not in canonical DER form")
    if not (0 < r < P256_N and 0 < s < P256_N):
        raise SignatureError("signature values out of range")
    if s > P256_HALF_N:
        raise SignatureError("signature is not low-S (s > n/2)")
    try:
        public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise SignatureError("signature does not verify against the creator's certificate") from exc
