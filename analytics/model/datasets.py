"""Clinical datasets for risk scoring: one shipped inside a package, or a user's CSV with a declared schema.

Nothing is downloaded at run time. The default, WHAS500 (Worcester Heart Attack Study, 500 patients,
Hosmer, Lemeshow & May, *Applied Survival Analysis*, 2nd ed., Wiley 2008), is read from the ARFF file
that scikit-survival ships inside its wheel (``sksurv/datasets/data/whas500.arff``); sksurv itself is
not imported. The label is one-year mortality after the myocardial infarction: 1 if the patient died
within 365 days (``fstat == 1`` and ``lenfol <= 365``), 0 if followed for more than 365 days; patients
censored alive before day 365 have no label and are left out.

A user's CSV comes with a schema (JSON): feature names, their type (``continuous``, ``binary`` or
``integer``) and the label column. Every problem is one :class:`SchemaError` naming the column.
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

FEATURE_TYPES = ("continuous", "binary", "integer")

WHAS500_FEATURES: tuple[tuple[str, str, str], ...] = (
    ("age", "continuous", "age at hospital admission (years)"),
    ("gender", "binary", "gender (0 male, 1 female)"),
    ("hr", "continuous", "initial heart rate (beats per minute)"),
    ("sysbp", "continuous", "initial systolic blood pressure (mmHg)"),
    ("diasbp", "continuous", "initial diastolic blood pressure (mmHg)"),
    ("bmi", "continuous", "body mass index (kg/m^2)"),
    ("cvd", "binary", "history of cardiovascular disease"),
    ("afb", "binary", "atrial fibrillation"),
    ("sho", "binary", "cardiogenic shock"),
    ("chf", "binary", "congestive heart complications"),
    ("av3", "binary", "complete heart block"),
    ("miord", "binary", "MI order (0 first, 1 recurrent)"),
    ("mitype", "binary", "MI type (0 non Q-wave, 1 Q-wave)"),
    ("los", "continuous", "length of hospital stay (days)"),
)


class SchemaError(ValueError):
    """The data does not match its declared schema; the message names the column."""

    def __init__(self, column: str, message: str) -> None:
        super().__init__(f"column {column!r}: {message}")
        self.column = column


@dataclass(frozen=True)
class FeatureSpec:
    """One model input: its name (the CSV column), its type and a human description."""

    name: str
    type: str
    description: str = ""

    def __post_init__(self) -> None:
        if self.type not in FEATURE_TYPES:
            raise SchemaError(self.name, f"type must be one of {', '.join(FEATURE_TYPES)}, not {self.type!r}")
        if not self.name or not self.name.strip():
            raise SchemaError(self.name, "a feature needs a non-empty name")

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "type": self.type, "description": self.description}


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
        features = []
        for i, item in enumerate(raw):
            if isinstance(item, str):
                item = {"name": item, "type": "continuous"}
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise SchemaError(f"<feature {i}>", "must be an object with a 'name'")
            features.append(FeatureSpec(item["name"], str(item.get("type", "continuous")),
                                        str(item.get("description", ""))))
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


def _parse_number(column: str, value: str, row: int, spec: FeatureSpec | None) -> float:
    text = value.strip()
    if text == "" or text == "?" or text.lower() in ("na", "nan", "null"):
        raise SchemaError(column, f"row {row}: missing value (encrypted scoring needs every feature)")
    try:
        number = float(text)
    except ValueError:
        raise SchemaError(column, f"row {row}: {text!r} is not a number") from None
    if not math.isfinite(number):
        raise SchemaError(column, f"row {row}: {text!r} is not a finite number")
    if spec is not None and spec.type == "binary" and number not in (0.0, 1.0):
        raise SchemaError(column, f"row {row}: {text!r} is not 0 or 1 (declared binary)")
    if spec is not None and spec.type == "integer" and number != round(number):
        raise SchemaError(column, f"row {row}: {text!r} is not an integer (declared integer)")
    return number


def rows_to_matrix(schema: DatasetSchema, header: Sequence[str], rows: Iterable[Sequence[str]],
                   *, require_label: bool, id_column: str | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
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
        xs.append([_parse_number(s.name, row[index[s.name]], number, s) for s in schema.features])
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


def load_csv(path: Path, schema: DatasetSchema, *, require_label: bool = True,
             id_column: str | None = None) -> Dataset:
    """A user's CSV (header row; comma separated) validated against ``schema``."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise SchemaError("<header>", f"{path} is empty") from None
        x, y, ids = rows_to_matrix(schema, header, reader, require_label=require_label, id_column=id_column)
    return Dataset(path.stem, schema, x, y, ids, source=str(path))


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
    features=tuple(FeatureSpec(n, t, d) for n, t, d in WHAS500_FEATURES),
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


def load_dataset(name: str = "whas500", *, csv_path: Path | None = None,
                 schema_path: Path | None = None) -> Dataset:
    """``whas500`` (default) or a user's CSV with its schema file."""
    if csv_path is not None:
        if schema_path is None:
            raise SchemaError("<schema>", "a CSV needs a schema file (--schema) declaring features and label")
        return load_csv(csv_path, DatasetSchema.load(schema_path))
    if name != "whas500":
        raise ValueError(f"unknown dataset {name!r}; the shipped dataset is 'whas500', or pass a CSV")
    return load_whas500()
