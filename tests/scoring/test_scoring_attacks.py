"""A malicious hospital against encrypted scoring, on real TenSEAL encryption (issue 12).

The hospital holds its secret key, so it crafts the plaintexts of its bit ciphertexts at will. Each
attack is run against the old evaluation (every slot evaluated, no validity term) where that shows the
attack is real, and against the service as it is now.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from testkit.scoring import default_training, grant, key_owner

from ciphercare.analytics.client.keys import KeyOwner
from ciphercare.analytics.extraction import (
    BlackBoxAttack,
    compare,
    crafted_pattern_attack,
    crafted_patterns,
    levels_to_bits,
    monomials,
    pattern_matrix,
    random_levels,
)
from ciphercare.analytics.he.ckks import proto_fields
from ciphercare.analytics.model.forms import model_form
from ciphercare.analytics.server.evaluator import Evaluator
from ciphercare.sdk.scoring import ScoringClient
from ciphercare.v1 import scoring_pb2

QUOTA = 24


@functools.cache
def _evaluator() -> Evaluator:
    return Evaluator(key_owner().public_context)


def _encrypt(keys: KeyOwner, bits: np.ndarray) -> list[bytes]:
    return keys.encrypt_bits(bits)[0]


def _old_pipeline(bits: np.ndarray) -> np.ndarray:
    """What the service computed before issue 12: every slot evaluated, no validity term, no mask."""
    keys, ev = key_owner(), _evaluator()
    form = model_form(default_training().package)
    cts = [ev.load_ciphertext(e) for e in _encrypt(keys, bits)]
    return keys.decrypt(ev.finish_partials([ev.evaluate_partial(form, cts, groups=None)]), bits.shape[0])


def _new_pipeline(bits: np.ndarray, owned: int) -> np.ndarray:
    keys, ev = key_owner(), _evaluator()
    package = default_training().package
    cts = [ev.load_ciphertext(e) for e in _encrypt(keys, bits)]
    return keys.decrypt(ev.evaluate(model_form(package), cts, groups=package.grid.groups(), owned=owned),
                        bits.shape[0])


# --- engine level: crafted patterns, before and after ------------------------------------------------


def test_crafted_pattern_attack_recovered_the_model_before_and_recovers_nothing_now() -> None:
    package = default_training().package
    truth = monomials(model_form(package))
    n = package.grid.n_edges
    patterns = crafted_patterns(n, 2)  # 1 + 59 + 1711 slots: the constant, every edge, every pair
    bits = pattern_matrix(patterns, n)

    before = compare(crafted_pattern_attack(_old_pipeline(bits), patterns), truth)
    assert before.true_terms > 50 and before.fraction == 1.0 and before.false_positives == 0

    # One consented patient declared: slot 0 is owned (its all-zero pattern is a valid patient).
    after = compare(crafted_pattern_attack(_new_pipeline(bits, owned=1), patterns), truth)
    assert after.recovered == 0


def test_crafted_patterns_in_owned_slots_decrypt_to_noise() -> None:
    """Even in slots the attacker legitimately owns, invalid patterns (scaled by 4, or not monotone) are noise."""
    package = default_training().package
    truth = monomials(model_form(package))
    n = package.grid.n_edges
    patterns = crafted_patterns(n, 1)
    scaled = pattern_matrix(patterns, n, amplitude=4.0)
    scaled[0, :] = 0.0
    before = compare(crafted_pattern_attack(_old_pipeline(scaled), patterns, 4.0), truth)
    assert before.fraction == 1.0
    after = compare(crafted_pattern_attack(_new_pipeline(scaled, owned=len(patterns)), patterns, 4.0), truth)
    assert after.recovered == 0

    # Non-binary, non-monotone and complex-looking-but-real bits: all noise, far from the model's margin.
    rng = np.random.default_rng(3)
    valid = levels_to_bits(package.grid, random_levels(package.grid, 30, seed=4))
    invalid = valid.copy()
    invalid[:10, 5] += 0.01                        # slightly off 0/1
    offsets = package.grid.offsets()
    invalid[10:20, offsets[0] + 1] = 1.0           # age: edge 2 set ...
    invalid[10:20, offsets[0]] = 0.0               # ... but edge 1 not (not monotone)
    invalid[20:30] = rng.integers(0, 2, (10, n))   # random 0/1 patterns: mostly not monotone
    monotone = np.all([np.all(np.diff(invalid[:, s:s + c], axis=1) <= 0, axis=1)
                       for s, c in package.grid.groups()], axis=0)
    decrypted = _new_pipeline(invalid, owned=30)
    true = package.margin_from_bits(invalid)
    bad = ~monotone
    bad[:10] = True
    assert bad.sum() >= 25
    assert np.min(np.abs(decrypted[bad] - true[bad])) > 1e-2  # nothing close to the model's value
    assert np.max(np.abs(decrypted[~bad] - true[~bad]), initial=0.0) <= 1e-3  # valid ones are scored


# --- the service ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A server with a small quota and context limit (SQLite store; the store is not what is tested)."""
    from testkit.server import Env, ServerThread, make_settings

    from ciphercare.services.identity.devissuer import DevIssuer

    data_dir = tmp_path_factory.mktemp("scoring-attacks")
    default_training().package.save(data_dir / "scoring" / "model.json")
    # hospital-q and hospital-c are registered too: a consent names only organisations ciphercare knows.
    from ciphercare.services.platform.settings import Settings

    organizations = {**Settings().organizations, "hospital-q": "Hospital Q", "hospital-c": "Hospital C"}
    settings = make_settings(data_dir, scoring_quota_patients=QUOTA, scoring_quota_window_s=3600,
                             scoring_max_contexts_per_org=2, scoring_context_idle_s=600, organizations=organizations)
    server = ServerThread(settings).start()
    try:
        yield Env(server=server, issuer=DevIssuer.from_settings(settings))
    finally:
        server.stop()


