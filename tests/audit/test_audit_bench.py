"""The audit benchmark's smoke size: every figure present, the export complete (no timing assertions)."""

from __future__ import annotations

import json
from pathlib import Path

from ciphercare.services.bench.audit import bench_audit, run_audit_bench, table


def test_bench_audit_reports_every_figure_and_a_complete_export(tmp_path: Path) -> None:
    report = bench_audit(2000, repeats=2)
    assert report["rows"] == 2000 and report["database"] == "sqlite"
    names = [row["what"] for row in report["results"]]
    assert "search: first page, organisation" in names and "deep page (cursor), organisation" in " ".join(names)
    assert any(name.startswith("anchor:") for name in names) and report["anchor_pages_to_reach_newest"] == 20
    assert all(row["p95_ms"] >= row["p50_ms"] > 0 for row in report["results"])
    assert report["export"]["rows"] == 2000 and report["export"]["complete"] is True
    assert "rows/s" in table(report)


def test_run_writes_the_json_report(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "audit.json"
    rows = run_audit_bench(quick=True, out=out)
    written = json.loads(out.read_text())
    assert written["rows"] == 10**4 and written["results"] == rows and written["flags"]["history_events"] > 0
    assert "audit reads at 10,000 events" in capsys.readouterr().out


def test_ciphercare_bench_audit_is_a_registered_command(tmp_path: Path) -> None:
    """`ciphercare bench audit --quick --events N --json FILE`: the table on stdout, the figures in FILE."""
    import subprocess

    from testkit.process import CLI

    out = tmp_path / "bench" / "audit.json"
    result = subprocess.run([*CLI, "bench", "audit", "--quick", "--events", "2000", "--json", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # the table only: no library logging
    assert "audit reads at 2,000 events" in result.stdout and "search: first page, organisation" in result.stdout
    written = json.loads(out.read_text())
    assert written["rows"] == 2000 and written["export"] == {**written["export"], "rows": 2000, "complete": True}
    assert {row["what"] for row in written["results"]} >= {"search: first page, no filter",
                                                          "search: deep page (cursor), organisation"}
    assert all(row["p95_ms"] >= row["p50_ms"] > 0 for row in written["results"])
    assert written["flags"]["history_events"] > 0

    refused = subprocess.run([*CLI, "bench", "audit", "--events", "0"], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and refused.stderr.strip() == "ciphercare: --events must be at least 1"
