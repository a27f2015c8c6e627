"""Smoke run of ``ciphercare bench ledger``'s ledger part: it runs, and the table holds what it must.

No timing assertions: the figures live in docs/BENCHMARKS.md, this only checks that the benchmark
measures what it claims (anchor, curve points with committed transactions, the real contract, stages).
The command itself (``ciphercare bench ledger --smoke --json``, ghz included) is smoked in tests/bench/.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from ciphercare.ledger.embedded.bench import format_rows, run_ledger_bench


def test_quick_ledger_bench_reports_anchor_curve_and_stages(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    rows = run_ledger_bench(sizes=(10**4,), out_dir=tmp_path, quick=True, duration_s=0.2, in_flights=(1, 8))
    metrics = [r["metric"] for r in rows]
    assert metrics[0].startswith("physical limit")
    assert rows[0]["raw_before"]["rows_per_s"] > 0 and rows[0]["raw_after"]["commits"] > 0
    points = [r["curve_point"] for r in rows if "curve_point" in r]
    assert [p["in_flight"] for p in points] == [1, 8]
    assert all(p["committed"] > 0 and p["p99_ms"] >= p["p50_ms"] > 0 for p in points)
    versus = next(r["versus"] for r in rows if "versus" in r)
    assert versus["in_flight"] == 8 and len(versus["runs"]["before"]) == len(versus["runs"]["after"]) == 3
    assert all(p["committed"] > 0 for p in versus["runs"]["before"] + versus["runs"]["after"])
    record = next(r["record"] for r in rows if "record" in r)
    assert record["committed"] > 0 and record["in_flight"] == 8
    stages = next(r["stages"] for r in rows if "stages" in r)
    assert stages["execute_direct_us"] > 0 and stages["execute_dispatcher_us"] > 0 and stages["leaf_bytes"] > 100
    assert any(m.startswith("durable tx/s") for m in metrics) and any("peak" in m for m in metrics)
    assert any("inclusion proof size" in m for m in metrics)
    json.dumps(rows)  # --json writes these rows as they are
    assert "curve:" in format_rows(rows)
    assert not [r for r in caplog.records if r.name.startswith("ciphercare") and r.levelno < logging.WARNING]

