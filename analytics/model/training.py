"""``ciphercare model train``: XGBoost on the public grid, a held-out evaluation, an exported package.

Features are quantised on the public grid (built from the training split only) and XGBoost is
trained on the bin indices, so every threshold it chooses is one of the published edges. The trees
are then exported split-by-edge (see :mod:`ciphercare.analytics.model.package`); the exported model's margin
equals XGBoost's own ``predict(output_margin=True)`` up to float32 rounding, which the export checks.
"""

from __future__ import annotations

import math
import platform
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ciphercare.analytics.model.datasets import Dataset, DatasetSchema, FeatureSpec
from ciphercare.analytics.model.grid import DEFAULT_BINS, QuantisationGrid, build_grid
from ciphercare.analytics.model.package import ModelError, ModelPackage, TreeNode

#: Held-out AUC at or above which training warns of a target-leaking column.
LEAKAGE_AUC = 0.99

#: Deepest tree the encrypted evaluator takes at 128-bit parameters (see ``he.CKKS_PARAMETERS``).
MAX_ENCRYPTED_DEPTH = 3


@dataclass(frozen=True)
class TrainingConfig:
    """Hyper-parameters (defaults: 100 trees of depth 3, learning rate 0.05, min child weight 5)."""

    n_trees: int = 100
    max_depth: int = 3
    learning_rate: float = 0.05
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    min_child_weight: float = 5.0
    reg_lambda: float = 1.0
    bins: int = DEFAULT_BINS
    test_fraction: float = 0.2
    seed: int = 20240611

    def validate(self) -> None:
        if not 1 <= self.n_trees <= 2000:
            raise ValueError("n_trees must be in 1..2000")
        if not 1 <= self.max_depth <= MAX_ENCRYPTED_DEPTH:
            raise ValueError(f"max_depth must be in 1..{MAX_ENCRYPTED_DEPTH}: deeper trees do not fit the "
                             "128-bit CKKS modulus budget (see docs/SCORING.md)")
        if not 0.05 <= self.test_fraction <= 0.5:
            raise ValueError("test_fraction must be in 0.05..0.5")

    def xgb_params(self) -> dict[str, Any]:
        return {
            "objective": "binary:logistic",
            "eval_metric": "logloss",
            "max_depth": self.max_depth,
            "eta": self.learning_rate,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "min_child_weight": self.min_child_weight,
            "lambda": self.reg_lambda,
            "tree_method": "hist",
            "max_bin": 256,
            "seed": self.seed,
            "nthread": 1,
        }


@dataclass
class TrainingResult:
    """The exported package plus everything needed to compare against XGBoost itself."""

    package: ModelPackage
    booster: Any
    train: Dataset
    test: Dataset
    metrics: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def xgboost_margin(self, x: np.ndarray) -> np.ndarray:
        """XGBoost's own margin for raw features ``x`` (quantised on the same grid)."""
        import xgboost as xgb

        q = self.package.grid.quantise(x).astype(np.float32)
        return np.asarray(self.booster.predict(xgb.DMatrix(q, feature_names=list(self.package.schema.names)),
                                               output_margin=True), dtype=np.float64)


