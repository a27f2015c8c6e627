"""Benchmark of unusual-access detection: explanation + features + detection time and memory by size.

``bench_anomaly(n)`` simulates a consortium of about ``n`` events (not timed), fits the detector on its
history and detects over its month (timed), and reports the figures. ``ciphercare bench anomaly``
prints them as a table (``--json`` writes them); 10^6 events is opt-in (``include_million``) so the CI
smoke stays small.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import resource
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ciphercare.analytics.anomaly.detector import AccessAnomalyDetector
from ciphercare.analytics.anomaly.explain import explain
from ciphercare.analytics.anomaly.features import window_features
from ciphercare.analytics.anomaly.simulate import SimConfig, simulate

QUICK_SIZES: tuple[int, ...] = (10**4, 10**5)
FULL_SIZES: tuple[int, ...] = (10**4, 10**5, 10**6)


def _peak_rss_mb() -> float:
    """The process's peak resident set size so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_anomaly(n_events: int, seed: int = 0) -> dict[str, Any]:
    """Time explanation + features, fitting and detection over a simulated log of about ``n_events`` events."""
    if n_events < 1000:
        raise ValueError("n_events must be >= 1000")
    began = time.perf_counter()
    sim = simulate(SimConfig.for_events(n_events, seed=seed))
    simulate_s = time.perf_counter() - began
    history = sim.history()
    month, _ = sim.month()
    gc.collect()

    began = time.perf_counter()
    explanation = explain(sim.events, sim.context)
    window_features(sim.events, explanation.basis, explanation.no_basis, break_glass=sim.context.break_glass)
    features_s = time.perf_counter() - began

    began = time.perf_counter()
    detector = AccessAnomalyDetector().fit(history, sim.context)
    fit_s = time.perf_counter() - began
    began = time.perf_counter()
    flags = detector.detect(month, sim.context)
    detect_s = time.perf_counter() - began
    return {
        "events": len(sim.events),
        "history_events": len(history),
        "month_events": len(month),
        "requesters": int(sim.events["requester"].nunique()),
        "simulate_s": simulate_s,
        "explain_features_s": features_s,
        "fit_s": fit_s,
        "detect_s": detect_s,
        "fit_detect_s": fit_s + detect_s,
        "events_per_s": len(sim.events) / (fit_s + detect_s),
        "flags": len(flags),
        "events_table_mb": float(sim.events.memory_usage(deep=True).sum()) / 2**20,
        "peak_rss_mb": _peak_rss_mb(),
    }


def rows(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Table rows (metric, value, target, met) in the shape ``ciphercare bench`` prints."""
    out: list[dict[str, Any]] = []
    for r in results:
        size = f"{r['events']:,} events"
        out.append({"metric": f"explain + features, {size}", "value": f"{r['explain_features_s']:.2f} s",
                    "target": "", "met": ""})
        out.append({"metric": f"fit on history + detect on month, {size}", "value": f"{r['fit_detect_s']:.2f} s "
                    f"({r['events_per_s']:,.0f} events/s)", "target": "", "met": ""})
        out.append({"metric": f"flags, {size}", "value": str(r["flags"]), "target": "", "met": ""})
        out.append({"metric": f"events table / process peak RSS, {size}",
                    "value": f"{r['events_table_mb']:.0f} MB / {r['peak_rss_mb']:.0f} MB", "target": "", "met": ""})
    return out


def table(table_rows: Sequence[dict[str, Any]]) -> str:
    headers = ("metric", "value", "target", "met")
    widths = [max([len(h)] + [len(str(r.get(h, ""))) for r in table_rows]) for h in headers]
    lines = [" | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)),
             "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(str(r.get(h, "")).ljust(w) for h, w in zip(headers, widths, strict=True)) for r in table_rows]
    return "\n".join(lines)


def run_anomaly_bench(*, quick: bool = False, include_million: bool = False, out: Path | None = None
                      ) -> list[dict[str, Any]]:
    """Run the sizes (10^4, 10^5; 10^6 with ``include_million``), print the table, optionally write JSON."""
    sizes = QUICK_SIZES[:1] if quick else (FULL_SIZES if include_million else QUICK_SIZES)
    results = [bench_anomaly(n) for n in sizes]
    table_rows = rows(results)
    print(table(table_rows))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({
            "benchmark": "anomaly",
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "rows": table_rows, "results": results,
        }, indent=2))
        print(f"\nwrote {out}")
    return table_rows
