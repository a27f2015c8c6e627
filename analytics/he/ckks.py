"""CKKS engine for model-private tree scoring, split by role (TenSEAL 0.3 / Microsoft SEAL 4).

* :class:`KeyOwner` (hospital side): generates and keeps the key pair, produces the *public* context
  (parameters, public key, relinearisation keys; never the secret key, never Galois keys), encrypts
  the comparison bits and decrypts scores.
* :class:`Evaluator` (server side): accepts only a public context, validates its parameters and every
  ciphertext, and evaluates the model's :class:`~ciphercare.analytics.model.forms.Form` on them.

Parameters (:data:`CKKS_PARAMETERS`): ring dimension N = 8192 with a 218-bit coefficient modulus
(data primes 53 + 52 + 53 bits, special prime 60 bits). The Homomorphic Encryption Security Standard
(Albrecht et al., homomorphicencryption.org, 2018), Table 1, allows log2 q <= 218 at N = 8192 for
128-bit classical security; SEAL enforces the same bound (``CoeffModulus.MaxBitCount(8192, tc128)``),
and :func:`check_security` checks both.

Evaluation never rotates (no Galois keys) and never rescales: bits are encrypted at scale 2^40, every
product multiplies scales exactly, plaintext constants are encoded at whatever scale makes each sum
exact, and the result lands at scale 2^147 in the 158-bit data modulus (room for |margin| < 2^8).
Relinearisation happens once per group of trees sharing a root edge plus once at the end. Before a
result leaves, the evaluator floods it with Gaussian noise (standard deviation 2^-16 per slot, real
and imaginary) and re-randomises it with a fresh public-key encryption of zero, so the ciphertext a
client decrypts does not expose the evaluation's structure (see docs/SCORING.md for what this does
and does not guarantee).

Ciphertexts travel in an envelope ``b"CCT1" + context id (32 bytes) + SEAL bytes``; the bits are
encrypted with the secret key (seeded symmetric encryption), which halves their size.
"""

from __future__ import annotations

import hashlib
import math
import os
import secrets
import struct
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ciphercare.analytics.model.forms import Form, evaluate

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
_PUB_KEY, _PUB_RELIN, _PUB_GALOIS = 1, 4, 5


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
    for number, what in ((_PUB_KEY, "public key"), (_PUB_RELIN, "set of relinearisation keys")):
        check_seal_header(_single_bytes(public, number, what), what, MAX_CONTEXT_BYTES)


def context_id(public_context: bytes) -> str:
    """The id of a public context: SHA-256 of its bytes (hex)."""
    return hashlib.sha256(public_context).hexdigest()


# --- hospital side ---------------------------------------------------------------------------------


