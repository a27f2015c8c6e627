"""Bad HE input is refused with a precise HEError, never a crash; the deserialisation path is fuzzed."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import tenseal as ts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from testkit.scoring import key_owner

from ciphercare.analytics.client.keys import KeyOwner
from ciphercare.analytics.he.ckks import (
    ENVELOPE_MAGIC,
    HEError,
    proto_fields,
    seal_save,
    vet_public_context,
)
from ciphercare.analytics.server.evaluator import Evaluator


@functools.cache
def evaluator() -> Evaluator:
    return Evaluator(key_owner().public_context)


@functools.cache
def good_ciphertext() -> bytes:
    return key_owner().encrypt_column(np.array([0.0, 1.0, 1.0]))


def _ts_context(n: int, bits: list[int]) -> ts.Context:
    return ts.context(ts.SCHEME_TYPE.CKKS, n, coeff_mod_bit_sizes=bits)


def test_refuses_a_context_with_a_secret_key() -> None:
    private = key_owner()._ctx.serialize(save_secret_key=True, save_galois_keys=False)
    with pytest.raises(HEError, match="secret key"):
        Evaluator(private)


def test_refuses_wrong_parameters() -> None:
    ctx = _ts_context(8192, [60, 40, 40, 60])
    with pytest.raises(HEError, match=r"wrong parameters: N=8192, coefficient modulus bits \[60, 40, 40, 60\]"):
        Evaluator(ctx.serialize(save_secret_key=False, save_galois_keys=False))
    small = _ts_context(4096, [40, 20, 40])
    with pytest.raises(HEError, match="wrong parameters: N=4096"):
        Evaluator(small.serialize(save_secret_key=False, save_galois_keys=False))


def test_refuses_parameters_below_128_bit_security() -> None:
    """A hand-built context whose modulus (240 bits at N=8192) exceeds the HE Standard's 218."""
    from tenseal import sealapi

    parms = sealapi.EncryptionParameters(sealapi.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(8192)
    parms.set_coeff_modulus(sealapi.CoeffModulus.Create(8192, [60, 60, 60, 60]))
    raw = seal_save(parms)
    public = proto_fields(key_owner().public_context)[2][0]
    assert isinstance(public, bytes)
    forged = b"\x0a" + _varint(len(raw)) + raw + b"\x12" + _varint(len(public)) + public
    with pytest.raises(HEError, match="240 bits at N=8192 is below 128-bit security"):
        Evaluator(forged)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def test_refuses_galois_keys_and_truncated_contexts() -> None:
    public = key_owner().public_context
    top = proto_fields(public)
    inner = top[2][0]
    assert isinstance(inner, bytes)
    with_galois = inner + b"\x2a\x03abc"
    forged = b"\x0a" + _varint(len(top[1][0])) + top[1][0] + b"\x12" + _varint(len(with_galois)) + with_galois  # type: ignore[arg-type]
    with pytest.raises(HEError, match="Galois keys"):
        vet_public_context(forged)
    with pytest.raises(HEError, match="truncated"):
        Evaluator(public[: len(public) // 2])
    with pytest.raises(HEError, match="empty"):
        Evaluator(b"")


def test_refuses_bad_ciphertexts() -> None:
    ev = evaluator()
    good = good_ciphertext()
    assert ev.load_ciphertext(good).size() == 2
    with pytest.raises(HEError, match="truncated or padded"):
        ev.load_ciphertext(good[:-100])
    with pytest.raises(HEError, match="bad magic"):
        ev.load_ciphertext(b"XXXX" + good[4:])
    with pytest.raises(HEError, match="no envelope"):
        ev.load_ciphertext(b"CCT1")
    corrupted = bytearray(good)
    corrupted[60:80] = b"\xff" * 20
    with pytest.raises(HEError):
        ev.load_ciphertext(bytes(corrupted))


def test_refuses_a_ciphertext_from_another_context() -> None:
    other = KeyOwner.generate()
    foreign = other.encrypt_column(np.ones(4))
    with pytest.raises(HEError, match="was encrypted under context"):
        evaluator().load_ciphertext(foreign)
    # Re-labelled with this context's id: same parameters, so SEAL accepts it; but a context with other
    # parameters does not load at all.
    small = _ts_context(4096, [40, 20, 40])
    from tenseal import sealapi

    enc = sealapi.Encryptor(small.seal_context().data, small.secret_key().data)
    plain = sealapi.Plaintext()
    sealapi.CKKSEncoder(small.seal_context().data).encode([1.0], 2.0**20, plain)
    raw = seal_save(enc.encrypt_symmetric(plain))
    relabelled = ENVELOPE_MAGIC + bytes.fromhex(key_owner().context_id) + raw
    with pytest.raises(HEError, match="not a valid ciphertext for this context"):
        evaluator().load_ciphertext(relabelled)


def test_refuses_a_ciphertext_at_the_wrong_scale() -> None:
    keys = key_owner()
    from tenseal import sealapi

    plain = sealapi.Plaintext()
    keys._encoder.encode([1.0, 0.0], keys._parms_id, 2.0**30, plain)
    envelope = ENVELOPE_MAGIC + bytes.fromhex(keys.context_id) + seal_save(keys._encryptor.encrypt_symmetric(plain))
    with pytest.raises(HEError, match="scale 2\\^30.00; bits must be encrypted at 2\\^40"):
        evaluator().load_ciphertext(envelope)


FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=512))
def test_fuzz_context_bytes(data: bytes) -> None:
    try:
        vet_public_context(data)
    except HEError:
        pass


@FUZZ
@given(st.data())
def test_fuzz_mutated_context(data: st.DataObject) -> None:
    public = key_owner().public_context
    cut = data.draw(st.integers(0, 4096))
    flips = data.draw(st.lists(st.tuples(st.integers(0, 4095), st.integers(1, 255)), max_size=8))
    head = bytearray(public[:4096])
    for pos, xor in flips:
        head[pos] ^= xor
    candidate = bytes(head[:cut]) if data.draw(st.booleans()) else bytes(head) + public[4096:]
    try:
        Evaluator(candidate)
    except HEError:
        pass


@FUZZ
@given(st.data())
def test_fuzz_ciphertext_bytes(data: st.DataObject) -> None:
    good = good_ciphertext()
    kind = data.draw(st.sampled_from(["truncate", "flip", "random", "header"]))
    if kind == "truncate":
        candidate = good[: data.draw(st.integers(0, len(good) - 1))]
    elif kind == "flip":
        blob = bytearray(good)
        for pos, xor in data.draw(st.lists(st.tuples(st.integers(0, len(good) - 1), st.integers(1, 255)),
                                           min_size=1, max_size=16)):
            blob[pos] ^= xor
        candidate = bytes(blob)
    elif kind == "header":
        blob = bytearray(good)
        start = 36
        for pos, xor in data.draw(st.lists(st.tuples(st.integers(start, start + 40), st.integers(1, 255)),
                                           min_size=1, max_size=6)):
            blob[pos] ^= xor
        candidate = bytes(blob)
    else:
        candidate = good[:36] + data.draw(st.binary(max_size=256))
    try:
        ct = evaluator().load_ciphertext(candidate)
    except HEError:
        return
    assert ct.size() == 2  # a mutation SEAL cannot detect (coefficients still in range) loads as some ciphertext
