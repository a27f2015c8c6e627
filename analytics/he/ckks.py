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
#: Scale of the per-call validity weights r (the per-slot rho takes the rest of the budget: 2^37).
VALIDITY_R_SCALE_LOG2 = 30
#: Masked model constants kept per evaluator (each 196 KB; the default model has ~400).
MASKED_CONSTANT_CACHE = 1024
#: Amplitude of the uniform noise in slots no declared, consented, logged patient owns (2^6 = 64).
UNOWNED_NOISE_LOG2 = 6


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


# --- hospital side ---------------------------------------------------------------------------------


class KeyOwner:
    """The hospital's CKKS keys: generate or load, publish the public context, encrypt, decrypt."""

    def __init__(self, ts_context: Any, params: CkksParameters = CKKS_PARAMETERS,
                 public_context: bytes | None = None, path: Path | None = None) -> None:
        from tenseal import sealapi

        if not ts_context.is_private():
            raise HEError("a key owner needs a context with its secret key")
        self.params = params
        self.path = path
        self._ctx = ts_context
        self._seal = ts_context.seal_context().data
        self._encoder = sealapi.CKKSEncoder(self._seal)
        secret = ts_context.secret_key().data
        self._encryptor = sealapi.Encryptor(self._seal, secret)
        self._decryptor = sealapi.Decryptor(self._seal, secret)
        self._parms_id = self._seal.first_parms_id()
        if public_context is None or not self._owns(public_context):
            # Serialising draws fresh randomness (seeded keys), so the bytes differ on every call: the key
            # file keeps the first serialisation beside it, and the context id stays the same per key pair.
            public_context = ts_context.serialize(save_public_key=True, save_secret_key=False,
                                                  save_galois_keys=False, save_relin_keys=True)
        self.public_context = public_context
        self.context_id = context_id(self.public_context)
        self._tag = bytes.fromhex(self.context_id)

    def _owns(self, public_context: bytes) -> bool:
        """Whether ``public_context`` is a valid public context whose public key belongs to this secret key."""
        import tenseal as ts
        from tenseal import sealapi

        try:
            vet_public_context(public_context, self.params)
            public = ts.context_from(public_context)
            if public.is_private():
                return False
            plain = sealapi.Plaintext()
            self._encoder.encode([1.0, -2.0], self._parms_id, self.params.bit_scale, plain)
            ct = sealapi.Ciphertext()
            sealapi.Encryptor(public.seal_context().data, public.public_key().data).encrypt(plain, ct)
            out = sealapi.Plaintext()
            self._decryptor.decrypt(ct, out)
            values = self._encoder.decode_double(out)
        except (HEError, ValueError, RuntimeError, TypeError):
            return False
        return abs(values[0] - 1.0) < 1e-6 and abs(values[1] + 2.0) < 1e-6

    @staticmethod
    def public_path(path: Path) -> Path:
        """Where the key file's public context is kept (same directory, mode 0600)."""
        return Path(path).with_name(Path(path).name + ".public")

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
        sidecar = cls.public_path(path)
        stored = sidecar.read_bytes() if sidecar.exists() else None
        owner = cls(ctx, params, public_context=stored, path=Path(path))
        if stored != owner.public_context:
            owner._write_public()
        return owner

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
        self.path = path
        self._write_public()

    def _write_public(self) -> None:
        if self.path is None:
            return
        sidecar = self.public_path(self.path)
        tmp = sidecar.with_name(sidecar.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(self.public_context)
        tmp.replace(sidecar)

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

    def __init__(self, evaluator: Evaluator, bits: Sequence[Any], mask: np.ndarray | None = None) -> None:
        self.ev = evaluator
        self.bit_scale = evaluator.params.bit_scale
        self._bits = bits
        self._mask = mask
        self.stats = {"products": 0, "scalar_products": 0, "relinearisations": 0}

    def _constant(self, value: float, scale: float) -> Any:
        """A model coefficient as a plaintext; with a slot mask, ``value`` in owned slots and exactly 0 elsewhere.

        Every monomial of the model's polynomial carries exactly one such coefficient, so masking them all
        multiplies the whole result by the 0/1 mask at no cost in scale or depth.
        """
        from tenseal import sealapi

        if self._mask is None:
            plain = sealapi.Plaintext()
            self.ev.encoder.encode(float(value), self.ev.parms_id, scale, plain)
            return plain
        owned = int(self._mask.sum())
        cache = self.ev._masked_constants
        if cache.get("owned") != owned:  # one owned count at a time (a whole model's constants: ~80 MB)
            cache.clear()
            cache["owned"] = owned
        key = (float(value), float(scale))
        plain = cache.get(key)
        if plain is None:
            plain = sealapi.Plaintext()
            self.ev.encoder.encode((self._mask * float(value)).tolist(), self.ev.parms_id, scale, plain)
            if len(cache) <= MASKED_CONSTANT_CACHE:
                cache[key] = plain
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
        #: Masked model constants for the last owned-slot count (a small call's mask is usually "1 patient").
        self._masked_constants: dict[Any, Any] = {}

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

    def evaluate(self, form: Form, bits: Sequence[Any], *, groups: Sequence[tuple[int, int]],
                 owned: int | None = None, output_sigma: float = 0.0,
                 stats: dict[str, int] | None = None) -> bytes:
        """The model's margin in the ``owned`` first slots, noise everywhere else, as an envelope.

        ``groups`` are the grid's features as ``(first global edge, edge count)``: a slot whose bits are
        not a valid pattern (non-binary, or not monotone along a feature's edges) decrypts to noise.
        ``owned`` (default: every slot) is the number of slots assigned to declared, consented, logged
        patients; every other slot decrypts to fresh uniform noise that does not depend on the model.
        """
        owned = self._owned(owned)
        return self.finish([self._evaluate(form, bits, stats, owned, groups)], owned=owned,
                           output_sigma=output_sigma)

    def evaluate_partial(self, form: Form, bits: Sequence[Any], *, groups: Sequence[tuple[int, int]] | None,
                         owned: int | None = None) -> bytes:
        """One part of a split Form, relinearised but NOT finished: for :meth:`finish_partials` only.

        Exactly one part must carry the validity ``groups`` (the others pass ``None``). Never send this
        to a client: an unfinished result exposes the evaluation.
        """
        return seal_save(self._evaluate(form, bits, None, self._owned(owned), groups))

    def finish_partials(self, partials: Sequence[bytes], *, owned: int | None = None,
                        output_sigma: float = 0.0) -> bytes:
        """Sum partial results (from :meth:`evaluate_partial`), then mask, flood and re-randomise."""
        from tenseal import sealapi

        loaded = []
        for data in partials:
            ct = seal_load(sealapi.Ciphertext(), self.seal, data)
            if ct.scale != self.params.result_scale or ct.size() != 2:
                raise HEError("partial result has the wrong scale or size")
            loaded.append(ct)
        return self.finish(loaded, owned=self._owned(owned), output_sigma=output_sigma)

    def _owned(self, owned: int | None) -> int:
        slots = self.params.slots
        if owned is None:
            return slots
        if not 1 <= owned <= slots:
            raise HEError(f"owned slot count must be in 1..{slots}, got {owned}")
        return int(owned)

    def _evaluate(self, form: Form, bits: Sequence[Any], stats: dict[str, int] | None, owned: int,
                  groups: Sequence[tuple[int, int]] | None) -> Any:
        mask = None
        if owned < self.params.slots:
            mask = np.zeros(self.params.slots)
            mask[:owned] = 1.0
        backend = CkksBackend(self, bits, mask)
        result = evaluate(form, backend, self.params.result_scale)
        if groups is not None:
            result = backend.add(result, self._validity(bits, groups, backend.stats))
        backend.relinearise(result)
        if stats is not None:
            stats.update(backend.stats)
        return result

    def _validity(self, bits: Sequence[Any], groups: Sequence[tuple[int, int]], stats: dict[str, int]) -> Any:
        """``rho (.) sum_k (1 - b_k)(r_k b_k + r'_k b_{k+1})``: zero on valid patterns, large noise otherwise.

        Expanded, this is ``rho_s (sum_k r_k b_k(1 - b_k) + sum_k r'_k b_{k+1}(1 - b_k))`` in slot ``s``:
        the first sum vanishes only on binary bits, the second only when a feature's bits never go
        0 -> 1 along its increasing edges. ``r``, ``r'`` are fresh per call (uniform +-[0.5, 1]), ``rho``
        fresh per slot and call (uniform +-[2^11, 2^12]). Scales: ``1 - b`` at 2^40, ``r b`` at
        2^(40+30), their product at 2^110, times ``rho`` at 2^37 = 2^147, the result scale; depth 2.
        One ciphertext product per edge, one relinearisation shared with the model's.
        """
        from tenseal import sealapi

        p = self.params
        r_scale = 2.0**VALIDITY_R_SCALE_LOG2
        rho_scale = p.result_scale / (p.bit_scale * p.bit_scale * r_scale)
        one = sealapi.Plaintext()
        self.encoder.encode(1.0, self.parms_id, p.bit_scale, one)
        acc: Any = None

        def weighted(ct: Any) -> Any:
            weight = float(self._rng.uniform(0.5, 1.0) * self._rng.choice((-1.0, 1.0)))
            plain = sealapi.Plaintext()
            self.encoder.encode(weight, self.parms_id, r_scale, plain)
            out = sealapi.Ciphertext()
            self.evaluator.multiply_plain(ct, plain, out)
            stats["scalar_products"] += 1
            return out

        for start, count in groups:
            for k in range(count):
                j = start + k
                combo = weighted(bits[j])
                if k + 1 < count:
                    self.evaluator.add_inplace(combo, weighted(bits[j + 1]))
                complement = sealapi.Ciphertext()
                self.evaluator.negate(bits[j], complement)
                self.evaluator.add_plain_inplace(complement, one)
                product = sealapi.Ciphertext()
                self.evaluator.multiply(complement, combo, product)
                stats["products"] += 1
                if acc is None:
                    acc = product
                else:
                    self.evaluator.add_inplace(acc, product)
        if acc is None:
            raise HEError("the grid has no edges")
        slots = p.slots
        rho = self._rng.uniform(2.0**11, 2.0**12, slots) * self._rng.choice((-1.0, 1.0), slots)
        plain = sealapi.Plaintext()
        self.encoder.encode(rho.tolist(), self.parms_id, rho_scale, plain)
        self.evaluator.multiply_plain_inplace(acc, plain)
        if acc.scale != p.result_scale:
            raise HEError("validity term landed at the wrong scale")
        return acc

    def finish(self, results: Sequence[Any], *, owned: int | None = None, output_sigma: float = 0.0) -> bytes:
        """Sum, mask the unowned slots with fresh noise, flood, add a fresh encryption of zero.

        The envelope a client may see. ``output_sigma`` (margin units, optional coarsening) adds that
        much Gaussian noise to every owned slot on top of the flooding noise.
        """
        from tenseal import sealapi

        owned = self._owned(owned)
        if not 0.0 <= output_sigma <= 4.0:
            raise HEError("output noise must be in 0..4 (margin units)")
        result = results[0]
        for other in results[1:]:
            self.evaluator.add_inplace(result, other)
        self._flood(result, owned, output_sigma)
        zero = sealapi.Ciphertext()
        self._encryptor.encrypt_zero(self.parms_id, zero)
        zero.scale = result.scale
        self.evaluator.add_inplace(result, zero)
        return ENVELOPE_MAGIC + self._tag + seal_save(result)

    def _flood(self, result: Any, owned: int, output_sigma: float) -> None:
        """Gaussian flooding in every slot (std 2^flood_log2, or ``output_sigma`` if larger, in owned slots)
        plus uniform noise of amplitude 2^UNOWNED_NOISE_LOG2 (real and imaginary) in every unowned slot."""
        from tenseal import sealapi

        slots = self.params.slots
        sigma = np.full(slots, 2.0**self.params.flood_log2)
        sigma[:owned] = max(sigma[0], output_sigma)
        noise = self._rng.normal(0.0, 1.0, slots) * sigma + 1j * self._rng.normal(0.0, 1.0, slots) * sigma
        if owned < slots:
            amplitude = 2.0**UNOWNED_NOISE_LOG2
            free = slots - owned
            noise[owned:] += (self._rng.uniform(-amplitude, amplitude, free)
                              + 1j * self._rng.uniform(-amplitude, amplitude, free))
        plain = sealapi.Plaintext()
        self.encoder.encode(noise.tolist(), self.parms_id, result.scale, plain)
        self.evaluator.add_plain_inplace(result, plain)
