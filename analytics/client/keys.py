"""The hospital's CKKS keys (:class:`KeyOwner`): generate or load, publish the public context, encrypt, decrypt.

The secret key never leaves this module towards the server: the public context is serialised without
it (and without Galois keys), and is kept beside the key file so that the same key gives the same
context id on every run. Never imports the server role (:mod:`ciphercare.analytics.server`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ciphercare.analytics.he.ckks import (
    CKKS_PARAMETERS,
    ENVELOPE_MAGIC,
    CkksParameters,
    HEError,
    check_security,
    context_id,
    open_envelope,
    seal_load,
    seal_save,
    vet_public_context,
)


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
