"""The HE engine on real TenSEAL encryption: accuracy against XGBoost, the Form, the model package."""

from __future__ import annotations

import json

import numpy as np
import pytest
from testkit.scoring import default_training, key_owner

from ciphercare.analytics.engine import ScoringMode, score_batch
from ciphercare.analytics.he.ckks import CKKS_PARAMETERS, HEError, check_security
from ciphercare.analytics.model.forms import PlainBackend, evaluate, model_form
from ciphercare.analytics.model.package import ModelError, ModelPackage, TreeNode
from ciphercare.analytics.model.training import roc_auc, sigmoid
from ciphercare.analytics.server.evaluator import Evaluator


def test_encrypted_scores_match_xgboost_on_the_held_out_split() -> None:
    """Decrypted scores vs XGBoost's own margin: 100% decisions, |d margin| <= 1e-3, same AUC (3 decimals)."""
    result = default_training()
    test = result.test
    reference = result.xgboost_margin(test.x)
    keys = key_owner()
    encrypted = score_batch(result.package, test.x, mode="encrypted", keys=keys)
    plain = score_batch(result.package, test.x, mode="plain")

    assert np.max(np.abs(plain - reference)) <= 1e-5
    assert np.max(np.abs(encrypted - reference)) <= 1e-3
    assert np.array_equal(encrypted > 0, reference > 0)
    # The AUC counts ordered (death, survivor) pairs; the encrypted scores' noise (<= 1e-3) can swap only
    # pairs whose margins are within 2e-3 of each other, so the AUCs agree up to those pairs' share.
    pos, neg = reference[test.y == 1], reference[test.y == 0]
    close = int(np.sum(np.abs(pos[:, None] - neg[None, :]) <= 2e-3))
    slack = close / (pos.size * neg.size)
    assert abs(roc_auc(test.y, sigmoid(encrypted)) - roc_auc(test.y, sigmoid(reference))) <= slack + 1e-9


def test_mode_is_validated() -> None:
    with pytest.raises(ValueError, match="mode must be 'plain' or 'encrypted'"):
        ScoringMode.parse("fhe")
    with pytest.raises(ValueError, match="needs the hospital's keys"):
        score_batch(default_training().package, default_training().test.x[:2], mode="encrypted")


def _random_tree(rng: np.random.Generator, depth: int, n_edges: int) -> TreeNode:
    if depth == 0 or rng.random() < 0.2:
        return TreeNode(value=float(rng.normal(0, 0.3)))
    return TreeNode(edge=int(rng.integers(n_edges)), left=_random_tree(rng, depth - 1, n_edges),
                    right=_random_tree(rng, depth - 1, n_edges))


def test_form_equals_tree_walk_for_unbalanced_and_repeated_edges() -> None:
    package = default_training().package
    rng = np.random.default_rng(7)
    n = package.grid.n_edges
    trees = [_random_tree(rng, 3, n) for _ in range(60)]
    model = ModelPackage("random", "1", package.schema, package.grid, trees, 0.25)
    bits = (rng.random((300, n)) > 0.5).astype(float)
    form = model_form(model)
    assert form.degree <= 3
    assert np.max(np.abs(evaluate(form, PlainBackend(bits), 1.0) - model.margin_from_bits(bits))) < 1e-12


def test_form_merges_trees_by_root_edge() -> None:
    package = default_training().package
    roots = {t.edge for t in package.trees if not t.is_leaf}
    counts = model_form(package).counts()
    assert counts["relinearisations"] <= len(roots)


def test_package_round_trip_hash_and_tamper(tmp_path) -> None:  # type: ignore[no-untyped-def]
    package = default_training().package
    path = tmp_path / "model.json"
    sha = package.save(path)
    assert sha == package.sha256
    assert ModelPackage.load(path, expected_sha256=sha).sha256 == sha
    raw = json.loads(path.read_bytes())
    raw["trees"][0] = {"leaf": 1.0}
    path.write_bytes(json.dumps(raw, sort_keys=True, separators=(",", ":")).encode())
    with pytest.raises(ModelError, match="does not match the expected"):
        ModelPackage.load(path, expected_sha256=sha)


def test_public_info_reveals_no_tree_internals() -> None:
    package = default_training().package
    text = json.dumps(package.public_info())
    for key in ("trees", "leaf", "left", "right", "base_margin"):
        assert f'"{key}"' not in text
    leaves = {repr(v) for t in package.trees for v in t.leaves()}
    assert not any(leaf in text for leaf in leaves if len(leaf) > 6)


def test_parameters_are_128_bit_secure_per_the_he_standard() -> None:
    check_security(CKKS_PARAMETERS.poly_modulus_degree, CKKS_PARAMETERS.coeff_mod_bit_sizes)
    assert sum(CKKS_PARAMETERS.coeff_mod_bit_sizes) <= 218
    with pytest.raises(HEError, match="below 128-bit security"):
        check_security(8192, [60, 60, 60, 60])
    with pytest.raises(HEError, match="below 128-bit security"):
        check_security(4096, [60, 60])


def test_result_modulus_holds_the_model() -> None:
    evaluator = Evaluator(key_owner().public_context)
    assert default_training().package.margin_bound < evaluator.max_margin()


def test_split_evaluation_equals_the_whole_model() -> None:
    """A batch split over two workers (partials summed, then flooded once) gives the same scores."""
    from ciphercare.analytics.model.forms import split_form

    result = default_training()
    package, x = result.package, result.test.x[:40]
    form = model_form(package)
    bits = package.grid.bits(x)
    parts = split_form(form, 2)
    assert all(not p.is_constant for p in parts)
    whole = evaluate(form, PlainBackend(bits), 1.0)
    assert np.max(np.abs(sum(evaluate(p, PlainBackend(bits), 1.0) for p in parts) - whole)) < 1e-12

    keys = key_owner()
    evaluator = Evaluator(keys.public_context)
    cts = [evaluator.load_ciphertext(e) for e in keys.encrypt_bits(bits)[0]]
    groups = package.grid.groups()
    partials = [evaluator.evaluate_partial(p, cts, groups=groups if k == 0 else None, owned=len(x))
                for k, p in enumerate(parts)]
    margins = keys.decrypt(evaluator.finish_partials(partials, owned=len(x)), len(x))
    assert np.max(np.abs(margins - result.xgboost_margin(x))) <= 1e-3
