"""Server-side CKKS evaluation (:class:`Evaluator`): a client's *public* context, validated ciphertexts,
the model's Form with slot ownership and input validity, flooding and re-randomisation.

Only the first ``owned`` slots (a batch's declared, consented, logged patients) carry a result; every
other slot decrypts to fresh uniform noise. A slot whose bits are not a valid pattern (non-binary, or
not monotone along a feature's edges) decrypts to noise. See docs/SCORING.md for the budget and the
measurements. Never imports the client role (:mod:`ciphercare.analytics.client`).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from typing import Any

import numpy as np

from ciphercare.analytics.he.ckks import (
    CKKS_PARAMETERS,
    ENVELOPE_MAGIC,
    MAX_CIPHERTEXT_BYTES,
    CkksParameters,
    HEError,
    check_seal_header,
    context_id,
    open_envelope,
    seal_load,
    seal_save,
    vet_public_context,
)
from ciphercare.analytics.model.forms import Form, evaluate

#: Scale of the per-call validity weights r (the per-slot rho takes the rest of the budget: 2^37).
VALIDITY_R_SCALE_LOG2 = 30
#: Masked model constants kept per evaluator (each 196 KB; the default model has ~400).
MASKED_CONSTANT_CACHE = 1024
#: Amplitude of the uniform noise in slots no declared, consented, logged patient owns (2^6 = 64).
UNOWNED_NOISE_LOG2 = 6


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
