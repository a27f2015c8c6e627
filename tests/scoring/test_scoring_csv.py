"""Real CSVs: categorical text, missing values, grid resolution, leakage and margin checks (real encryption)."""

from __future__ import annotations

import csv
import functools
import re
from pathlib import Path

import grpc
import numpy as np
import pytest
from testkit.scoring import default_training, key_owner

from ciphercare.analytics.engine import score_batch
from ciphercare.analytics.model.datasets import SchemaError, load_csv, load_dataset, load_whas500
from ciphercare.analytics.model.package import ModelError, ModelPackage, TreeNode
from ciphercare.analytics.model.training import TrainingConfig, train_model
from ciphercare.services.cli.main import main

WARDS = ("cardiology", "general", "icu")


def _write_whas_csv(path: Path, rows: range, *, with_label: bool, missing_every: int = 6) -> None:
    """WHAS500 as a hospital exports it: gender as text, a three-valued ward, BMI sometimes missing."""
    data = load_whas500()
    names = list(data.schema.names)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["pid", *[("sex" if n == "gender" else n) for n in names], "ward",
                         *(["death_1y"] if with_label else [])])
        for i in rows:
            x = data.x[i]
            cells = []
            for n, v in zip(names, x, strict=True):
                if n == "gender":
                    cells.append("female" if v else "male")
                elif n == "bmi" and i % missing_every == 0:
                    cells.append("NA" if i % 12 == 0 else "")
                else:
                    cells.append(f"{v:g}")
            ward = WARDS[int(x[names.index("sho")] + x[names.index("chf")])]
            writer.writerow([f"pt-{i:04d}", *cells, ward, *([f"{data.y[i]:g}"] if with_label else [])])


@functools.cache
def _trained(tmp: str) -> tuple[ModelPackage, list[str]]:
    path = Path(tmp) / "train.csv"
    _write_whas_csv(path, range(0, 500), with_label=True)
    dataset = load_dataset(csv_path=path, label="death_1y", id_column="pid")
    result = train_model(dataset, TrainingConfig(n_trees=30))
    return result.package, result.warnings


def test_csv_with_categorical_and_missing_values_trains_and_scores_encrypted(tmp_path: Path) -> None:
    package, _ = _trained(str(tmp_path))
    specs = {s.name: s for s in package.schema.features}
    assert specs["sex"].type == "categorical" and specs["sex"].categories == ("female", "male")
    assert specs["ward"].categories == WARDS
    assert specs["bmi"].impute is not None and specs["age"].impute is None  # only features with missing cells
    assert specs["hr"].range is not None and specs["hr"].range[0] >= 0

    # The mapping and the imputation travel in the package: a reloaded package scores the same way.
    saved = tmp_path / "model.json"
    package.save(saved)
    package = ModelPackage.load(saved)
    scoring_csv = tmp_path / "score.csv"
    _write_whas_csv(scoring_csv, range(0, 60), with_label=False, missing_every=4)
    patients = load_csv(scoring_csv, package.schema, require_label=False, id_column="pid")
    assert np.all(np.isfinite(patients.x))
    assert patients.x[0, package.schema.names.index("bmi")] == specs["bmi"].impute

    plain = score_batch(package, patients.x, mode="plain")
    encrypted = score_batch(package, patients.x, mode="encrypted", keys=key_owner())
    assert np.max(np.abs(encrypted - plain)) <= 1e-3
    assert np.array_equal(encrypted > 0, plain > 0)


def test_scoring_csv_refuses_unknown_categories_and_implausible_values(tmp_path: Path) -> None:
    package, _ = _trained(str(tmp_path))
    bad = tmp_path / "bad.csv"
    _write_whas_csv(bad, range(0, 3), with_label=False)
    text = bad.read_text().replace(",icu\n", ",oncology\n", 1).replace(",cardiology\n", ",oncology\n", 1)
    bad.write_text(text)
    with pytest.raises(SchemaError, match="column 'ward': row 2: 'oncology' is not one of the model's categories"):
        load_csv(bad, package.schema, require_label=False, id_column="pid")

    whas = load_whas500().schema
    negative = tmp_path / "negative.csv"
    negative.write_text("pid," + ",".join(whas.names) + "\npt-1,70,0,-60,120,80,25,0,0,0,0,0,0,0,4\n")
    with pytest.raises(SchemaError, match=r"column 'hr': row 2: -60 is outside the plausible range 20\.\.250"):
        load_csv(negative, whas, require_label=False, id_column="pid")


