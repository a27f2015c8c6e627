"""`ciphercare model train` and `ciphercare score` end to end (real server, real keys)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from testkit.scoring import default_training, deploy_default, grant

from ciphercare.analytics.model.package import ModelPackage
from ciphercare.services.cli.main import main


@pytest.fixture(scope="module")
def deployed(env):  # type: ignore[no-untyped-def]  # type: ignore[no-untyped-def]
    """The server, with the default model where it reads it (what `ciphercare up` does; the service never trains)."""
    deploy_default(env.settings)
    return env


def test_model_train_reports_held_out_metrics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "model.json"
    code = main(["model", "train", "--trees", "8", "--depth", "2", "--output", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    assert "held-out AUC" in text and "calibration" in text
    package = ModelPackage.load(out)
    assert f"sha256 {package.sha256}" in text
    assert len(package.trees) == 8 and package.max_depth <= 2


def test_model_train_refuses_depth_beyond_the_encrypted_limit(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", "train", "--depth", "4", "--output", "/dev/null"]) == 1
    assert "max_depth must be in 1..3" in capsys.readouterr().err


def _write_patients(path: Path, pids: list[str], drop: str | None = None) -> None:
    package = default_training().package
    names = [n for n in package.schema.names if n != drop]
    rows = default_training().test.x[:len(pids)]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["pid", *names])
        for pid, row in zip(pids, rows, strict=True):
            writer.writerow([pid, *[f"{v:g}" for n, v in zip(package.schema.names, row, strict=True) if n != drop]])


def test_score_command_writes_probabilities(deployed, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    env = deployed
    pids = ["pt-cli-1", "pt-cli-2", "pt-cli-3"]
    grant(env, pids[0])
    grant(env, pids[2])
    patients, risks = tmp_path / "patients.csv", tmp_path / "risks.csv"
    _write_patients(patients, pids)
    token = env.token("hospital", org="hospital-a", subject="svc-hospital-a")
    keys = tmp_path / "keys" / "hospital-a.tenseal"
    args = ["score", "--input", str(patients), "--output", str(risks), "--target", env.server.target,
            "--token", token, "--keys", str(keys), "--quiet"]
    assert main(args) == 0, capsys.readouterr().err
    assert keys.stat().st_mode & 0o777 == 0o600
    with risks.open() as handle:
        rows = {r["pid"]: r for r in csv.DictReader(handle)}
    expected = default_training().xgboost_margin(default_training().test.x[:3])
    assert rows["pt-cli-2"]["status"] == "denied" and rows["pt-cli-2"]["probability"] == ""
    for i in (0, 2):
        assert rows[pids[i]]["status"] == "scored"
        assert abs(float(rows[pids[i]]["margin"]) - expected[i]) <= 1e-3
        assert 0 < float(rows[pids[i]]["probability"]) < 1
        assert rows[pids[i]]["access_event_id"].startswith("ae-")
    assert "2 scored" not in capsys.readouterr().err


def test_score_schema_mismatch_is_one_readable_error(deployed, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    env = deployed
    patients = tmp_path / "patients.csv"
    _write_patients(patients, ["pt-cli-9"], drop="hr")
    token = env.token("hospital", org="hospital-a", subject="svc-hospital-a")
    code = main(["score", "--input", str(patients), "--output", str(tmp_path / "out.csv"), "--target",
                 env.server.target, "--token", token, "--keys", str(tmp_path / "k.tenseal"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert len(err.splitlines()) == 1
    assert "column 'hr'" in err and "missing from the CSV header" in err
