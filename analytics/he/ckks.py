"""CKKS parameters, security check and wire formats shared by both roles (TenSEAL 0.3 / Microsoft SEAL 4).

The roles live apart and never import each other: the hospital's :class:`KeyOwner` in
:mod:`ciphercare.analytics.client.keys` (generates and keeps the key pair, publishes the *public*
context, encrypts the comparison bits, decrypts scores) and the server's :class:`Evaluator` in
:mod:`ciphercare.analytics.server.evaluator` (accepts only a public context, validates it and every
ciphertext, evaluates the model with slot ownership and input validity). This module holds what both
must agree on: the parameter set, the security check, SEAL byte I/O, the vetting of a public context
and the ciphertext envelope.

Parameters (:data:`CKKS_PARAMETERS`): ring dimension N = 8192 with a 218-bit coefficient modulus
(data primes 53 + 52 + 53 bits, special prime 60 bits). The Homomorphic Encryption Security Standard
(Albrecht et al., homomorphicencryption.org, 2018), Table 1, allows log2 q <= 218 at N = 8192 for
128-bit classical security; SEAL enforces the same bound (``CoeffModulus.MaxBitCount(8192, tc128)``),
and :func:`check_security` checks both.

Evaluation never rotates (no Galois keys) and never rescales: bits are encrypted at scale 2^40, every
product multiplies scales exactly, plaintext constants are encoded at whatever scale makes each sum
exact, and the result lands at scale 2^147 in the 158-bit data modulus (room for |z| < 2^10 per slot).

Ciphertexts travel in an envelope ``b"CCT1" + context id (32 bytes) + SEAL bytes``; the bits are
encrypted with the secret key (seeded symmetric encryption), which halves their size.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# HE Security Standard (homomorphicencryption.org), Table 1: max log2(q) for 128-bit classical security.
HE_STANDARD_128_MAX_LOGQ: dict[int, int] = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}

ENVELOPE_MAGIC = b"CCT1"
CONTEXT_ID_BYTES = 32
SEAL_MAGIC = 0xA15E
SEAL_HEADER = struct.Struct("<HBBBBHQ")  # magic, header size, major, minor, compr mode, reserved, total size
MAX_CONTEXT_BYTES = 8 * 1024 * 1024
MAX_CIPHERTEXT_BYTES = 2 * 1024 * 1024


class HEError(ValueError):
    """Invalid HE input (context, parameters or ciphertext); the message says exactly what is wrong."""


@dataclass(frozen=True)
class CkksParameters:
    """The one parameter set the service accepts (see the module docstring for the budget)."""

    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (53, 52, 53, 60)
    bit_scale_log2: int = 40
    result_scale_log2: int = 147
    flood_log2: int = -16
    security_level: int = 128

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2

    @property
    def bit_scale(self) -> float:
        return float(2**self.bit_scale_log2)

    @property
    def result_scale(self) -> float:
        return float(2**self.result_scale_log2)

    @property
    def data_bits(self) -> int:
        return sum(self.coeff_mod_bit_sizes[:-1])

    def to_dict(self) -> dict[str, Any]:
        return {
            "scheme": "CKKS",
            "poly_modulus_degree": self.poly_modulus_degree,
            "coeff_mod_bit_sizes": list(self.coeff_mod_bit_sizes),
            "slots": self.slots,
            "bit_scale_log2": self.bit_scale_log2,
            "result_scale_log2": self.result_scale_log2,
            "flood_log2": self.flood_log2,
            "security_level": self.security_level,
            "security_reference": "HomomorphicEncryption.org Security Standard (2018), Table 1: "
                                  "N=8192 -> log2 q <= 218 for 128-bit classical security",
            "galois_keys": False,
            "relinearization_keys": True,
        }


CKKS_PARAMETERS = CkksParameters()


def max_margin(params: CkksParameters = CKKS_PARAMETERS) -> float:
    """Largest |margin| a model may reach: 2^(data bits - 1 - result scale) / 8 = 128.

    A slot value z at the result scale keeps every plaintext coefficient below scale * |z|, so
    |z| < 2^10 decrypts correctly; a factor 8 leaves room for the flooding, validity and unowned-slot
    noise (the last is at most 2^6 * sqrt(2) in slots that carry no margin)."""
    return 2.0 ** (params.data_bits - 1 - params.result_scale_log2 - 1) / 4


def check_security(poly_modulus_degree: int, coeff_bits: Sequence[int]) -> None:
    """Raise :class:`HEError` unless the parameters give at least 128-bit security (HE Standard Table 1)."""
    bound = HE_STANDARD_128_MAX_LOGQ.get(poly_modulus_degree)
    if bound is None:
        raise HEError(f"poly_modulus_degree {poly_modulus_degree} is not a power of two in 1024..32768")
    total = sum(coeff_bits)
    if total > bound:
        raise HEError(f"coefficient modulus of {total} bits at N={poly_modulus_degree} is below 128-bit security "
                      f"(HE Standard Table 1 allows at most {bound} bits)")
    from tenseal import sealapi

    if total > sealapi.CoeffModulus.MaxBitCount(poly_modulus_degree, sealapi.SEC_LEVEL_TYPE.TC128):
        raise HEError(f"coefficient modulus of {total} bits exceeds SEAL's 128-bit bound at N={poly_modulus_degree}")


# --- SEAL byte I/O (sealapi saves and loads through file paths) -----------------------------------

_TMP_DIR = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


@contextmanager
def _scratch() -> Iterator[str]:
    fd, path = tempfile.mkstemp(prefix="ciphercare-he-", dir=_TMP_DIR)
    os.close(fd)
    try:
        yield path
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def seal_save(obj: Any) -> bytes:
    """Serialise a SEAL object (or a SerializableCiphertext) to bytes."""
    with _scratch() as path:
        obj.save(path)
        return Path(path).read_bytes()


def seal_load(obj: Any, context: Any, data: bytes) -> Any:
    """Load SEAL bytes into ``obj`` (validated by SEAL against ``context``)."""
    with _scratch() as path:
        Path(path).write_bytes(data)
        if context is None:
            obj.load(path)
        else:
            obj.load(context, path)
    return obj


def check_seal_header(data: bytes, what: str, max_bytes: int) -> None:
    """Reject bytes that are not one whole SEAL object before SEAL parses them."""
    if len(data) < SEAL_HEADER.size:
        raise HEError(f"{what} is truncated: {len(data)} bytes is shorter than a SEAL header")
    magic, header_size, major, _minor, compr, reserved, size = SEAL_HEADER.unpack_from(data)
    if magic != SEAL_MAGIC or header_size != SEAL_HEADER.size:
        raise HEError(f"{what} is not a SEAL object (bad magic)")
    if major != 4 or compr > 2 or reserved != 0:
        raise HEError(f"{what} has an unsupported SEAL header (version {major}, compression {compr})")
    if size != len(data):
        raise HEError(f"{what} is truncated or padded: the header says {size} bytes, got {len(data)}")
    if size > max_bytes:
        raise HEError(f"{what} is larger than {max_bytes} bytes")


# --- TenSEAL context bytes: a minimal protobuf reader to vet a context before TenSEAL loads it ------

# TenSEALContextProto: 1 encryption parameters, 2 public part (1 public key, 2 flags, 3 scale,
# 4 relinearisation keys, 5 Galois keys), 3 secret key.
_CTX_PARAMS, _CTX_PUBLIC, _CTX_SECRET = 1, 2, 3
_PUB_KEY, _PUB_FLAGS, _PUB_SCALE, _PUB_RELIN, _PUB_GALOIS = 1, 2, 3, 4, 5
_PUB_ALLOWED = frozenset({_PUB_KEY, _PUB_FLAGS, _PUB_SCALE, _PUB_RELIN})


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if i >= len(data) or shift > 63:
            raise HEError("context is malformed (truncated varint)")
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def proto_fields(data: bytes) -> dict[int, list[bytes | int]]:
    """Top-level fields of a protobuf message (length-delimited as bytes, varints as int)."""
    fields: dict[int, list[bytes | int]] = {}
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise HEError("context is malformed (field number 0)")
        if wire == 0:
            value, i = _varint(data, i)
            fields.setdefault(number, []).append(value)
        elif wire == 2:
            length, i = _varint(data, i)
            if i + length > len(data):
                raise HEError("context is truncated")
            fields.setdefault(number, []).append(data[i:i + length])
            i += length
        elif wire == 1:
            if i + 8 > len(data):
                raise HEError("context is truncated")
            fields.setdefault(number, []).append(data[i:i + 8])
            i += 8
        elif wire == 5:
            if i + 4 > len(data):
                raise HEError("context is truncated")
            fields.setdefault(number, []).append(data[i:i + 4])
            i += 4
        else:
            raise HEError(f"context is malformed (wire type {wire})")
    return fields


def _single_bytes(fields: dict[int, list[bytes | int]], number: int, what: str) -> bytes:
    values = fields.get(number, [])
    if len(values) != 1 or not isinstance(values[0], bytes):
        raise HEError(f"context must carry exactly one {what}")
    return values[0]


def vet_public_context(data: bytes, params: CkksParameters = CKKS_PARAMETERS) -> None:
    """Refuse anything but a public TenSEAL CKKS context with exactly ``params`` (before TenSEAL parses it)."""
    from tenseal import sealapi

    if not isinstance(data, bytes) or not data:
        raise HEError("context is empty")
    if len(data) > MAX_CONTEXT_BYTES:
        raise HEError(f"context is larger than {MAX_CONTEXT_BYTES} bytes")
    top = proto_fields(data)
    if _CTX_SECRET in top:
        raise HEError("context carries a secret key; send the public context only (make_context_public)")
    unknown = set(top) - {_CTX_PARAMS, _CTX_PUBLIC}
    if unknown:
        raise HEError(f"context has unexpected fields {sorted(unknown)}")
    raw_params = _single_bytes(top, _CTX_PARAMS, "set of encryption parameters")
    check_seal_header(raw_params, "encryption parameters", 64 * 1024)
    parms = sealapi.EncryptionParameters(sealapi.SCHEME_TYPE.CKKS)
    try:
        seal_load(parms, None, raw_params)
    except (ValueError, RuntimeError, TypeError) as exc:
        raise HEError(f"encryption parameters do not load: {exc}") from None
    if parms.scheme() != sealapi.SCHEME_TYPE.CKKS:
        raise HEError(f"scheme must be CKKS, got {parms.scheme().name}")
    n = parms.poly_modulus_degree()
    bits = [m.bit_count() for m in parms.coeff_modulus()]
    check_security(n, bits)
    if n != params.poly_modulus_degree or tuple(bits) != params.coeff_mod_bit_sizes:
        raise HEError(f"wrong parameters: N={n}, coefficient modulus bits {bits}; this service needs "
                      f"N={params.poly_modulus_degree} with {list(params.coeff_mod_bit_sizes)}")
    public = proto_fields(_single_bytes(top, _CTX_PUBLIC, "public key section"))
    if _PUB_GALOIS in public:
        raise HEError("context carries Galois keys; scoring needs no rotations, leave them out")
    extra = set(public) - _PUB_ALLOWED
    if extra:
        raise HEError(f"context's public key section has unexpected fields {sorted(extra)}; "
                      "send exactly the public key, flags, scale and relinearisation keys")
    for number in _PUB_ALLOWED:
        if len(public.get(number, [])) > 1:
            raise HEError(f"context's public key section repeats field {number}")
    for number, what in ((_PUB_KEY, "public key"), (_PUB_RELIN, "set of relinearisation keys")):
        check_seal_header(_single_bytes(public, number, what), what, MAX_CONTEXT_BYTES)


def context_id(public_context: bytes) -> str:
    """The id of a public context: SHA-256 of its bytes (hex)."""
    return hashlib.sha256(public_context).hexdigest()


def open_envelope(envelope: bytes, expected_context: str, what: str) -> bytes:
    """The SEAL bytes inside an envelope, after checking its magic and context id."""
    if not isinstance(envelope, bytes) or len(envelope) < len(ENVELOPE_MAGIC) + CONTEXT_ID_BYTES:
        raise HEError(f"{what} is truncated (no envelope)")
    if envelope[:len(ENVELOPE_MAGIC)] != ENVELOPE_MAGIC:
        raise HEError(f"{what} is not a ciphercare ciphertext (bad magic)")
    tag = envelope[len(ENVELOPE_MAGIC):len(ENVELOPE_MAGIC) + CONTEXT_ID_BYTES].hex()
    if tag != expected_context:
        raise HEError(f"{what} was encrypted under context {tag[:16]}…, not {expected_context[:16]}…")
    return envelope[len(ENVELOPE_MAGIC) + CONTEXT_ID_BYTES:]
