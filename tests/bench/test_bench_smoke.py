"""Smoke run of every registered ``ciphercare bench <name>`` (issue 16 item 5): no timing assertions.

Each benchmark runs as the command a person types, at its smallest size (``--smoke``), with ``--json``;
it must exit 0, print no DEBUG (or INFO log) lines, write the headline figures docs/BENCHMARKS.md's table
is made of (figure, value, anchor measured in the same run, ratio, target, met), and never install or run
Concrete ML unless ``--concrete`` was given (HOME is a fresh directory, so its cache would appear there).
The list comes from the command line itself, so a benchmark registered by another room is smoked too.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from testkit import component_missing

from ciphercare.services.bench.figures import FIGURE_KEYS
from ciphercare.services.bench.runner import ghz_binary
from ciphercare.services.cli.main import build_parser

CLI = [sys.executable, "-m", "ciphercare.services.cli.main"]
#: The benchmarks issue 16 asks for (``audit`` is registered by the compliance room; smoked once it is).
REQUIRED = {"ledger", "check", "scoring", "scoring-e2e", "growth", "anomaly", "auth", "audit"}
#: Benchmarks whose figures have no anchor in the same run (ratio None is then expected).
ANCHORLESS = {"anomaly"}
#: Variants of a registered benchmark run by a flag, smoked as well (``ledger --gateway`` has its own smoke in
#: tests/fabric/test_fabric_bench.py).
VARIANTS = [("ledger", "--witness")]
LOG_LINE = re.compile(r"(^|\s)(DEBUG|INFO)(\s|$)", re.MULTILINE)


def _bench_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser: argparse.ArgumentParser = sub.choices["bench"]
    return parser


def registered() -> list[str]:
    which = next(a for a in _bench_parser()._actions if a.dest == "which")
    assert which.choices is not None
    return list(which.choices)


def test_every_benchmark_is_registered_and_listed_in_the_help() -> None:
    names = registered()
    assert REQUIRED <= set(names), sorted(REQUIRED - set(names))
    shown = subprocess.run([*CLI, "bench", "--help"], capture_output=True, text=True, timeout=60, check=True).stdout
    for name in names:
        assert re.search(rf"^\s+{re.escape(name)}\s+\S", shown, re.MULTILINE), name  # one described line each
    args = _bench_parser().parse_args(["scoring"])
    assert args.concrete is False and args.smoke is False  # Concrete ML only when asked for


def _extra_checks(name: str, report: dict[str, Any]) -> None:
    """What each benchmark must have measured (not how fast)."""
    if name == "check":
        runs = report["runs"]
        assert [r["processes"] for r in runs] == [1, 2]
        for run in runs:
            assert run["server_processes_measured"] == run["processes"]  # the writer and its replicas
            for call in ("check", "health"):
                assert run[call]["status_codes"].get("OK", 0) > 0 and run[call]["errors"] == 0
                assert set(run[call]["status_codes"]) <= {"OK", "Unavailable"}  # Unavailable: ghz stopping
            assert run["check_server_cpu_us"] > 0 and run["health_server_cpu_us"] > 0
            assert run["check_cpu_split_us"]["main_user"] > 0 and run["health_cpu_split_us"]["main_user"] > 0
        # TLS beside plaintext (issue 14): with 1 process, a certificate made in the run, checked by ghz
        secure = runs[0]["with_tls"]
        assert secure is not None and secure["tls"] and runs[1]["with_tls"] is None and not runs[0]["tls"]
        assert secure["server_processes_measured"] == 1
        for call in ("check", "health"):
            assert secure[call]["status_codes"].get("OK", 0) > 0 and secure[call]["errors"] == 0
        (summary,) = report["tls_vs_plaintext"]
        assert summary["processes"] == 1 and summary["tls_rps"] == secure["check"]["rps"]
        assert summary["rps_ratio_tls_to_plaintext"] == summary["tls_rps"] / summary["plaintext_rps"]
        assert summary["p99_ratio_tls_to_plaintext"] == summary["tls_p99_ms"] / summary["plaintext_p99_ms"]
    elif name == "ledger --witness":
        assert report["benchmark"] == "ledger-witness" and len(report["figures"]) == 2
    elif name == "ledger":
        metrics = [r["metric"] for r in report["rows"]]
        assert metrics[0].startswith("physical limit") and any(m.startswith("curve:") for m in metrics)
        check = report["check_rps_raw"]
        assert check["load_generator"] == "ghz" and check["check"]["count"] > 0 and check["health"]["count"] > 0
        assert check["check"]["errors"] == 0, check["check"]["status_codes"]
    elif name == "scoring":
        assert all(r["agreement"] in (None, 1.0) for r in report["rows"])  # decrypted decisions agree
    elif name == "scoring-e2e":
        assert report["raw"]["max_abs_margin_error"]["full"] < 1e-3
    elif name == "growth":
        assert len(report["rows"]) == 2 and report["rows"][1]["entries"] > report["rows"][0]["entries"] >= 1000
    elif name == "auth":
        assert report["result"]["jwks_fetches"] == 1  # no network on the hot path


@pytest.mark.parametrize(("name", "flags"), [pytest.param(name, (), id=name) for name in registered()]
                         + [pytest.param(n, (f,), id=f"{n}{f}") for n, f in VARIANTS])
def test_bench_smoke(name: str, flags: tuple[str, ...], tmp_path: Path) -> None:
    if name in ("check", "ledger") and not flags and ghz_binary() is None:
        message = "ghz not installed (go install github.com/bojand/ghz/cmd/ghz@v0.121.0; or set GHZ_BIN)"
        component_missing(message)
    home = tmp_path / "home"
    home.mkdir()
    out = tmp_path / f"{name}.json"
    env = dict(os.environ, HOME=str(home), CIPHERCARE_DATA_DIR=str(tmp_path / "data"))
    proc = subprocess.run([*CLI, "bench", name, *flags, "--smoke", "--json", str(out)], capture_output=True, text=True,
                          timeout=240, check=False, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-1500:] + proc.stderr[-2500:]
    for stream in (proc.stdout, proc.stderr):
        assert not LOG_LINE.search(stream), LOG_LINE.search(stream)
    report = json.loads(out.read_text())
    assert report["options"] == {"quick": False, "smoke": True, "concrete_ml": False}
    figures = report["figures"]
    assert figures, "no headline figures in the report"
    for row in figures:
        assert set(FIGURE_KEYS) <= set(row), row
        assert isinstance(row["figure"], str) and row["figure"]
        assert row["anchor"] is None or isinstance(row["anchor"], str)
        if row["anchor_value"] and row["value"] is not None:
            assert row["ratio"] == pytest.approx(row["value"] / row["anchor_value"])
    if name not in ANCHORLESS:
        assert any(row["anchor"] and row["ratio"] is not None for row in figures), figures
    # Concrete ML was neither installed nor run (its virtualenv lives under HOME's cache).
    assert not (home / ".cache" / "ciphercare" / "concrete-venv").exists()
    assert "Concrete ML 1" not in proc.stdout and "concrete_ml" not in report.get("raw", {})
    _extra_checks(" ".join((name, *flags)), report)
