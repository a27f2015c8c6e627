"""The headline figures of each ``ciphercare bench`` report, each beside its anchor from the same run.

``ciphercare bench <name> --json FILE`` writes the benchmark's own report and, under ``"figures"``, the
rows docs/BENCHMARKS.md's "Targets at a glance" table is made of: what was measured (``figure``,
``value``, ``unit``), the anchor measured in the same run (``anchor``, ``anchor_value``; the physical
limit, the gRPC Health floor, the HE pipeline alone, the smallest size ...), their ``ratio``
(value / anchor_value), the ``target`` if the issue set one and whether it is ``met``. A benchmark with
no meaningful anchor says so (``anchor`` None, ``ratio`` None).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: The keys of every figure (the smoke test and the docs table rely on them).
FIGURE_KEYS = ("figure", "value", "unit", "anchor", "anchor_value", "ratio", "target", "met")


def figure(name: str, value: float | None, unit: str, anchor: str | None = None, anchor_value: float | None = None,
           target: str = "", met: bool | None = None) -> dict[str, Any]:
    """One row: ``ratio`` is value / anchor_value when both were measured."""
    ratio = value / anchor_value if value is not None and anchor_value else None
    return {"figure": name, "value": value, "unit": unit, "anchor": anchor, "anchor_value": anchor_value,
            "ratio": ratio, "target": target, "met": met}


def _ledger(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = report["rows"]
    raw = rows[0]
    limit = max(raw["raw_before"]["rows_per_s"], raw["raw_after"]["rows_per_s"])
    anchor = "raw batched SQLite inserts, WAL + synchronous=FULL (rows/s, the larger of before / after)"
    points = [r["curve_point"] for r in rows if "curve_point" in r]
    out = []
    if points:
        peak = max(points, key=lambda p: p["tx_per_s"])
        within = [p for p in points if p["p99_ms"] <= 20.0]
        best = max(within, key=lambda p: p["tx_per_s"]) if within else None
        out.append(figure(f"peak durable tx/s ({peak['in_flight']} in flight, p99 {peak['p99_ms']:.1f} ms)",
                          peak["tx_per_s"], "tx/s", anchor, limit, ">= 20,000", peak["tx_per_s"] >= 20_000
                          and peak["p99_ms"] <= 20.0))
        out.append(figure("durable tx/s, best point with commit p99 <= 20 ms"
                          + (f" ({best['in_flight']} in flight)" if best else " (none)"),
                          best["tx_per_s"] if best else None, "tx/s", anchor, limit, ">= 20,000, p99 <= 20 ms",
                          bool(best and best["tx_per_s"] >= 20_000)))
    check = report.get("check_rps_raw") or {}
    if "health" in check and isinstance(check.get("check"), dict):
        out.append(_check_figure(check, "1 server process"))
    return out


def _witness(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = report["rows"]
    base = next((r for r in rows if str(r["metric"]).startswith("appends/s, no witness")), None)
    if base is None:
        return []
    return [figure(str(r["metric"]), r["raw"], "appends/s", str(base["metric"]), base["raw"])
            for r in rows if str(r["metric"]).startswith("appends/s") and r is not base and "raw" in r]


def _check_figure(run: dict[str, Any], label: str) -> dict[str, Any]:
    check, health = run["check"], run["health"]
    return figure(f"Check RPS, {label} (p99 {check['p99_ms']:.1f} ms, "
                  f"{run.get('check_server_cpu_us', 0):.0f} us server CPU per call)",
                  check["rps"], "RPS", "gRPC Health/Check floor, same processes, same load (RPS)", health["rps"],
                  ">= 3,000 RPS, p99 <= 10 ms", check["rps"] >= 3000 and check["p99_ms"] <= 10.0)


def _check(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [_check_figure(run, f"{run['processes']} process(es)") for run in report["runs"]]


def _scoring(report: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    if report.get("benchmark") == "scoring-server":
        by = {("with" if "with slot" in r["system"] else "without" if "without" in r["system"] else "small"): r
              for r in report["rows"]}
        if "with" in by and "without" in by:
            out.append(figure("server throughput, full batches, with slot ownership and validity checks",
                              by["with"]["patients_per_s"], "patients/s",
                              "the same batches without the checks (patients/s)", by["without"]["patients_per_s"],
                              ">= 10,000 patients/s", by["with"]["patients_per_s"] >= 10_000))
        return out
    for row in report.get("targets", []):
        out.append(figure(str(row["metric"]), _number(row["value"]), "", None, None, str(row["target"]),
                          bool(row["met"]) if row["met"] is not None else None))
    concrete = next((r for r in report.get("rows", []) if str(r.get("system", "")).startswith("Concrete ML")), None)
    single = next((f for f in out if f["figure"].startswith("single patient")), None)
    if concrete is not None and single is not None:  # only when asked for (--concrete)
        single.update(figure(single["figure"], single["value"], "s", "Concrete ML, same trees and depth, one patient "
                             "end to end (s)", concrete["single_patient_s"], single["target"], single["met"]))
    return out


def _scoring_e2e(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [figure(r["figure"], r["service"] if r["service"] is not None else r["pipeline_alone"], "",
                   "the HE pipeline alone, same process, same run" if r["service"] is not None else None,
                   r["pipeline_alone"] if r["service"] is not None else None, str(r.get("target", "")), r.get("met"))
            for r in report["rows"]]


def _growth(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = report["rows"]
    first, last = rows[0], rows[-1]
    out = []
    for key, label, unit in (("append_p50_ms", "append latency p50", "ms"),
                             ("inclusion_proof_us", "inclusion proof", "us"),
                             ("startup_s", "start-up time", "s"),
                             ("rss_after_open_mb", "RSS after opening", "MB"),
                             ("by_patient_ms", "access-event search by patient", "ms")):
        if key in first and key in last:
            out.append(figure(f"{label} at {last['entries']:,} entries", last[key], unit,
                              f"the same at {first['entries']:,} entries", first[key]))
    return out


def _anomaly(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [figure(f"fit on history + detect, {r['events']:,} events", r["events_per_s"], "events/s")
            for r in report.get("results", [])]


def _auth(report: dict[str, Any]) -> list[dict[str, Any]]:
    r = report["result"]
    return [figure("bearer-token verification p50, warm JWKS cache", r["p50_us"], "us",
                   "the token's RS256 signature check alone, same key (p50 us)", r.get("signature_p50_us"),
                   "<= 200 us, no network", r["p50_us"] <= 200 and r["jwks_fetches"] == 1)]


def _audit(report: dict[str, Any]) -> list[dict[str, Any]]:
    results = report.get("results", [])
    anchor = next((r for r in results if str(r["what"]).startswith("anchor:")), None)
    return [figure(f"{r['what']} p95 at {report['rows']:,} events", r["p95_ms"], "ms",
                   f"{anchor['what'][len('anchor: '):]} p95" if anchor else None, anchor["p95_ms"] if anchor else None,
                   f"<= {r['target_p95_ms']} ms", r.get("met"))
            for r in results if r.get("target_p95_ms") is not None]


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value).replace(",", "").split()[0])
    except (ValueError, IndexError):
        return None


FIGURES: dict[str, Callable[[dict[str, Any]], list[dict[str, Any]]]] = {
    "ledger": _ledger, "ledger-witness": _witness, "check": _check, "scoring": _scoring, "scoring-server": _scoring,
    "scoring-e2e": _scoring_e2e, "growth": _growth, "anomaly": _anomaly, "auth": _auth, "audit": _audit,
}


def figures_for(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The headline figures of a JSON report, by its ``benchmark`` (empty for one without a summary)."""
    make = FIGURES.get(str(report.get("benchmark")))
    return make(report) if make is not None else []


