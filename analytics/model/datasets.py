"""Clinical datasets for risk scoring: one shipped inside a package, or a user's CSV with a declared schema.

Nothing is downloaded at run time. The default, WHAS500 (Worcester Heart Attack Study, 500 patients,
Hosmer, Lemeshow & May, *Applied Survival Analysis*, 2nd ed., Wiley 2008), is read from the ARFF file
that scikit-survival ships inside its wheel (``sksurv/datasets/data/whas500.arff``); sksurv itself is
not imported. The label is one-year mortality after the myocardial infarction: 1 if the patient died
within 365 days (``fstat == 1`` and ``lenfol <= 365``), 0 if followed for more than 365 days; patients
censored alive before day 365 have no label and are left out.

A user's CSV comes with a schema (JSON) or has one inferred (:func:`infer_schema`): feature names, their
type (``continuous``, ``binary``, ``integer`` or ``categorical``), an optional plausible range, and the
label column. Categorical text values are coded 0..C-1 in the order of ``categories`` (learnt from the
training data and saved in the model package). Missing cells (empty, ``?``, ``NA``) are kept as NaN at
training; training stores an imputation per feature (the training split's median, or its most frequent
category) and scoring fills missing cells with it. Every problem is one :class:`SchemaError` naming the
column.
"""

from __future__ import annotations

import csv
import importlib.resources
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FEATURE_TYPES = ("continuous", "binary", "integer", "categorical")
MISSING = ("", "?", "na", "nan", "null", "none")

WHAS500_FEATURES: tuple[tuple[str, str, str, tuple[float, float] | None], ...] = (
    ("age", "continuous", "age at hospital admission (years)", (18.0, 115.0)),
    ("gender", "binary", "gender (0 male, 1 female)", None),
    ("hr", "continuous", "initial heart rate (beats per minute)", (20.0, 250.0)),
    ("sysbp", "continuous", "initial systolic blood pressure (mmHg)", (40.0, 300.0)),
    ("diasbp", "continuous", "initial diastolic blood pressure (mmHg)", (0.0, 200.0)),
    ("bmi", "continuous", "body mass index (kg/m^2)", (10.0, 80.0)),
    ("cvd", "binary", "history of cardiovascular disease", None),
    ("afb", "binary", "atrial fibrillation", None),
    ("sho", "binary", "cardiogenic shock", None),
    ("chf", "binary", "congestive heart complications", None),
    ("av3", "binary", "complete heart block", None),
    ("miord", "binary", "MI order (0 first, 1 recurrent)", None),
    ("mitype", "binary", "MI type (0 non Q-wave, 1 Q-wave)", None),
    ("los", "continuous", "length of hospital stay (days)", (0.0, 365.0)),
)


class SchemaError(ValueError):
    """The data does not match its declared schema; the message names the column."""

    def __init__(self, column: str, message: str) -> None:
        super().__init__(f"column {column!r}: {message}")
        self.column = column


@dataclass(frozen=True)
class FeatureSpec:
    """One model input: its name (the CSV column), type, description, and what scoring may accept.

    ``categories`` (categorical only): text values in code order. ``impute``: the value of a missing cell
    (None: missing is refused). ``range``: plausible ``(min, max)``; values outside are refused.
    """

    name: str
    type: str
    description: str = ""
    categories: tuple[str, ...] = ()
    impute: float | None = None
    range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.type not in FEATURE_TYPES:
            raise SchemaError(self.name, f"type must be one of {', '.join(FEATURE_TYPES)}, not {self.type!r}")
        if not self.name or not self.name.strip():
            raise SchemaError(self.name, "a feature needs a non-empty name")
        if self.categories and self.type != "categorical":
            raise SchemaError(self.name, "only a categorical feature has categories")
        if len(set(self.categories)) != len(self.categories):
            raise SchemaError(self.name, "categories must be distinct")
        if self.range is not None:
            lo, hi = self.range
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise SchemaError(self.name, f"range must be two finite numbers min < max, not {list(self.range)}")
        if self.impute is not None and not math.isfinite(self.impute):
            raise SchemaError(self.name, "imputation must be a finite number")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type, "description": self.description}
        if self.categories:
            out["categories"] = list(self.categories)
        if self.impute is not None:
            out["impute"] = self.impute
        if self.range is not None:
            out["range"] = list(self.range)
        return out

    @classmethod
    def from_dict(cls, item: Any, i: int = 0) -> FeatureSpec:
        if isinstance(item, str):
            item = {"name": item, "type": "continuous"}
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise SchemaError(f"<feature {i}>", "must be an object with a 'name'")
        name = item["name"]
        categories = item.get("categories", [])
        if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
            raise SchemaError(name, "'categories' must be a list of strings")
        impute = item.get("impute")
        if impute is not None and (isinstance(impute, bool) or not isinstance(impute, (int, float))):
            raise SchemaError(name, "'impute' must be a number")
        raw_range = item.get("range")
        bounds: tuple[float, float] | None = None
        if raw_range is not None:
            if not isinstance(raw_range, list) or len(raw_range) != 2 \
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw_range):
                raise SchemaError(name, "'range' must be [min, max]")
            bounds = (float(raw_range[0]), float(raw_range[1]))
        unknown = set(item) - {"name", "type", "description", "categories", "impute", "range"}
        if unknown:
            raise SchemaError(name, f"unknown schema keys {sorted(unknown)}")
        return cls(name, str(item.get("type", "continuous")), str(item.get("description", "")),
                   tuple(categories), None if impute is None else float(impute), bounds)

    def code(self, text: str) -> float | None:
        """A categorical value's code (None if the category is unknown)."""
        try:
            return float(self.categories.index(text))
        except ValueError:
            return None