def _client(env, org: str) -> ScoringClient:  # type: ignore[no-untyped-def]
    return ScoringClient.connect(env.server.target, env.token("hospital", org=org, subject=f"svc-{org}"),
                                 deadline_s=120)


def _raw_score(client: ScoringClient, keys: KeyOwner, pids: list[str], bits: np.ndarray,
               purpose: str = "TREAT") -> tuple[list[scoring_pb2.ScoreResponse], bytes]:
    """Declare ``pids``, then send ``bits`` (any number of slots, crafted at will) as the batch's ciphertexts."""
    import queue

    client.ensure_registered(keys)
    header = scoring_pb2.ScoreHeader(context_id=keys.context_id, model_sha256=default_training().package.sha256,
                                     purpose_of_use=purpose, data_class="Observation", pids=pids)
    outbox: queue.Queue[scoring_pb2.ScoreRequest | None] = queue.Queue()
    outbox.put(scoring_pb2.ScoreRequest(header=header))

    def requests() -> Iterator[scoring_pb2.ScoreRequest]:
        while (item := outbox.get()) is not None:
            yield item

    responses, ciphertext = [], b""
    for response in client.stub.Score(requests(), metadata=client.metadata, timeout=120):
        responses.append(response)
        kind = response.WhichOneof("payload")
        if kind == "decisions" and response.decisions.final:
            if response.decisions.permitted_count:
                for j, envelope in enumerate(_encrypt(keys, bits)):
                    outbox.put(scoring_pb2.ScoreRequest(bits=scoring_pb2.BitCiphertext(
                        batch_index=0, edge_index=j, ciphertext=envelope)))
            outbox.put(None)
        elif kind == "score":
            ciphertext = response.score.ciphertext
    return responses, ciphertext


