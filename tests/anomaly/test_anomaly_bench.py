"""The benchmark entry runs at the smallest size and reports every figure (no timing assertions)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ciphercare.analytics.anomaly.bench import bench_anomaly, rows, run_anomaly_bench, table


def test_bench_reports_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = bench_anomaly(10**4)
    assert 5_000 <= result["events"] <= 20_000
    assert result["history_events"] + result["month_events"] == result["events"]
    for key in ("explain_features_s", "fit_s", "detect_s", "events_per_s", "events_table_mb", "peak_rss_mb"):
        assert result[key] > 0, key
    printed = table(rows([result]))
    assert f"{result['events']:,} events" in printed and "events/s" in printed
    out = tmp_path / "anomaly.json"
    run_anomaly_bench(quick=True, out=out)
    written = json.loads(out.read_text())
    assert written["benchmark"] == "anomaly" and len(written["results"]) == 1
    assert "fit on history + detect on month" in capsys.readouterr().out
    with pytest.raises(ValueError, match="n_events"):
        bench_anomaly(10)
