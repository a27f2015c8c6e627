"""The public quantisation grid: per-feature bin edges that the model's thresholds are hidden among.

The model is trained on bin indices ``q_f(x) = #{k : x_f > e_{f,k}}``, so each split of a tree is
"``x_f > e_{f,k}``" for one published edge ``e_{f,k}``. The client (key owner) computes the bit
``b_{f,k} = [x_f > e_{f,k}]`` for *every* edge of the grid and sends them encrypted; the server picks
the bits of its secret thresholds. The grid is all a client learns about the model's splits.

Edges are training-data quantiles rounded to the fewest significant digits (at least two) that keep
them distinct (so they read as clinical cut points, not as a fingerprint of individual training rows),
``0.5`` for binary features, and the mid-points between distinct values for integer features with few
values and for categorical codes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ciphercare.analytics.model.datasets import DatasetSchema, SchemaError

DEFAULT_BINS = 10


def _round_sig(value: float, digits: int = 2) -> float:
    if value == 0 or not math.isfinite(value):
        return 0.0
    return round(value, digits - 1 - int(math.floor(math.log10(abs(value)))))


@dataclass(frozen=True)
class QuantisationGrid:
    """Sorted, distinct bin edges per feature, in the schema's feature order."""

    features: tuple[str, ...]
    edges: tuple[tuple[float, ...], ...]

    def __post_init__(self) -> None:
        if len(self.features) != len(self.edges):
            raise ValueError("one edge list per feature is required")
        for name, edges in zip(self.features, self.edges, strict=True):
            if not edges:
                raise SchemaError(name, "has no grid edge (a constant feature cannot be used)")
            if any(not math.isfinite(e) for e in edges) or list(edges) != sorted(set(edges)):
                raise SchemaError(name, "grid edges must be finite, distinct and increasing")

    @property
    def n_edges(self) -> int:
        """Total number of edges: the number of encrypted bit vectors a client sends per batch."""
        return sum(len(e) for e in self.edges)

    def offsets(self) -> list[int]:
        """Global index of each feature's first edge (edges are numbered feature by feature)."""
        out, total = [], 0
        for edges in self.edges:
            out.append(total)
            total += len(edges)
        return out

    def groups(self) -> list[tuple[int, int]]:
        """Each feature's edges as ``(first global edge, edge count)``: the units of the validity check."""
        return [(start, len(edges)) for start, edges in zip(self.offsets(), self.edges, strict=True)]

    def edge_index(self, feature: int, k: int) -> int:
        """Global index of edge ``k`` of feature ``feature``."""
        return self.offsets()[feature] + k

    def quantise(self, x: np.ndarray) -> np.ndarray:
        """Bin indices ``q_f(x) = #{k : x_f > e_{f,k}}`` (int32, same shape as ``x``)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.features):
            raise ValueError(f"expected a matrix with {len(self.features)} feature columns, got shape {x.shape}")
        out = np.empty(x.shape, dtype=np.int32)
        for f, edges in enumerate(self.edges):
            out[:, f] = np.searchsorted(np.asarray(edges), x[:, f], side="left")
        return out

    def bits(self, x: np.ndarray) -> np.ndarray:
        """Comparison bits ``b[i, j] = [x_i,f(j) > e_j]`` for every global edge ``j`` (float64, n x n_edges)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.features):
            raise ValueError(f"expected a matrix with {len(self.features)} feature columns, got shape {x.shape}")
        columns = [x[:, [f]] > np.asarray(edges)[None, :] for f, edges in enumerate(self.edges)]
        return np.concatenate(columns, axis=1).astype(np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {"features": [{"name": n, "edges": list(e)} for n, e in zip(self.features, self.edges, strict=True)]}

    @classmethod
    def from_dict(cls, data: Any) -> QuantisationGrid:
        if not isinstance(data, dict) or not isinstance(data.get("features"), list):
            raise ValueError("grid must be an object with a 'features' list")
        names, edges = [], []
        for item in data["features"]:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str) \
                    or not isinstance(item.get("edges"), list):
                raise ValueError("each grid feature needs 'name' and 'edges'")
            names.append(item["name"])
            edges.append(tuple(float(e) for e in item["edges"]))
        return cls(tuple(names), tuple(edges))


def _quantile_edges(column: np.ndarray, bins: int) -> list[float]:
    """Training quantiles, rounded to the fewest significant digits (2..6) that keep them all distinct."""
    lo, hi = float(column.min()), float(column.max())
    raw = [float(q) for q in np.quantile(column, np.linspace(0, 1, bins + 1)[1:-1])]
    wanted = len({q for q in raw if lo <= q < hi})
    edges: list[float] = []
    for digits in range(2, 7):
        edges = sorted({e for e in (_round_sig(q, digits) for q in raw) if lo <= e < hi})
        if len(edges) >= wanted:
            break
    return edges


def build_grid(schema: DatasetSchema, x: np.ndarray, *, bins: int = DEFAULT_BINS,
               warnings: list[str] | None = None) -> QuantisationGrid:
    """A public grid from training data: quantiles (continuous), 0.5 (binary), mid-points (integer, categorical).

    Quantile edges keep as many significant digits as they need to stay distinct (at least 2, so they
    read as cut points rather than training rows). When a continuous feature gets fewer distinct edges
    than ``bins - 1`` (its values are concentrated), a warning naming it is appended to ``warnings``.
    """
    if bins < 2:
        raise ValueError("bins must be at least 2")
    all_edges: list[tuple[float, ...]] = []
    for f, spec in enumerate(schema.features):
        column = np.asarray(x[:, f], dtype=np.float64)
        column = column[np.isfinite(column)]
        distinct = np.unique(column)
        if distinct.size < 2:
            raise SchemaError(spec.name, "is constant in the training data")
        if spec.type == "binary":
            edges: Sequence[float] = (0.5,)
        elif spec.type == "categorical":
            edges = [k - 0.5 for k in range(1, max(len(spec.categories), int(distinct[-1]) + 1))]
        elif distinct.size <= bins:
            edges = [_round_sig((a + b) / 2, 3) for a, b in zip(distinct[:-1], distinct[1:], strict=True)]
        else:
            edges = _quantile_edges(column, bins)
            if len(edges) < bins - 1 and warnings is not None:
                warnings.append(f"feature {spec.name!r}: only {len(edges)} distinct grid edges of the {bins - 1} "
                                f"asked for (its training values are concentrated on few values)")
        lo, hi = float(distinct[0]), float(distinct[-1])
        cleaned = sorted({e for e in edges if lo <= e < hi})
        if not cleaned:
            cleaned = [float((lo + hi) / 2)]
        all_edges.append(tuple(float(e) for e in cleaned))
    return QuantisationGrid(schema.names, tuple(all_edges))
