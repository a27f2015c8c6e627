"""Can the encrypted evaluator serve a model? Depth and margin bound of the 128-bit parameter set.

Shared by training (refuses before writing a package), the service (refuses to deploy with
FAILED_PRECONDITION) and the evaluator; neither role's module is needed to answer.
"""

from __future__ import annotations

from typing import Protocol

from ciphercare.analytics.he.ckks import HEError, max_margin
from ciphercare.analytics.model.package import ModelPackage

#: Deepest tree the 128-bit parameter set can evaluate (scale 2^40 per bit level, 2^147 at the end).
MAX_DEPTH = 3


class ModelNotServable(HEError):
    """The model cannot be evaluated under the 128-bit parameters (too deep, or margins too large)."""


class _Bounded(Protocol):
    def max_margin(self) -> float: ...


def servable_problem(model: ModelPackage, evaluator: _Bounded | None = None) -> str | None:
    """Why the encrypted evaluator cannot serve ``model`` (for its owner: names the statistic), or None."""
    if model.max_depth > MAX_DEPTH:
        return f"model has trees of depth {model.max_depth}; the 128-bit parameters evaluate depth <= {MAX_DEPTH}"
    bound = min(max_margin(), evaluator.max_margin()) if evaluator is not None else max_margin()
    if model.margin_bound >= bound:
        return (f"model margins can reach {model.margin_bound:.1f}; the encrypted result holds |margin| < "
                f"{bound:.0f} (fewer trees or a smaller learning rate)")
    return None


def check_model(model: ModelPackage, evaluator: _Bounded | None = None) -> None:
    """Refuse a model the parameters cannot evaluate exactly (too deep, or margins too large)."""
    problem = servable_problem(model, evaluator)
    if problem is not None:
        raise ModelNotServable(problem)