def test_spare_slot_attack_returns_nothing_usable(guarded) -> None:  # type: ignore[no-untyped-def]
    """One consented patient declared, 118 unconsented patients' bits in the spare slots."""
    package, keys = default_training().package, key_owner()
    grant(guarded, "pt-spare-0")
    x = default_training().train.x[:119]
    bits = package.grid.bits(x)
    true = package.margin_from_bits(bits)

    with _ctx(_client(guarded, "hospital-a")) as client:
        responses, ciphertext = _raw_score(client, keys, ["pt-spare-0"], bits)
    assert ciphertext, [r.WhichOneof("payload") for r in responses]
    decrypted = keys.decrypt(ciphertext, 119)
    assert abs(decrypted[0] - true[0]) <= 1e-3  # the declared, consented, logged patient is scored
    spare, truth = decrypted[1:], true[1:]
    # Before: all 118 were scored within 4e-5. Now: no better than guessing.
    assert np.min(np.abs(spare - truth)) > 1e-3 or np.sum(np.abs(spare - truth) <= 1e-3) <= 1
    assert np.mean(np.abs(spare - truth)) > 10.0
    assert abs(np.corrcoef(spare, truth)[0, 1]) < 0.35
    assert np.mean((spare > 0) == (truth > 0)) < 0.75
    old = _old_pipeline(bits)
    assert np.max(np.abs(old[1:] - truth)) <= 1e-3  # the same ciphertexts, evaluated the old way, leak all 118


class _ctx:
    """``with`` for a ScoringClient (closes its channel)."""

    def __init__(self, client: ScoringClient) -> None:
        self.client = client

    def __enter__(self) -> ScoringClient:
        return self.client

    def __exit__(self, *exc: object) -> None:
        self.client.close()


def test_crafted_pattern_attack_through_the_service_recovers_nothing(guarded) -> None:  # type: ignore[no-untyped-def]
    package, keys = default_training().package, key_owner()
    grant(guarded, "pt-crafted-0")
    n = package.grid.n_edges
    patterns = crafted_patterns(n, 2)
    with _ctx(_client(guarded, "hospital-a")) as client:
        _, ciphertext = _raw_score(client, keys, ["pt-crafted-0"], pattern_matrix(patterns, n))
    recovered = crafted_pattern_attack(keys.decrypt(ciphertext, len(patterns)), patterns)
    result = compare(recovered, monomials(model_form(package)))
    assert result.true_terms > 50 and result.recovered == 0


def test_well_formed_extraction_stops_at_the_quota(guarded) -> None:  # type: ignore[no-untyped-def]
    """The black-box attack with valid patients only: every query is a logged scoring, and the quota ends it."""
    package, keys = default_training().package, key_owner("hospital-q")
    pids = [f"pt-quota-{i}" for i in range(8)]
    for pid in pids:
        grant(guarded, pid, org="hospital-q")
    client = _client(guarded, "hospital-q")
    answered: list[int] = []

    def oracle(levels: np.ndarray) -> np.ndarray:
        out = np.empty(levels.shape[0])
        for start in range(0, levels.shape[0], len(pids)):
            chunk = levels[start:start + len(pids)]
            bits = levels_to_bits(package.grid, chunk)
            _, ciphertext = _raw_score(client, keys, pids[:len(chunk)], bits)
            out[start:start + len(chunk)] = keys.decrypt(ciphertext, len(chunk))
            answered.append(len(chunk))
        return out

    attack = BlackBoxAttack(package.grid, oracle)
    try:
        with pytest.raises(grpc.RpcError) as caught:
            attack.run()
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        message = caught.value.details() or ""
        assert "scoring quota exhausted for organisation 'hospital-q', purpose TREAT" in message
        used = sum(answered)  # every answered query was a consented, logged scoring
        assert f": {used} of {QUOTA} patients used in the last 1 h, this call needs 8 more" in message
        assert QUOTA - len(pids) < used <= QUOTA
        # Refused before anything was recorded: the counters show the refusal, no more patients.
        row = next(r for r in _usage(guarded).snapshot() if r["org"] == "hospital-q")
        assert row["patients_in_window"] == used and row["refused_total"] >= 1
        metrics = guarded.app.metrics
        assert metrics.scoring_quota_refusals.labels("hospital-q")._value.get() >= 1
        assert metrics.scoring_patients.labels("hospital-q", "scored")._value.get() == used
        # What the attacker has after the quota: not even the main effects of every feature.
        assert attack.queries < sum(len(e) for e in package.grid.edges) + 1
    finally:
        client.close()
    # The same attack without a quota needs this many logged scorings for an exact copy (plaintext oracle).
    full = BlackBoxAttack(package.grid, lambda lv: package.margin_from_bits(levels_to_bits(package.grid, lv)),
                          ).run()
    grid_points = random_levels(package.grid, 2000)
    copy = full.predict(grid_points)
    real = package.margin_from_bits(levels_to_bits(package.grid, grid_points))
    assert full.queries > 10_000
    assert np.mean((copy > 0) == (real > 0)) >= 0.99