class KeyOwner:
    """The hospital's CKKS keys: generate or load, publish the public context, encrypt, decrypt."""

    def __init__(self, ts_context: Any, params: CkksParameters = CKKS_PARAMETERS) -> None:
        from tenseal import sealapi

        if not ts_context.is_private():
            raise HEError("a key owner needs a context with its secret key")
        self.params = params
        self._ctx = ts_context
        self._seal = ts_context.seal_context().data
        self._encoder = sealapi.CKKSEncoder(self._seal)
        secret = ts_context.secret_key().data
        self._encryptor = sealapi.Encryptor(self._seal, secret)
        self._decryptor = sealapi.Decryptor(self._seal, secret)
        self._parms_id = self._seal.first_parms_id()
        self.public_context = ts_context.serialize(save_public_key=True, save_secret_key=False,
                                                   save_galois_keys=False, save_relin_keys=True)
        self.context_id = context_id(self.public_context)
        self._tag = bytes.fromhex(self.context_id)

    @classmethod
    def generate(cls, params: CkksParameters = CKKS_PARAMETERS) -> KeyOwner:
        import tenseal as ts

        check_security(params.poly_modulus_degree, params.coeff_mod_bit_sizes)
        ctx = ts.context(ts.SCHEME_TYPE.CKKS, params.poly_modulus_degree,
                         coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes))
        return cls(ctx, params)

    @classmethod
    def load(cls, path: Path, params: CkksParameters = CKKS_PARAMETERS) -> KeyOwner:
        import tenseal as ts

        try:
            ctx = ts.context_from(Path(path).read_bytes())
        except (ValueError, RuntimeError, TypeError) as exc:
            raise HEError(f"{path} is not a TenSEAL context: {exc}") from None
        return cls(ctx, params)

    @classmethod
    def load_or_generate(cls, path: Path, params: CkksParameters = CKKS_PARAMETERS) -> KeyOwner:
        """Keys from ``path`` (mode 0600) or a new key pair saved there."""
        path = Path(path)
        if path.exists():
            return cls.load(path, params)
        owner = cls.generate(params)
        owner.save(path)
        return owner

    def save(self, path: Path) -> None:
        """Write the private context (with the secret key) readable by the owner only."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self._ctx.serialize(save_public_key=True, save_secret_key=True, save_galois_keys=False,
                                   save_relin_keys=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)

    def encrypt_column(self, values: np.ndarray) -> bytes:
        """One vector (at most ``slots`` values) encrypted at the bit scale, in an envelope."""
        from tenseal import sealapi

        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 1 or values.size > self.params.slots:
            raise HEError(f"a ciphertext holds at most {self.params.slots} values")
        plain = sealapi.Plaintext()
        self._encoder.encode(values.tolist(), self._parms_id, self.params.bit_scale, plain)
        return ENVELOPE_MAGIC + self._tag + seal_save(self._encryptor.encrypt_symmetric(plain))

    def encrypt_bits(self, bits: np.ndarray) -> list[list[bytes]]:
        """Bits (patients x edges) packed one patient per slot: ``[batch][edge] -> envelope``."""
        bits = np.asarray(bits, dtype=np.float64)
        if bits.ndim != 2:
            raise HEError("bits must be a (patients x edges) matrix")
        slots = self.params.slots
        return [[self.encrypt_column(bits[start:start + slots, j]) for j in range(bits.shape[1])]
                for start in range(0, bits.shape[0], slots)]

    def decrypt(self, envelope: bytes, count: int) -> np.ndarray:
        """The first ``count`` slot values (real parts) of a result ciphertext."""
        from tenseal import sealapi

        data = open_envelope(envelope, self.context_id, "result ciphertext")
        ct = seal_load(sealapi.Ciphertext(), self._seal, data)
        plain = sealapi.Plaintext()
        self._decryptor.decrypt(ct, plain)
        values = np.asarray(self._encoder.decode_double(plain), dtype=np.float64)
        if not 0 <= count <= values.size:
            raise HEError(f"a result holds at most {values.size} values")
        return values[:count]


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


# --- server side ---------------------------------------------------------------------------------


class CkksBackend:
    """Form arithmetic on SEAL ciphertexts with exact scale bookkeeping (no rescaling)."""

    def __init__(self, evaluator: Evaluator, bits: Sequence[Any]) -> None:
        self.ev = evaluator
        self.bit_scale = evaluator.params.bit_scale
        self._bits = bits
        self.stats = {"products": 0, "scalar_products": 0, "relinearisations": 0}

    def _constant(self, value: float, scale: float) -> Any:
        from tenseal import sealapi

        plain = sealapi.Plaintext()
        self.ev.encoder.encode(float(value), self.ev.parms_id, scale, plain)
        return plain

    def bit(self, edge: int) -> Any:
        return self._bits[edge]

    def scaled_bit(self, edge: int, coefficient: float, scale: float) -> Any:
        from tenseal import sealapi

        out = sealapi.Ciphertext()
        self.ev.evaluator.multiply_plain(self._bits[edge], self._constant(coefficient, scale), out)
        self.stats["scalar_products"] += 1
        return out

    def add(self, a: Any, b: Any) -> Any:
        if a is None:
            return b
        if a.size() >= b.size():
            self.ev.evaluator.add_inplace(a, b)
            return a
        self.ev.evaluator.add_inplace(b, a)
        return b

    def add_constant(self, a: Any, value: float, scale: float) -> Any:
        if a is None:
            raise HEError("a constant model has nothing to evaluate")
        if value:
            self.ev.evaluator.add_plain_inplace(a, self._constant(value, scale))
        return a

    def multiply(self, a: Any, b: Any) -> Any:
        from tenseal import sealapi

        out = sealapi.Ciphertext()
        self.ev.evaluator.multiply(a, b, out)
        self.stats["products"] += 1
        return out

    def relinearise(self, a: Any) -> Any:
        if a.size() > 2:
            self.ev.evaluator.relinearize_inplace(a, self.ev.relin_keys)
            self.stats["relinearisations"] += 1
        return a


class Evaluator:
    """Server-side CKKS evaluation under a client's *public* context (refuses a secret key)."""

    def __init__(self, public_context: bytes, params: CkksParameters = CKKS_PARAMETERS) -> None:
        import tenseal as ts
        from tenseal import sealapi

        vet_public_context(public_context, params)
        try:
            ctx = ts.context_from(public_context)
        except (ValueError, RuntimeError, TypeError) as exc:
            raise HEError(f"context does not load: {exc}") from None
        if ctx.is_private() or not ctx.is_public():
            raise HEError("context carries a secret key; send the public context only")
        if not ctx.has_relin_keys():
            raise HEError("context has no relinearisation keys")
        self.params = params
        self.context_id = context_id(public_context)
        self._tag = bytes.fromhex(self.context_id)
        self._ctx = ctx
        self.seal = ctx.seal_context().data
        self.parms_id = self.seal.first_parms_id()
        self.evaluator = sealapi.Evaluator(self.seal)
        self.encoder = sealapi.CKKSEncoder(self.seal)
        self.relin_keys = ctx.relin_keys().data
        self._encryptor = sealapi.Encryptor(self.seal, ctx.public_key().data)
        data = self.seal.first_context_data()
        self.data_modulus_log2 = sum(math.log2(m.value()) for m in data.parms().coeff_modulus())
        self._rng = np.random.default_rng(secrets.randbits(128))

    def max_margin(self) -> float:
        """Largest |margin| the result modulus holds with the flooding noise and a safety factor of 4."""
        room = self.data_modulus_log2 - 1 - self.params.result_scale_log2
        return 2.0**room / 4

    def load_ciphertext(self, envelope: bytes, what: str = "ciphertext") -> Any:
        """One validated bit ciphertext: right context, parameters, size, NTT form and scale; not transparent."""
        from tenseal import sealapi

        data = open_envelope(envelope, self.context_id, what)
        check_seal_header(data, what, MAX_CIPHERTEXT_BYTES)
        ct = sealapi.Ciphertext()
        try:
            seal_load(ct, self.seal, data)
        except (ValueError, RuntimeError, TypeError) as exc:
            raise HEError(f"{what} is not a valid ciphertext for this context: {exc}") from None
        if list(ct.parms_id()) != list(self.parms_id):
            raise HEError(f"{what} is not at the context's top level (wrong parameters or modulus-switched)")
        if ct.size() != 2:
            raise HEError(f"{what} has {ct.size()} polynomials; a fresh ciphertext has 2")
        if not ct.is_ntt_form():
            raise HEError(f"{what} is not in NTT form")
        if ct.scale != self.params.bit_scale:
            raise HEError(f"{what} has scale 2^{math.log2(ct.scale):.2f}; bits must be encrypted at "
                          f"2^{self.params.bit_scale_log2}")
        if ct.is_transparent():
            raise HEError(f"{what} is transparent (not encrypted)")
        return ct

    def evaluate(self, form: Form, bits: Sequence[Any], *, stats: dict[str, int] | None = None) -> bytes:
        """The model's margin for every slot, flooded and re-randomised, as an envelope."""
        return self.finish([self._evaluate(form, bits, stats)])

    def evaluate_partial(self, form: Form, bits: Sequence[Any]) -> bytes:
        """One part of a split Form, relinearised but NOT flooded: for :meth:`finish_partials` only.

        Never send this to a client: an unflooded, un-re-randomised result exposes the evaluation.
        """
        return seal_save(self._evaluate(form, bits, None))

    def finish_partials(self, partials: Sequence[bytes]) -> bytes:
        """Sum partial results (from :meth:`evaluate_partial`), then flood and re-randomise."""
        from tenseal import sealapi

        loaded = []
        for data in partials:
            ct = seal_load(sealapi.Ciphertext(), self.seal, data)
            if ct.scale != self.params.result_scale or ct.size() != 2:
                raise HEError("partial result has the wrong scale or size")
            loaded.append(ct)
        return self.finish(loaded)

    def _evaluate(self, form: Form, bits: Sequence[Any], stats: dict[str, int] | None) -> Any:
        backend = CkksBackend(self, bits)
        result = evaluate(form, backend, self.params.result_scale)
        backend.relinearise(result)
        if stats is not None:
            stats.update(backend.stats)
        return result

    def finish(self, results: Sequence[Any]) -> bytes:
        """Sum, flood with Gaussian noise, add a fresh encryption of zero; the envelope a client may see."""
        from tenseal import sealapi

        result = results[0]
        for other in results[1:]:
            self.evaluator.add_inplace(result, other)
        self._flood(result)
        zero = sealapi.Ciphertext()
        self._encryptor.encrypt_zero(self.parms_id, zero)
        zero.scale = result.scale
        self.evaluator.add_inplace(result, zero)
        return ENVELOPE_MAGIC + self._tag + seal_save(result)

    def _flood(self, result: Any) -> None:
        from tenseal import sealapi

        sigma = 2.0**self.params.flood_log2
        slots = self.params.slots
        noise = self._rng.normal(0.0, sigma, slots) + 1j * self._rng.normal(0.0, sigma, slots)
        plain = sealapi.Plaintext()
        self.encoder.encode(noise.tolist(), self.parms_id, result.scale, plain)
        self.evaluator.add_plain_inplace(result, plain)