@dataclass(frozen=True)
class DatasetSchema:
    """Feature columns (in model order), the label column and what the label means."""

    features: tuple[FeatureSpec, ...]
    label: str = ""
    label_description: str = ""

    def __post_init__(self) -> None:
        names = [f.name for f in self.features]
        if not names:
            raise SchemaError("<schema>", "declares no features")
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise SchemaError(name, "is declared twice")
            seen.add(name)
        if self.label and self.label in seen:
            raise SchemaError(self.label, "is both a feature and the label")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    def to_dict(self) -> dict[str, Any]:
        return {"features": [f.to_dict() for f in self.features], "label": self.label,
                "label_description": self.label_description}

    @classmethod
    def from_dict(cls, data: Any) -> DatasetSchema:
        """Parse ``{"features": [{"name", "type", "description"?}, ...], "label": "..."}``."""
        if not isinstance(data, dict):
            raise SchemaError("<schema>", "must be a JSON object with 'features' and 'label'")
        raw = data.get("features")
        if not isinstance(raw, list) or not raw:
            raise SchemaError("<schema>", "'features' must be a non-empty list")
        features = [FeatureSpec.from_dict(item, i) for i, item in enumerate(raw)]
        label = data.get("label", "")
        if not isinstance(label, str):
            raise SchemaError("<schema>", "'label' must be a column name")
        return cls(tuple(features), label, str(data.get("label_description", "")))

    @classmethod
    def load(cls, path: Path) -> DatasetSchema:
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except json.JSONDecodeError as exc:
            raise SchemaError("<schema>", f"{path} is not JSON: {exc.msg} at line {exc.lineno}") from exc


@dataclass
class Dataset:
    """Feature matrix ``x`` (float64, one row per patient), labels ``y`` (0/1 or empty) and row ids."""

    name: str
    schema: DatasetSchema
    x: np.ndarray
    y: np.ndarray
    ids: list[str] = field(default_factory=list)
    source: str = ""
    citation: str = ""

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, rows: np.ndarray) -> Dataset:
        ids = [self.ids[i] for i in rows] if self.ids else []
        return Dataset(self.name, self.schema, self.x[rows], self.y[rows] if self.y.size else self.y, ids,
                       self.source, self.citation)


def is_missing(text: str) -> bool:
    return text.strip().lower() in MISSING


