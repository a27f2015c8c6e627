"""One scoring path, two modes: ``plain`` (numpy on the comparison bits) and ``encrypted`` (CKKS).

Both walk the same :class:`~ciphercare.analytics.model.forms.Form` of the model, so the plaintext result is
always there to compare with. In ``encrypted`` mode this function plays both roles in one process with
the very calls the two sides make across the wire: the hospital's
:meth:`~ciphercare.analytics.client.keys.KeyOwner.encrypt_bits` and ``decrypt`` (what the SDK calls),
the server's :meth:`~ciphercare.analytics.server.evaluator.Evaluator.load_ciphertext` and ``evaluate``
with slot ownership and validity (what the service's worker pool calls); the evaluator sees only the
public context and ciphertext bytes.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np

from ciphercare.analytics.client.keys import KeyOwner
from ciphercare.analytics.he.budget import MAX_DEPTH, ModelNotServable, check_model, servable_problem
from ciphercare.analytics.model.forms import PlainBackend, evaluate, model_form
from ciphercare.analytics.model.package import ModelPackage
from ciphercare.analytics.server.evaluator import Evaluator

__all__ = ["MAX_DEPTH", "ModelNotServable", "ScoringMode", "check_model", "score_batch", "servable_problem"]

class ScoringMode(StrEnum):
    PLAIN = "plain"
    ENCRYPTED = "encrypted"

    @classmethod
    def parse(cls, value: str | ScoringMode) -> ScoringMode:
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"mode must be 'plain' or 'encrypted', got {value!r}") from None


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
