"""Model-extraction attacks on encrypted scoring, as a malicious hospital would run them (measurement only).

A hospital holds its secret key, so it can put anything in any slot of its bit ciphertexts. Two
attacks are implemented here so that the tests and docs/SCORING.md can measure what each costs:

* :func:`crafted_pattern_attack` (white box through crafted inputs, issue 12): one pattern of bits per
  slot (the empty set, every single edge, every pair of edges, ...), every slot decrypted, the
  coefficients of the model's polynomial recovered by Moebius inversion. Before slot ownership and
  input validity, this copied the model in a handful of calls; now every unowned slot and every
  invalid pattern decrypts to noise.
* :class:`BlackBoxAttack` (well-formed inputs only): queries are valid patients on the public grid (a
  bin per feature), one logged, consented scoring each. The model's margin is a sum of trees of depth
  <= 3, so as a function of the bins it has interactions of order <= 3; the attack reads the anchored
  decomposition at base point "every feature in its lowest bin": main effects (sum K_f queries), every
  pair of features (sum K_f K_g), and every triple with an interacting pair. The reconstruction is
  exact when noise-free; with output noise each query is repeated and averaged.

Nothing here is used by the service; it exists to measure the service's guarantees.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ciphercare.analytics.model.forms import Form
from ciphercare.analytics.model.grid import QuantisationGrid

Monomials = dict[frozenset[int], float]


def monomials(form: Form) -> Monomials:
    """The multilinear expansion of a Form over 0/1 bits (``b^2 = b``): monomial -> coefficient."""
    out: Monomials = {}

    def add(key: frozenset[int], value: float) -> None:
        out[key] = out.get(key, 0.0) + value

    def walk(f: Form, prefix: frozenset[int], weight: float) -> None:
        add(prefix, weight * f.const)
        for e, c in f.lin.items():
            add(prefix | {e}, weight * c)
        for p, sub in f.piv.items():
            walk(sub, prefix | {p}, weight)

    walk(form, frozenset(), 1.0)
    return {k: v for k, v in out.items() if abs(v) > 1e-12}


# --- crafted patterns (white box through the slots) -------------------------------------------------


def crafted_patterns(n_edges: int, max_degree: int) -> list[frozenset[int]]:
    """Every set of at most ``max_degree`` edges, smallest first (one slot each)."""
    return [frozenset(c) for d in range(max_degree + 1) for c in itertools.combinations(range(n_edges), d)]


def pattern_matrix(patterns: Sequence[frozenset[int]], n_edges: int, amplitude: float = 1.0) -> np.ndarray:
    """Bits (slots x edges): ``amplitude`` on each pattern's edges (the issue's attack scaled them by 4)."""
    bits = np.zeros((len(patterns), n_edges))
    for i, pattern in enumerate(patterns):
        bits[i, sorted(pattern)] = amplitude
    return bits


def crafted_pattern_attack(values: Sequence[float], patterns: Sequence[frozenset[int]],
                           amplitude: float = 1.0) -> Monomials:
    """Coefficients recovered from the decrypted slot ``values`` of :func:`pattern_matrix` by Moebius inversion.

    ``c_S = sum_{T subset S} (-1)^{|S - T|} F(1_T) / amplitude^{|S|}`` (for multilinear F).
    """
    value_of = {p: float(v) for p, v in zip(patterns, values, strict=True)}
    out: Monomials = {}
    for pattern in patterns:
        total = 0.0
        for d in range(len(pattern) + 1):
            for sub in itertools.combinations(sorted(pattern), d):
                total += (-1) ** (len(pattern) - d) * value_of[frozenset(sub)]
        out[pattern] = total / amplitude ** len(pattern)
    return out


@dataclass
class Recovery:
    """How much of the true polynomial an attack recovered (within ``tolerance``)."""

    true_terms: int
    recovered: int
    false_positives: int
    max_error_on_recovered: float

    @property
    def fraction(self) -> float:
        return self.recovered / self.true_terms if self.true_terms else 0.0


def compare(recovered: Monomials, truth: Monomials, tolerance: float = 1e-3) -> Recovery:
    """Score recovered coefficients against the truth, over the monomials the attack probed (constant excluded)."""
    probed = [k for k in recovered if k]
    true_terms = [k for k in probed if abs(truth.get(k, 0.0)) > tolerance]
    hits = [k for k in true_terms if abs(recovered[k] - truth[k]) <= tolerance]
    false = [k for k in probed if abs(truth.get(k, 0.0)) <= tolerance and abs(recovered[k]) > tolerance]
    worst = max((abs(recovered[k] - truth[k]) for k in hits), default=0.0)
    return Recovery(len(true_terms), len(hits), len(false), worst)


# --- black box: well-formed inputs only ---------------------------------------------------------------

Oracle = Callable[[np.ndarray], np.ndarray]  # bin levels (n x features) -> margins (n)


def levels_to_bits(grid: QuantisationGrid, levels: np.ndarray) -> np.ndarray:
    """Valid bit patterns for bin levels: feature ``f`` at level ``l`` sets its first ``l`` edges' bits."""
    levels = np.asarray(levels, dtype=np.int64)
    columns = []
    for f, edges in enumerate(grid.edges):
        k = np.arange(1, len(edges) + 1)[None, :]
        columns.append((levels[:, [f]] >= k).astype(np.float64))
    return np.concatenate(columns, axis=1)