def test_training_warns_of_collapsed_grids_and_leaking_columns(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    n = 400
    y = (rng.random(n) < 0.3).astype(int)
    sodium = np.round(rng.normal(140, 2.5, n))               # 131..149: two significant digits give 140 only
    temperature = np.round(rng.normal(37.0, 0.4, n), 1)      # 36.0..38.2
    flag = rng.integers(0, 2, n)
    cause = np.where(y == 1, rng.integers(1, 4, n), 0)       # recorded after the outcome: leaks the label
    path = tmp_path / "leaky.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sodium", "temperature", "flag", "cause", "died"])
        for row in zip(sodium, temperature, flag, cause, y, strict=True):
            writer.writerow([f"{v:g}" for v in row])
    result = train_model(load_dataset(csv_path=path, label="died"), TrainingConfig(n_trees=20))
    grid = dict(zip(result.package.grid.features, result.package.grid.edges, strict=True))
    assert len(grid["sodium"]) >= 5 and len(grid["temperature"]) >= 5  # resolution kept (was 1 and 3)
    assert any("held-out AUC" in w and "leak" in w for w in result.warnings)
    assert result.metrics["test_auc"] >= 0.99


def test_an_oversized_model_is_refused_at_training() -> None:
    with pytest.raises(ModelError, match="cannot serve this model: model margins can reach") as caught:
        train_model(load_whas500(), TrainingConfig(n_trees=2000, learning_rate=1.0, min_child_weight=1.0))
    assert "nothing was written" in str(caught.value)


def test_model_template_prints_the_scoring_header(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    package, _ = _trained(str(tmp_path))
    path = tmp_path / "model.json"
    package.save(path)
    assert main(["model", "template", "--path", str(path)]) == 0
    header, example = capsys.readouterr().out.strip().splitlines()
    assert header.split(",") == ["pid", *package.schema.names]
    cells = dict(zip(header.split(","), example.split(","), strict=True))
    assert cells["sex"] == "female" and cells["ward"] == "cardiology"
    example_csv = tmp_path / "example.csv"
    example_csv.write_text(f"{header}\n{example}\n")
    assert len(load_csv(example_csv, package.schema, require_label=False, id_column="pid")) == 1


def test_cli_train_on_a_csv_without_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "train.csv"
    _write_whas_csv(path, range(0, 500), with_label=True)
    out = tmp_path / "m.json"
    code = main(["model", "train", "--csv", str(path), "--label", "death_1y", "--id-column", "pid",
                 "--trees", "10", "--output", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "held-out AUC" in captured.out and out.exists()


def test_unservable_deployed_model_is_failed_precondition_without_statistics(tmp_path: Path) -> None:
    from testkit.server import ServerThread, make_settings

    from ciphercare.sdk.scoring import ScoringClient
    from ciphercare.services.identity.devissuer import DevIssuer

    base = default_training().package

    def scaled(node: TreeNode) -> TreeNode:
        if node.is_leaf:
            return TreeNode(value=node.value * 200.0)
        return TreeNode(edge=node.edge, left=scaled(node.left), right=scaled(node.right))  # type: ignore[arg-type]

    big = ModelPackage(base.name, "oversized", base.schema, base.grid, [scaled(t) for t in base.trees],
                       base.base_margin)
    data_dir = tmp_path / "server"
    big.save(data_dir / "scoring" / "model.json")
    settings = make_settings(data_dir)
    server = ServerThread(settings).start()
    try:
        token = DevIssuer.from_settings(settings).issue(subject="svc-hospital-a", roles=["hospital"],
                                                        org="hospital-a")
        client = ScoringClient.connect(server.target, token, deadline_s=60)
        try:
            with pytest.raises(grpc.RpcError) as caught:
                client.model_info()
        finally:
            client.close()
    finally:
        server.stop()
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    message = caught.value.details() or ""
    assert "cannot be served" in message and "retrain" in message
    assert not re.search(r"\d", message.replace("128-bit", ""))  # no model statistic in the message