def _usage(env):  # type: ignore[no-untyped-def]
    """The running server's ScoringServicer usage counters."""
    return env.app.scoring.usage


def test_smuggled_secret_key_sub_field_is_refused_and_nothing_is_stored(guarded) -> None:  # type: ignore[no-untyped-def]
    keys = KeyOwner.generate()
    public = keys.public_context
    top = proto_fields(public)
    section = top[2][0]
    secret = proto_fields(keys._ctx.serialize(save_secret_key=True, save_galois_keys=False))[3][0]
    assert isinstance(section, bytes) and isinstance(secret, bytes)
    smuggled_section = section + b"\x32" + _varint(len(secret)) + secret  # field 6, length-delimited
    params = top[1][0]
    assert isinstance(params, bytes)
    forged = b"\x0a" + _varint(len(params)) + params + b"\x12" + _varint(len(smuggled_section)) + smuggled_section
    folder = guarded.settings.data_dir / "scoring" / "contexts" / "hospital-s"
    with _ctx(_client(guarded, "hospital-s")) as client:
        with pytest.raises(grpc.RpcError) as caught:
            client.register(forged)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "public key section has unexpected fields [6]" in (caught.value.details() or "")
    assert not folder.exists() or not list(folder.iterdir())


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def test_context_churn_is_bounded(guarded, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The same key file gives the same context every run; the server keeps at most N per organisation."""
    key_file = tmp_path / "keys" / "hospital-c.tenseal"
    grant(guarded, "pt-churn-0", org="hospital-c")
    x = default_training().test.x[:1]
    uploads = 0
    ids = set()
    for _ in range(3):  # three separate `ciphercare score` runs: a new process, the same key file each time
        keys = KeyOwner.load_or_generate(key_file)
        ids.add(keys.context_id)
        with _ctx(_client(guarded, "hospital-c")) as client:
            run = client.score(keys, ["pt-churn-0"], x)
            uploads += client.registrations
        assert run.results[0].status == "scored"
    assert len(ids) == 1 and uploads == 1
    folder = guarded.settings.data_dir / "scoring" / "contexts" / "hospital-c"
    assert len(list(folder.glob("*.ctx"))) == 1

    # A client that makes a new key pair every run hits the per-organisation bound.
    with _ctx(_client(guarded, "hospital-c")) as client:
        client.register(KeyOwner.generate().public_context)
        with pytest.raises(grpc.RpcError) as caught:
            client.register(KeyOwner.generate().public_context)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "already has 2 registered contexts (the limit is 2)" in (caught.value.details() or "")
        assert len(list(folder.glob("*.ctx"))) == 2
        # Contexts unused for longer than scoring_context_idle_s are removed to make room.
        old = time.time() - 3600
        for stored in folder.glob("*.ctx"):
            if stored.stem != keys.context_id:
                os.utime(stored, (old, old))
        fresh = KeyOwner.generate()
        assert client.register(fresh.public_context).context_id == fresh.context_id
    assert {p.stem for p in folder.glob("*.ctx")} == {keys.context_id, fresh.context_id}
