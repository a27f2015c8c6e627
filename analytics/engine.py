"""One scoring path, two modes: ``plain`` (numpy on the comparison bits) and ``encrypted`` (CKKS).

Both walk the same :class:`~ciphercare.analytics.model.forms.Form` of the model, so the plaintext result is
always there to compare with. In ``encrypted`` mode this function plays both roles in one process
(key owner and evaluator, the evaluator seeing only the public context and ciphertext bytes); the
service splits them across the wire.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np

from ciphercare.analytics.he.ckks import Evaluator, HEError, KeyOwner
from ciphercare.analytics.model.forms import PlainBackend, evaluate, model_form
from ciphercare.analytics.model.package import ModelPackage

#: Deepest tree the 128-bit parameter set can evaluate (scale 2^40 per bit level, 2^147 at the end).
MAX_DEPTH = 3


class ScoringMode(StrEnum):
    PLAIN = "plain"
    ENCRYPTED = "encrypted"

    @classmethod
    def parse(cls, value: str | ScoringMode) -> ScoringMode:
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"mode must be 'plain' or 'encrypted', got {value!r}") from None


class ModelNotServable(HEError):
    """The model cannot be evaluated under the 128-bit parameters (too deep, or margins too large)."""


def servable_problem(model: ModelPackage, evaluator: Evaluator | None = None) -> str | None:
    """Why the encrypted evaluator cannot serve ``model`` (for its owner: names the statistic), or None."""
    from ciphercare.analytics.he.ckks import max_margin

    if model.max_depth > MAX_DEPTH:
        return f"model has trees of depth {model.max_depth}; the 128-bit parameters evaluate depth <= {MAX_DEPTH}"
    bound = min(max_margin(), evaluator.max_margin()) if evaluator is not None else max_margin()
    if model.margin_bound >= bound:
        return (f"model margins can reach {model.margin_bound:.1f}; the encrypted result holds |margin| < "
                f"{bound:.0f} (fewer trees or a smaller learning rate)")
    return None


def check_model(model: ModelPackage, evaluator: Evaluator | None = None) -> None:
    """Refuse a model the parameters cannot evaluate exactly (too deep, or margins too large)."""
    problem = servable_problem(model, evaluator)
    if problem is not None:
        raise ModelNotServable(problem)


def score_batch(model: ModelPackage, x: np.ndarray, *, mode: str | ScoringMode = ScoringMode.PLAIN,
                keys: KeyOwner | None = None, evaluator: Evaluator | None = None) -> np.ndarray:
    """Margins for the raw feature rows ``x`` (probability = sigmoid(margin))."""
    mode = ScoringMode.parse(mode)
    bits = model.grid.bits(x)
    form = model_form(model)
    if mode is ScoringMode.PLAIN:
        return np.asarray(evaluate(form, PlainBackend(bits), 1.0), dtype=np.float64)
    if keys is None:
        raise ValueError("encrypted scoring needs the hospital's keys (a KeyOwner)")
    evaluator = evaluator or Evaluator(keys.public_context)
    check_model(model, evaluator)
    margins: list[np.ndarray] = []
    slots = keys.params.slots
    for b, batch in enumerate(keys.encrypt_bits(bits)):
        cts = [evaluator.load_ciphertext(env, f"ciphertext (batch {b}, edge {j})") for j, env in enumerate(batch)]
        count = min(slots, bits.shape[0] - b * slots)
        margins.append(keys.decrypt(evaluator.evaluate(form, cts, groups=model.grid.groups(), owned=count), count))
    return np.concatenate(margins)