def _parse_number(column: str, value: str, row: int, spec: FeatureSpec | None, *,
                  allow_missing: bool = False) -> float:
    """One cell: a number (or a categorical code); missing -> the imputation, NaN if ``allow_missing``."""
    text = value.strip()
    if is_missing(text):
        if spec is not None and spec.impute is not None:
            return spec.impute
        if allow_missing:
            return math.nan
        raise SchemaError(column, f"row {row}: missing value, and the model stores no imputation for it")
    if spec is not None and spec.type == "categorical":
        code = spec.code(text)
        if code is None:
            known = ", ".join(repr(c) for c in spec.categories[:12])
            raise SchemaError(column, f"row {row}: {text!r} is not one of the model's categories ({known})")
        return code
    try:
        number = float(text)
    except ValueError:
        hint = " (declare it categorical)" if spec is not None else ""
        raise SchemaError(column, f"row {row}: {text!r} is not a number{hint}") from None
    if not math.isfinite(number):
        raise SchemaError(column, f"row {row}: {text!r} is not a finite number")
    if spec is not None and spec.type == "binary" and number not in (0.0, 1.0):
        raise SchemaError(column, f"row {row}: {text!r} is not 0 or 1 (declared binary)")
    if spec is not None and spec.type == "integer" and number != round(number):
        raise SchemaError(column, f"row {row}: {text!r} is not an integer (declared integer)")
    if spec is not None and spec.range is not None and not spec.range[0] <= number <= spec.range[1]:
        raise SchemaError(column, f"row {row}: {text} is outside the plausible range "
                                  f"{spec.range[0]:g}..{spec.range[1]:g}")
    return number


def learn_categories(schema: DatasetSchema, header: Sequence[str], rows: Sequence[Sequence[str]]) -> DatasetSchema:
    """Fill in the categories of categorical features that declare none (sorted distinct training values)."""
    index = {h.strip(): i for i, h in enumerate(header)}
    features = []
    for spec in schema.features:
        if spec.type == "categorical" and not spec.categories and spec.name in index:
            values = sorted({row[index[spec.name]].strip() for row in rows
                             if len(row) > index[spec.name] and not is_missing(row[index[spec.name]])})
            spec = FeatureSpec(spec.name, spec.type, spec.description, tuple(values), spec.impute, spec.range)
        features.append(spec)
    return DatasetSchema(tuple(features), schema.label, schema.label_description)