@dataclass
class BlackBoxAttack:
    """Anchored-decomposition extraction with well-formed queries; counts every logged scoring it needs."""

    grid: QuantisationGrid
    oracle: Oracle
    repeats: int = 1
    tolerance: float = 1e-6
    #: A triple of features is probed when at least this many of its pairs interact (1: exact for trees,
    #: whose depth-3 paths f -> g -> h always give the pair (f, g) or (f, h) a term; 2: cheaper, not exact).
    min_active_pairs: int = 1
    queries: int = 0
    stages: dict[str, int] = field(default_factory=dict)
    _values: dict[tuple[tuple[int, int], ...], float] = field(default_factory=dict)
    _terms: dict[tuple[tuple[int, int], ...], float] = field(default_factory=dict)

    @property
    def sizes(self) -> list[int]:
        return [len(e) for e in self.grid.edges]

    def _ask(self, points: list[tuple[tuple[int, int], ...]]) -> None:
        new = [p for p in points if p not in self._values]
        if not new:
            return
        levels = np.zeros((len(new), len(self.sizes)), dtype=np.int64)
        for i, point in enumerate(new):
            for f, lvl in point:
                levels[i, f] = lvl
        total = np.zeros(len(new))
        for _ in range(self.repeats):
            total += self.oracle(levels)
        self.queries += len(new) * self.repeats
        for point, value in zip(new, total / self.repeats, strict=True):
            self._values[point] = float(value)

    def _interaction(self, point: tuple[tuple[int, int], ...]) -> float:
        total = 0.0
        for d in range(len(point) + 1):
            for sub in itertools.combinations(point, d):
                total += (-1) ** (len(point) - d) * self._values[tuple(sub)]
        return total

    def _cells(self, features: tuple[int, ...]) -> list[tuple[tuple[int, int], ...]]:
        ranges = [range(1, self.sizes[f] + 1) for f in features]
        return [tuple(zip(features, combo, strict=True)) for combo in itertools.product(*ranges)]

    def run(self, max_order: int = 3) -> BlackBoxAttack:
        self._ask([()])
        self.stages["base"] = self.queries
        n = len(self.sizes)
        for order in range(1, max_order + 1):
            if order <= 2:
                groups = list(itertools.combinations(range(n), order))
            else:
                active = {tuple(sorted(f for f, _ in k)) for k, v in self._terms.items()
                          if len(k) == 2 and abs(v) > self.tolerance}
                groups = [t for t in itertools.combinations(range(n), 3)
                          if sum(pair in active for pair in itertools.combinations(t, 2)) >= self.min_active_pairs]
            cells = [c for g in groups for c in self._cells(g)]
            self._ask(cells)
            for cell in cells:
                value = self._interaction(cell)
                if abs(value) > self.tolerance:
                    self._terms[cell] = value
            self.stages[f"order {order}"] = self.queries
        return self

    def predict(self, levels: np.ndarray, max_order: int = 3) -> np.ndarray:
        """The reconstructed margin for bin levels (n x features)."""
        levels = np.asarray(levels, dtype=np.int64)
        base = self._values[()]
        out = np.full(levels.shape[0], base)
        by_features: dict[tuple[int, ...], dict[tuple[int, ...], float]] = {}
        for cell, value in self._terms.items():
            if len(cell) <= max_order:
                by_features.setdefault(tuple(f for f, _ in cell), {})[tuple(lvl for _, lvl in cell)] = value
        for features, table in by_features.items():
            cols = levels[:, list(features)]
            for i in range(levels.shape[0]):
                key = tuple(int(v) for v in cols[i])
                if 0 not in key:
                    out[i] += table.get(key, 0.0)
        return out


def plain_oracle(margin_from_bits: Callable[[np.ndarray], np.ndarray], grid: QuantisationGrid,
                 sigma: float = 0.0, seed: int = 0) -> Oracle:
    """The service as a well-formed client sees it: margin per valid patient, plus optional output noise."""
    rng = np.random.default_rng(seed)

    def oracle(levels: np.ndarray) -> np.ndarray:
        margins = margin_from_bits(levels_to_bits(grid, levels))
        return margins + (rng.normal(0.0, sigma, margins.shape) if sigma else 0.0)

    return oracle


def random_levels(grid: QuantisationGrid, n: int, seed: int = 1) -> np.ndarray:
    """``n`` uniformly random valid patients on the grid (bin levels)."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, len(e) + 1, n) for e in grid.edges], axis=1)
