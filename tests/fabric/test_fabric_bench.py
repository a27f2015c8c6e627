"""``ciphercare bench ledger --gateway`` runs end to end (a smoke run; the figures live in docs/BENCHMARKS.md)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from testkit.process import CLI


def test_gateway_bench_reports_both_paths_and_ratios(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [*CLI, "bench", "ledger", "--gateway", "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())
    metrics = [r["metric"] for r in rows]
    assert len(rows) == 9 and sum("via Fabric Gateway protocol" in m for m in metrics) == 2
    assert sum(m.startswith("ConsentService/Check RPS") for m in metrics) == 3
    for row in rows:
        assert float(row["value"]) > 0, row
    assert "gateway / in-process" in proc.stdout