def rows_to_matrix(schema: DatasetSchema, header: Sequence[str], rows: Iterable[Sequence[str]],
                   *, require_label: bool, id_column: str | None = None,
                   allow_missing: bool = False) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Validate CSV-like rows against ``schema`` and return ``(x, y, ids)``.

    Raises :class:`SchemaError` naming the first offending column (a missing column, a value that is
    not a number, a missing value, a non-binary value in a binary column).
    """
    header = [h.strip() for h in header]
    index = {name: i for i, name in enumerate(header)}
    for spec in schema.features:
        if spec.name not in index:
            raise SchemaError(spec.name, f"is declared in the schema but missing from the CSV header "
                                         f"(columns: {', '.join(header)})")
    if require_label and (not schema.label or schema.label not in index):
        raise SchemaError(schema.label or "<label>", "the label column is missing from the CSV header")
    if id_column is not None and id_column not in index:
        raise SchemaError(id_column, "the patient id column is missing from the CSV header")
    xs: list[list[float]] = []
    ys: list[float] = []
    ids: list[str] = []
    for number, row in enumerate(rows, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise SchemaError(header[min(len(row), len(header) - 1)],
                              f"row {number}: has {len(row)} cells, the header has {len(header)}")
        xs.append([_parse_number(s.name, row[index[s.name]], number, s, allow_missing=allow_missing)
                   for s in schema.features])
        if require_label:
            label = _parse_number(schema.label, row[index[schema.label]], number, None)
            if label not in (0.0, 1.0):
                raise SchemaError(schema.label, f"row {number}: label must be 0 or 1, not {label:g}")
            ys.append(label)
        if id_column is not None:
            value = row[index[id_column]].strip()
            if not value:
                raise SchemaError(id_column, f"row {number}: empty patient id")
            ids.append(value)
    if not xs:
        raise SchemaError("<data>", "the CSV has no data rows")
    x = np.asarray(xs, dtype=np.float64)
    y = np.asarray(ys, dtype=np.float64) if require_label else np.zeros(0)
    return x, y, ids


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise SchemaError("<header>", f"{path} is empty") from None
        return header, list(reader)


def load_csv(path: Path, schema: DatasetSchema, *, require_label: bool = True,
             id_column: str | None = None) -> Dataset:
    """A user's CSV (header row; comma separated) validated against ``schema``.

    With ``require_label`` (training) categorical features without categories learn them from the data
    and missing cells become NaN (training imputes them); without it (scoring) missing cells take the
    schema's imputation or are refused.
    """
    header, rows = _read_csv(path)
    if require_label:
        schema = learn_categories(schema, header, rows)
    x, y, ids = rows_to_matrix(schema, header, rows, require_label=require_label, id_column=id_column,
                               allow_missing=require_label)
    return Dataset(Path(path).stem, schema, x, y, ids, source=str(path))


def infer_schema(path: Path, label: str, *, id_column: str | None = None,
                 max_integer_levels: int = 10) -> DatasetSchema:
    """A schema guessed from a CSV: 0/1 columns binary, text columns categorical, small integer ranges integer,
    the rest continuous; every column but ``label`` (and ``id_column``) is a feature. Review it before use."""
    header, rows = _read_csv(path)
    names = [h.strip() for h in header]
    if label not in names:
        raise SchemaError(label, f"the label column is missing from the CSV header (columns: {', '.join(names)})")
    features = []
    for i, name in enumerate(names):
        if name in (label, id_column) or not name:
            continue
        values = [row[i].strip() for row in rows if len(row) > i and not is_missing(row[i])]
        if not values:
            raise SchemaError(name, "has no values")
        try:
            numbers = [float(v) for v in values]
        except ValueError:
            features.append(FeatureSpec(name, "categorical"))
            continue
        distinct = set(numbers)
        if distinct <= {0.0, 1.0}:
            kind = "binary"
        elif all(v == round(v) for v in distinct) and len(distinct) <= max_integer_levels:
            kind = "integer"
        else:
            kind = "continuous"
        features.append(FeatureSpec(name, kind))
    return DatasetSchema(tuple(features), label)


def _read_arff(text: str) -> tuple[list[str], list[list[str]]]:
    """Attribute names and data rows of a dense ARFF file (numeric and nominal attributes only)."""
    names: list[str] = []
    rows: list[list[str]] = []
    in_data = False
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("%"):
            continue
        lowered = stripped.lower()
        if in_data:
            rows.append([cell.strip().strip("'\"") for cell in stripped.split(",")])
        elif lowered.startswith("@attribute"):
            names.append(stripped.split(None, 2)[1].strip("'\""))
        elif lowered.startswith("@data"):
            in_data = True
    return names, rows


WHAS500_SCHEMA = DatasetSchema(
    features=tuple(FeatureSpec(n, t, d, range=r) for n, t, d, r in WHAS500_FEATURES),
    label="death_1y",
    label_description="death within 365 days of the index myocardial infarction",
)


def load_whas500() -> Dataset:
    """WHAS500 from the ARFF file inside the scikit-survival wheel, labelled with one-year mortality."""
    try:
        resource = importlib.resources.files("sksurv.datasets").joinpath("data", "whas500.arff")
        text = resource.read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise RuntimeError("WHAS500 ships inside scikit-survival; install ciphercare with its scoring "
                           "dependencies (pip install -e .)") from exc
    names, rows = _read_arff(text)
    index = {n: i for i, n in enumerate(names)}
    kept: list[list[str]] = []
    labels: list[float] = []
    ids: list[str] = []
    for number, row in enumerate(rows):
        lenfol, fstat = float(row[index["lenfol"]]), int(float(row[index["fstat"]]))
        if fstat == 1 and lenfol <= 365:
            label = 1.0
        elif lenfol > 365:
            label = 0.0
        else:
            continue  # censored alive before one year: outcome unknown
        kept.append(row)
        labels.append(label)
        ids.append(f"whas-{number + 1:03d}")
    header = names
    x, _, _ = rows_to_matrix(WHAS500_SCHEMA, header, kept, require_label=False)
    return Dataset("whas500", WHAS500_SCHEMA, x, np.asarray(labels), ids,
                   source="scikit-survival: sksurv/datasets/data/whas500.arff",
                   citation="Hosmer DW, Lemeshow S, May S. Applied Survival Analysis: Regression Modeling of "
                            "Time to Event Data, 2nd ed. Wiley, 2008 (Worcester Heart Attack Study, WHAS500)")


def load_dataset(name: str = "whas500", *, csv_path: Path | None = None, schema_path: Path | None = None,
                 label: str = "", id_column: str | None = None) -> Dataset:
    """``whas500`` (default) or a user's CSV with its schema file (or a schema inferred around ``label``)."""
    if csv_path is not None:
        if schema_path is None:
            if not label:
                raise SchemaError("<schema>", "a CSV needs a schema file (--schema) or the label column (--label)")
            return load_csv(csv_path, infer_schema(csv_path, label, id_column=id_column))
        return load_csv(csv_path, DatasetSchema.load(schema_path))
    if name != "whas500":
        raise ValueError(f"unknown dataset {name!r}; the shipped dataset is 'whas500', or pass a CSV")
    return load_whas500()