def markdown_table(reports: list[tuple[str, dict[str, Any]]]) -> str:
    """Every report's figures as one Markdown table (what ``scripts/bench`` prints at the end of a run)."""

    def num(value: Any) -> str:
        if value is None:
            return "—"
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"

    lines = ["| benchmark | figure | measured | anchor (same run) | ratio | target | met |",
             "|---|---|---|---|---|---|---|"]
    for name, report in reports:
        for f in report.get("figures") or figures_for(report):
            anchor = f"{f['anchor']}: {num(f['anchor_value'])}" if f["anchor"] else "—"
            met = {True: "yes", False: "**no**", None: ""}[f["met"]]
            lines.append(f"| {name} | {f['figure']} | {num(f['value'])} {f['unit']} | {anchor} | "
                         f"{num(f['ratio'])} | {f['target']} | {met} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m ciphercare.services.bench.figures FILE.json ...``: the figures of those reports as a table."""
    import json
    import sys
    from pathlib import Path

    paths = [Path(p) for p in (sys.argv[1:] if argv is None else argv)]
    reports = []
    for path in paths:
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            print(f"figures: cannot read {path}: {exc}", file=sys.stderr)
            return 1
        if isinstance(report, dict):
            reports.append((path.stem, report))
    print(markdown_table(reports))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
