"""The exported model package: trees over public grid edges, feature schema, grid, metadata, SHA-256.

A package is one JSON file written deterministically (sorted keys, no white space, shortest
round-trip floats). Its SHA-256 is the hash of those bytes; it is what the ledger records when the
model is deployed and what every scoring access event names. Each tree node splits on one global
grid edge ``j``: the right branch is taken when ``b_j = [x_f > e_j] = 1``.

Only the scoring service reads the trees. :meth:`ModelPackage.public_info` is what a client may see:
schema, grid, counts and the hash, never thresholds or leaf values.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ciphercare.analytics.model.datasets import DatasetSchema
from ciphercare.analytics.model.grid import QuantisationGrid

FORMAT = "ciphercare-model/1"


class ModelError(ValueError):
    """A model package is malformed, tampered with, or unusable for encrypted scoring."""


@dataclass(frozen=True)
class TreeNode:
    """A split on global edge ``edge`` (``left`` when the bit is 0, ``right`` when 1) or a leaf ``value``."""

    edge: int = -1
    left: TreeNode | None = None
    right: TreeNode | None = None
    value: float = 0.0

    @property
    def is_leaf(self) -> bool:
        return self.edge < 0

    @property
    def depth(self) -> int:
        if self.is_leaf:
            return 0
        return 1 + max(self.left.depth, self.right.depth)  # type: ignore[union-attr]

    def leaves(self) -> Iterator[float]:
        if self.is_leaf:
            yield self.value
        else:
            yield from self.left.leaves()  # type: ignore[union-attr]
            yield from self.right.leaves()  # type: ignore[union-attr]

    def edges_used(self) -> Iterator[int]:
        if not self.is_leaf:
            yield self.edge
            yield from self.left.edges_used()  # type: ignore[union-attr]
            yield from self.right.edges_used()  # type: ignore[union-attr]

    def to_dict(self) -> dict[str, Any]:
        if self.is_leaf:
            return {"leaf": self.value}
        return {"edge": self.edge, "left": self.left.to_dict(), "right": self.right.to_dict()}  # type: ignore[union-attr]

    @classmethod
    def from_dict(cls, data: Any, n_edges: int, depth: int = 0) -> TreeNode:
        if depth > 64 or not isinstance(data, dict):
            raise ModelError("tree node must be an object (and trees at most 64 deep)")
        if "leaf" in data:
            value = data["leaf"]
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ModelError("leaf value must be a finite number")
            return cls(value=float(value))
        edge = data.get("edge")
        if not isinstance(edge, int) or not 0 <= edge < n_edges:
            raise ModelError(f"split edge must be an integer in 0..{n_edges - 1}")
        return cls(edge=edge, left=cls.from_dict(data.get("left"), n_edges, depth + 1),
                   right=cls.from_dict(data.get("right"), n_edges, depth + 1))


def _walk(node: TreeNode, bits: np.ndarray) -> np.ndarray:
    """Leaf value per row of ``bits`` (n x n_edges)."""
    if node.is_leaf:
        return np.full(bits.shape[0], node.value)
    go_right = bits[:, node.edge] > 0.5
    return np.where(go_right, _walk(node.right, bits), _walk(node.left, bits))  # type: ignore[arg-type]


@dataclass
class ModelPackage:
    """Everything needed to score: trees, schema, grid, base margin and descriptive metadata."""

    name: str
    version: str
    schema: DatasetSchema
    grid: QuantisationGrid
    trees: list[TreeNode]
    base_margin: float
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.schema.names != self.grid.features:
            raise ModelError("grid features must match the schema's features, in order")
        if not self.trees:
            raise ModelError("a model needs at least one tree")
        if not math.isfinite(self.base_margin):
            raise ModelError("base_margin must be finite")

    # ----------------------------------------------------------------- facts

    @property
    def max_depth(self) -> int:
        return max(t.depth for t in self.trees)

    @property
    def margin_bound(self) -> float:
        """An upper bound on |margin| for any input (base + the largest |leaf| of every tree)."""
        return abs(self.base_margin) + sum(max(abs(v) for v in t.leaves()) for t in self.trees)

    # ---------------------------------------------------------------- plain

    def margin_from_bits(self, bits: np.ndarray) -> np.ndarray:
        """Reference margin by walking every tree on the comparison bits (float64)."""
        bits = np.asarray(bits, dtype=np.float64)
        if bits.ndim != 2 or bits.shape[1] != self.grid.n_edges:
            raise ModelError(f"expected bits of shape (n, {self.grid.n_edges}), got {bits.shape}")
        total = np.full(bits.shape[0], self.base_margin)
        for tree in self.trees:
            total += _walk(tree, bits)
        return total

    def margin(self, x: np.ndarray) -> np.ndarray:
        """Reference margin for raw features ``x`` (quantised on the grid first)."""
        return self.margin_from_bits(self.grid.bits(x))

    # ---------------------------------------------------------- serialisation

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "name": self.name,
            "version": self.version,
            "schema": self.schema.to_dict(),
            "grid": self.grid.to_dict(),
            "base_margin": self.base_margin,
            "trees": [t.to_dict() for t in self.trees],
            "metadata": self.metadata,
        }

    def to_bytes(self) -> bytes:
        """Deterministic bytes: sorted keys, no white space, shortest round-trip floats."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()

    def save(self, path: Path) -> str:
        """Write the package; returns its SHA-256."""
        data = self.to_bytes()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        return hashlib.sha256(data).hexdigest()

    @classmethod
    def from_bytes(cls, data: bytes, expected_sha256: str | None = None) -> ModelPackage:
        digest = hashlib.sha256(data).hexdigest()
        if expected_sha256 is not None and digest != expected_sha256:
            raise ModelError(f"model package hash {digest} does not match the expected {expected_sha256}")
        try:
            raw = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelError(f"model package is not JSON: {exc}") from exc
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ModelError(f"not a {FORMAT} package")
        try:
            schema = DatasetSchema.from_dict(raw["schema"])
            grid = QuantisationGrid.from_dict(raw["grid"])
            trees = [TreeNode.from_dict(t, grid.n_edges) for t in raw["trees"]]
            package = cls(name=str(raw["name"]), version=str(raw["version"]), schema=schema, grid=grid,
                          trees=trees, base_margin=float(raw["base_margin"]), metadata=dict(raw.get("metadata", {})))
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ModelError):
                raise
            raise ModelError(f"model package is malformed: {exc}") from exc
        if package.to_bytes() != data:
            raise ModelError("model package is not in canonical form (was it edited by hand?)")
        return package

    @classmethod
    def load(cls, path: Path, expected_sha256: str | None = None) -> ModelPackage:
        return cls.from_bytes(Path(path).read_bytes(), expected_sha256)

    def public_info(self) -> dict[str, Any]:
        """What a client may learn: schema, grid, sizes, metrics and the hash; no trees, thresholds or leaves."""
        metrics = self.metadata.get("metrics", {})
        return {
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "schema": self.schema.to_dict(),
            "grid": self.grid.to_dict(),
            "n_trees": len(self.trees),
            "max_depth": self.max_depth,
            "objective": self.metadata.get("objective", "binary:logistic"),
            "metrics": {k: metrics[k] for k in ("test_auc", "test_accuracy", "test_brier") if k in metrics},
        }