def sigmoid(margin: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(margin, dtype=np.float64)))


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with tie correction)."""
    y = np.asarray(y)
    score = np.asarray(score, dtype=np.float64)
    pos, neg = int((y == 1).sum()), int((y == 0).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    sorted_scores = score[order]
    i = 0
    while i < len(score):
        j = i
        while j + 1 < len(score) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def classification_metrics(y: np.ndarray, probability: np.ndarray, *, bins: int = 5) -> dict[str, Any]:
    """AUC, accuracy at 0.5, Brier score and a reliability table (equal-count bins)."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(probability, dtype=np.float64)
    order = np.argsort(p, kind="mergesort")
    table = []
    for chunk in np.array_split(order, bins):
        if chunk.size:
            table.append({"n": int(chunk.size), "mean_predicted": round(float(p[chunk].mean()), 4),
                          "observed_rate": round(float(y[chunk].mean()), 4)})
    ece = sum(row["n"] * abs(row["mean_predicted"] - row["observed_rate"]) for row in table) / max(1, len(y))
    return {
        "n": int(len(y)),
        "positives": int(y.sum()),
        "auc": round(roc_auc(y, p), 4),
        "accuracy": round(float(((p >= 0.5) == (y == 1)).mean()), 4),
        "brier": round(float(np.mean((p - y) ** 2)), 4),
        "expected_calibration_error": round(float(ece), 4),
        "calibration": table,
    }


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of a stratified train/test split (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    train: list[int] = []
    test: list[int] = []
    for label in np.unique(y):
        rows = np.flatnonzero(y == label)
        rng.shuffle(rows)
        n_test = int(round(len(rows) * test_fraction))
        test.extend(rows[:n_test])
        train.extend(rows[n_test:])
    return np.sort(np.asarray(train)), np.sort(np.asarray(test))


def _convert(node: dict[str, Any], names: dict[str, int], grid: QuantisationGrid) -> TreeNode:
    """An XGBoost JSON dump node as a tree over global edges ("x < t" left becomes "b = 0" left)."""
    if "leaf" in node:
        return TreeNode(value=float(node["leaf"]))
    children = {child["nodeid"]: child for child in node["children"]}
    left = _convert(children[node["yes"]], names, grid)
    right = _convert(children[node["no"]], names, grid)
    feature = names[node["split"]]
    k = math.ceil(float(node["split_condition"]))  # bin index q >= k goes right
    n_edges = len(grid.edges[feature])
    if k <= 0:
        return right
    if k > n_edges:
        return left
    return TreeNode(edge=grid.edge_index(feature, k - 1), left=left, right=right)


def complete_schema(schema: DatasetSchema, train_x: np.ndarray, all_x: np.ndarray) -> DatasetSchema:
    """The schema a model ships with: an imputation for every feature with missing values (the training
    split's median, the most frequent value for binary and categorical features) and a plausible range for
    every numeric feature that declares none (the training range widened by its width on each side,
    never below 0 for a feature with no negative values)."""
    features = []
    for f, spec in enumerate(schema.features):
        column = train_x[:, f][np.isfinite(train_x[:, f])]
        if column.size == 0:
            raise ModelError(f"feature {spec.name!r} has no value in the training split")
        impute = spec.impute
        if impute is None and not np.all(np.isfinite(all_x[:, f])):
            if spec.type in ("binary", "categorical"):
                values, counts = np.unique(column, return_counts=True)
                impute = float(values[int(np.argmax(counts))])
            else:
                impute = float(np.median(column))
                if spec.type == "integer":
                    impute = float(round(impute))
        bounds = spec.range
        if bounds is None and spec.type in ("continuous", "integer"):
            lo, hi = float(column.min()), float(column.max())
            width = max(hi - lo, 1.0)
            bounds = (lo - width if lo < 0 else max(0.0, lo - width), hi + width)
        features.append(FeatureSpec(spec.name, spec.type, spec.description, spec.categories, impute, bounds))
    return DatasetSchema(tuple(features), schema.label, schema.label_description)


def _impute(x: np.ndarray, schema: DatasetSchema) -> np.ndarray:
    out = np.array(x, dtype=np.float64, copy=True)
    for f, spec in enumerate(schema.features):
        missing = ~np.isfinite(out[:, f])
        if missing.any():
            if spec.impute is None:
                raise ModelError(f"feature {spec.name!r} has missing values and no imputation")
            out[missing, f] = spec.impute
    return out


def train_model(dataset: Dataset, config: TrainingConfig | None = None, *, name: str | None = None,
                version: str = "1") -> TrainingResult:
    """Train, evaluate on the held-out split and export.

    Raises :class:`ModelError` if the export disagrees with XGBoost, or if the encrypted evaluator could
    not serve the model (its margins exceed the 128-bit parameters' bound): refused before anything is
    written. Warnings (collapsed grid resolution, a held-out AUC that suggests a target-leaking column)
    are in ``result.warnings`` and the package metadata.
    """
    import xgboost as xgb

    config = config or TrainingConfig()
    config.validate()
    if dataset.y.size != len(dataset):
        raise ValueError("training needs a labelled dataset")
    train_rows, test_rows = stratified_split(dataset.y, config.test_fraction, config.seed)
    schema = complete_schema(dataset.schema, dataset.x[train_rows], dataset.x)
    missing_rows = int(np.sum(~np.all(np.isfinite(dataset.x), axis=1)))
    dataset = Dataset(dataset.name, schema, _impute(dataset.x, schema), dataset.y, dataset.ids, dataset.source,
                      dataset.citation)
    train, test = dataset.subset(train_rows), dataset.subset(test_rows)
    warnings: list[str] = []
    grid = build_grid(dataset.schema, train.x, bins=config.bins, warnings=warnings)
    names = list(dataset.schema.names)
    dtrain = xgb.DMatrix(grid.quantise(train.x).astype(np.float32), label=train.y, feature_names=names)
    booster = xgb.train(config.xgb_params(), dtrain, num_boost_round=config.n_trees)

    index = {n: i for i, n in enumerate(names)}
    import json

    trees = [_convert(json.loads(dump), index, grid) for dump in booster.get_dump(dump_format="json")]
    xgb_train_margin = np.asarray(booster.predict(dtrain, output_margin=True), dtype=np.float64)
    provisional = ModelPackage(name or f"{dataset.name}-{dataset.schema.label or 'risk'}", version,
                               dataset.schema, grid, trees, 0.0)
    offsets = xgb_train_margin - provisional.margin_from_bits(grid.bits(train.x))
    base_margin = float(np.median(offsets))
    if float(np.max(np.abs(offsets - base_margin))) > 1e-4:
        raise ModelError("exported trees disagree with XGBoost's margin; the split conversion is wrong")

    result = TrainingResult(package=provisional, booster=booster, train=train, test=test)
    p_test = sigmoid(result.xgboost_margin(test.x))
    p_train = sigmoid(xgb_train_margin)
    test_metrics = classification_metrics(test.y, p_test)
    metrics = {
        "test_auc": test_metrics["auc"],
        "test_accuracy": test_metrics["accuracy"],
        "test_brier": test_metrics["brier"],
        "test": test_metrics,
        "train": classification_metrics(train.y, p_train),
    }
    metadata = {
        "objective": "binary:logistic",
        "dataset": {"name": dataset.name, "source": dataset.source, "citation": dataset.citation,
                    "label": dataset.schema.label, "label_description": dataset.schema.label_description,
                    "n": len(dataset), "n_train": len(train), "n_test": len(test),
                    "split": {"kind": "stratified holdout", "test_fraction": config.test_fraction,
                              "seed": config.seed}},
        "training": {"library": "xgboost", "xgboost_version": xgb.__version__, "python": platform.python_version(),
                     "params": config.xgb_params(), "n_trees": config.n_trees, "grid_bins": config.bins},
        "metrics": metrics,
        "grid_edges": grid.n_edges,
    }
    if test_metrics["auc"] >= LEAKAGE_AUC:
        warnings.append(f"held-out AUC {test_metrics['auc']:.3f} >= {LEAKAGE_AUC}: a column may leak the label "
                        "(for example one recorded after the outcome); check the features before deploying")
    if missing_rows:
        metadata["missing"] = {"rows_with_missing_values": missing_rows,
                               "imputed": {s.name: s.impute for s in dataset.schema.features
                                           if s.impute is not None}}
    if warnings:
        metadata["warnings"] = warnings
    package = ModelPackage(provisional.name, version, dataset.schema, grid, trees, base_margin, metadata)
    from ciphercare.analytics.he.budget import servable_problem

    problem = servable_problem(package)
    if problem is not None:
        raise ModelError(f"the encrypted evaluator cannot serve this model: {problem}; nothing was written")
    result.package = package
    result.metrics = metrics
    result.warnings = warnings
    return result
