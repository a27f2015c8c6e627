"""Smoke run of ``ciphercare bench check --quick``: Check and the Health floor under ghz with 1 and 2 server
processes, and with 1 process over TLS beside plaintext (a certificate made in the run, checked by ghz).
No timing assertions: the figures live in docs/BENCHMARKS.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ciphercare.services.bench.runner import ghz_binary


def test_bench_check_quick_measures_check_and_the_floor_with_one_and_two_processes(tmp_path: Path) -> None:
    if ghz_binary() is None:
        message = "ghz not installed (go install github.com/bojand/ghz/cmd/ghz@v0.121.0; or set GHZ_BIN)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    out = tmp_path / "check.json"
    proc = subprocess.run([sys.executable, "-m", "ciphercare.services.cli.main", "bench", "check", "--quick",
                           "--json", str(out)], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Health floor" in proc.stdout and " DEBUG " not in proc.stdout + proc.stderr
    assert "TLS / plaintext" in proc.stdout
    report = json.loads(out.read_text())
    runs = report["runs"]
    assert [r["processes"] for r in runs] == [1, 2]
    secure = runs[0]["with_tls"]
    assert secure is not None and secure["tls"] and runs[1]["with_tls"] is None  # quick: TLS with 1 process
    assert not runs[0]["tls"]  # the plaintext run beside it
    (summary,) = report["tls_vs_plaintext"]
    assert summary["processes"] == 1 and summary["tls_rps"] == secure["check"]["rps"]
    assert summary["rps_ratio_tls_to_plaintext"] == summary["tls_rps"] / summary["plaintext_rps"]
    assert summary["p99_ratio_tls_to_plaintext"] == summary["tls_p99_ms"] / summary["plaintext_p99_ms"]
    for run in [*runs, secure]:
        # Every process of the server was measured (the writer and its replicas), and every call answered.
        assert run["server_processes_measured"] == run["processes"]
        for name in ("check", "health"):
            assert run[name]["status_codes"].get("OK", 0) > 0 and run[name]["errors"] == 0
            assert set(run[name]["status_codes"]) <= {"OK", "Unavailable"}  # Unavailable: ghz stopping
        assert run["check_server_cpu_us"] > 0 and run["health_server_cpu_us"] > 0
