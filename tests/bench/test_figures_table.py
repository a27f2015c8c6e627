"""The table ``scripts/bench`` prints at the end of a run: every figure beside its anchor, missed targets marked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ciphercare.services.bench.figures import figure, main


def test_the_table_shows_each_figure_beside_its_anchor_and_marks_a_miss(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    report = {"benchmark": "check", "figures": [
        figure("Check RPS, 2 processes", 2206.0, "RPS", "gRPC Health floor", 4328.0, ">= 3,000", False),
        figure("witness lag", 0.0, "entries"),
    ]}
    path = tmp_path / "check.json"
    path.write_text(json.dumps(report))
    assert main([str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| benchmark | figure | measured | anchor")
    row = "| check | Check RPS, 2 processes | 2,206 RPS | gRPC Health floor: 4,328 | 0.51 | >= 3,000 | **no** |"
    assert row in lines
    assert "| check | witness lag | 0 entries | — | — |  |  |" in lines


def test_an_unreadable_report_is_one_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "missing.json")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("figures: cannot read")
