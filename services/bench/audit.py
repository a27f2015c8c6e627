"""``ciphercare bench audit``: the compliance reads at scale (issue 15, item 5).

Fills the ``access_events`` projection with synthetic rows inserted directly through the store (SQLite by
default, PostgreSQL by URL), then measures what an officer does through ``AccessEventQueries``:

- search, newest first: the first page unfiltered, the first page filtered (organisation; outcome denied;
  a patient), and a deep page (reached by its cursor, as the console and CLI do);
- aggregates over the whole filtered set (counts by outcome, day, organisation);
- a full export streamed (CSV through the same converter the service uses): rows/s and peak memory.

Target (issue 15): search p95 <= 200 ms at 10^6 events. ``--quick`` uses 10^4 rows for a CI smoke run;
``--events N`` sets the size; ``--database-url`` fills an empty PostgreSQL store instead of a temporary SQLite
file. Registered as ``ciphercare bench audit`` (``services/bench/runner.py``) through :func:`run_audit_bench`.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import random
import resource
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from ciphercare.consent import canonical
from ciphercare.services.store import AccessEventIndex, AccessQuery, OffchainStore
from ciphercare.services.store.audit_queries import AccessEventQueries
from ciphercare.services.store.models import AccessEventRow

FULL_ROWS = 10**6
QUICK_ROWS = 10**4
#: ListFlags is measured on a simulated consortium of this size (the detector's own benchmark covers 10^6).
FLAG_ROWS = 10**5
TARGET_P95_MS = 200.0
ORGS = ("hospital-a", "hospital-b", "hospital-c", "research-d")
PURPOSES = ("TREAT", "TREAT", "TREAT", "ETREAT", "CAREMGT", "HRESCH", "HPAYMT")
SUBTYPES = ("read", "read", "search-type", "score")
_START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def synthetic_event(seq: int, recorded_ms: int, rng: random.Random, *, pid: str | None = None,
                    org: str | None = None, subject: str | None = None, outcome: str | None = None,
                    purpose: str | None = None) -> AccessEventIndex:
    """One ledger-shaped access event (codes and pseudonyms only) as a projection row."""
    org = org or rng.choice(ORGS)
    subject = subject or f"{org}-clin-{rng.randrange(200):03d}"
    pid = pid or f"pt-{rng.randrange(200_000):06d}"
    outcome = outcome or ("denied" if rng.random() < 0.07 else "success")
    purpose = purpose or rng.choice(PURPOSES)
    event_id = f"ev-{seq:012d}"
    recorded = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(recorded_ms // 1000)) + f".{recorded_ms % 1000:03d}Z"
    event = {
        "id": event_id, "type": "110110", "subtype": rng.choice(SUBTYPES), "action": "R", "recorded": recorded,
        "outcome": outcome, "purpose_of_use": purpose,
        "agent": {"subject": subject, "org": org, "roles": ["clinician"], "client": f"{org}-ehr"},
        "source": {"observer": f"{org}/ehr"}, "entity": {"pid": pid, "data_classes": ["Observation"]},
    }
    if outcome == "denied":
        event["outcome_desc"] = "no-consent"
    return AccessEventIndex(seq=seq, event_id=event_id, tx_id=f"{seq:064x}", recorded_ms=recorded_ms, pid=pid,
                            agent_subject=subject, agent_org=org, purpose=purpose, outcome=outcome,
                            event_json=canonical.dumps(event))


def synthetic_events(n: int, *, first_seq: int = 0, start_ms: int = _START_MS, span_days: float = 60.0,
                     seed: int = 0) -> Iterator[AccessEventIndex]:
    """``n`` events spread evenly over ``span_days`` from ``start_ms``, seqs ascending with time."""
    rng = random.Random(seed)
    step = span_days * 86_400_000 / max(n, 1)
    for i in range(n):
        yield synthetic_event(first_seq + i, start_ms + int(i * step), rng)


def simulated_rows(events: Any, roster: Any, first_seq: int = 10**12) -> list[AccessEventIndex]:
    """Projection rows of a simulated events table (``analytics/anomaly``), roles from the simulated roster."""
    from ciphercare.analytics.anomaly.events import records_from_events

    kinds = {(r.requester, r.org): r.kind for r in roster.itertuples()}
    times = events["time"].tolist()
    rows = []
    for i, record in enumerate(records_from_events(events)):
        agent = record["agent"]
        agent["roles"] = ["clinician"] if kinds.get((agent["subject"], agent["org"])) == "clinician" else ["hospital"]
        record["id"] = f"sim-{first_seq + i}"
        seq = first_seq + i
        rows.append(AccessEventIndex(seq=seq, event_id=record["id"], tx_id=f"{seq:064x}", recorded_ms=int(times[i]),
                                     pid=record["entity"]["pid"], agent_subject=agent["subject"],
                                     agent_org=agent["org"], purpose=record["purpose_of_use"],
                                     outcome=record["outcome"], event_json=canonical.dumps(record)))
    return rows


def simulated_history(end_ms: int, *, seed: int = 5, days: int = 14) -> list[AccessEventIndex]:
    """A simulated consortium's access history (``analytics/anomaly/simulate.py``) ending at ``end_ms``, as
    projection rows with ledger sequences far above a real ledger's (10^12 on). For tests and demos of the
    flags: a ledger cannot be back-dated, and the detector needs days of history to learn from."""
    from ciphercare.analytics.anomaly.simulate import SimConfig, simulate

    sim = simulate(SimConfig(seed=seed, orgs=2, teams_per_org=3, clinicians_per_team=4, patients=600,
                             history_days=days, days=1, cases_per_kind=0))
    history = sim.history()
    history = history.assign(time=history["time"] + (end_ms - int(history["time"].max()) - 1))
    return simulated_rows(history, sim.context.roster)


def bench_flags(n_events: int, *, database_url: str = "") -> dict[str, Any]:
    """ListFlags' work from the store at about ``n_events`` simulated events (history + month): read the
    detector's rows, fit on the history before a one-day window, detect in the window. Consents are left out
    (the ledger is not part of this benchmark)."""
    from ciphercare.analytics.anomaly.simulate import SimConfig, simulate
    from ciphercare.services.audit.compliance import FlagEngine

    sim = simulate(SimConfig.for_events(n_events))
    tmp = tempfile.TemporaryDirectory(prefix="cc-bench-flags-")
    store = OffchainStore.from_url(database_url or f"sqlite:///{Path(tmp.name) / 'offchain.db'}")
    try:
        store.migrate()
        rows = simulated_rows(sim.events, sim.context.roster, first_seq=0)
        for i in range(0, len(rows), 20_000):
            insert_events(store, rows[i:i + 20_000])
        history_days = max(8, (sim.eval_start_ms - sim.start_ms) // 86_400_000)
        engine = FlagEngine(None, AccessEventQueries(store), int(history_days))
        start = sim.eval_start_ms + 7 * 86_400_000
        began = time.perf_counter()
        run = engine.run(start, start + 86_400_000, {})
        seconds = time.perf_counter() - began
        return {"events": len(rows), "history_events": run.history_events,
                "window_events": sum(run.events_by_org.values()), "flags": len(run.flags),
                "seconds": round(seconds, 2), "notice": run.notice}
    finally:
        store.close()
        tmp.cleanup()


def insert_events(store: OffchainStore, rows: list[AccessEventIndex]) -> None:
    """Insert projection rows through the store's session in one transaction (executemany: fast for bulk)."""
    if not rows:
        return
    with store.session() as session, session.begin():
        session.execute(insert(AccessEventRow), [row.__dict__ for row in rows])


def fill(store: OffchainStore, n: int, *, batch: int = 20_000, seed: int = 0) -> float:
    """Insert ``n`` synthetic events through the store; returns the seconds it took."""
    began = time.perf_counter()
    rows: list[AccessEventIndex] = []
    for row in synthetic_events(n, seed=seed):
        rows.append(row)
        if len(rows) >= batch:
            insert_events(store, rows)
            rows = []
    insert_events(store, rows)
    return time.perf_counter() - began


def _timed(fn: Any, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        out.append((time.perf_counter() - began) * 1000)
    return out


def _p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def bench_audit(n_rows: int = FULL_ROWS, *, database_url: str = "", repeats: int = 40,
                page_size: int = 100) -> dict[str, Any]:
    """Fill a fresh store with ``n_rows`` events, then time searches, aggregates and a full export."""
    from ciphercare.services.audit.exports import to_csv
    from ciphercare.services.audit.servicer import event_proto

    tmp = tempfile.TemporaryDirectory(prefix="cc-bench-audit-")
    url = database_url or f"sqlite:///{Path(tmp.name) / 'offchain.db'}"
    store = OffchainStore.from_url(url)
    try:
        store.migrate()
        queries = AccessEventQueries(store)
        existing = queries.count(AccessQuery())
        if existing == n_rows and database_url:
            fill_s = 0.0  # a store filled by an earlier run with the same rows (synthetic_events is deterministic)
        elif existing == 0:
            fill_s = fill(store, n_rows)
        else:
            raise ValueError(f"the benchmark store holds {existing} events; give an empty one (or one of {n_rows})")
        rng = random.Random(1)
        probe_pid = f"pt-{rng.randrange(200_000):06d}"
        deep_seq = n_rows // 2  # a page in the middle of the log, reached by its cursor
        searches: dict[str, tuple[AccessQuery, tuple[Any, int] | None]] = {
            "first page, no filter": (AccessQuery(), None),
            "first page, organisation": (AccessQuery(agent_org="hospital-b"), None),
            "first page, denied": (AccessQuery(outcome="denied"), None),
            "first page, denied at one organisation": (AccessQuery(agent_org="hospital-c", outcome="denied"), None),
            "first page, one patient": (AccessQuery(pid=probe_pid), None),
            "first page, last 7 days": (AccessQuery(recorded_from_ms=_START_MS + 53 * 86_400_000), None),
            "deep page (cursor), organisation": (AccessQuery(agent_org="hospital-b"), ("next", deep_seq)),
            "deep page back (cursor), denied": (AccessQuery(outcome="denied"), ("previous", deep_seq)),
        }
        results: list[dict[str, Any]] = []
        for name, (query, cursor) in searches.items():
            queries.page(query, limit=page_size, cursor=cursor)  # warm the cache once
            samples = _timed(lambda q=query, c=cursor: queries.page(q, limit=page_size, cursor=c), repeats)
            results.append({"what": f"search: {name}", "p50_ms": round(statistics.median(samples), 2),
                            "p95_ms": round(_p95(samples), 2), "target_p95_ms": TARGET_P95_MS,
                            "met": _p95(samples) <= TARGET_P95_MS})
        # Anchor: the store query behind AccessLogService.Search (oldest first, forward only), same filter.
        anchor_query = AccessQuery(agent_org="hospital-b")
        store.search_access_events(anchor_query, after_seq=-1, limit=page_size)
        samples = _timed(lambda: store.search_access_events(anchor_query, after_seq=-1, limit=page_size), repeats)
        results.append({"what": "anchor: AccessLogService.Search, first page, organisation",
                        "p50_ms": round(statistics.median(samples), 2), "p95_ms": round(_p95(samples), 2),
                        "target_p95_ms": None, "met": None})
        for name, query in (("aggregate: everything", AccessQuery()),
                            ("aggregate: one organisation", AccessQuery(agent_org="hospital-b"))):
            samples = _timed(lambda q=query: queries.aggregate(q), 3)
            results.append({"what": name, "p50_ms": round(statistics.median(samples), 2),
                            "p95_ms": round(_p95(samples), 2), "target_p95_ms": None, "met": None})
        gc.collect()
        tracemalloc.start()
        began = time.perf_counter()
        exported = written = 0
        for rows in queries.iter_rows(AccessQuery(), max_seq=queries.max_seq(), batch=500):
            written += len(to_csv([event_proto(r) for r in rows]))
            exported += len(rows)
        export_s = time.perf_counter() - began
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        newest_first = next(r for r in results if r["what"] == "search: first page, organisation")
        anchor = next(r for r in results if r["what"].startswith("anchor:"))
        return {
            "benchmark": "audit", "rows": n_rows,
            "ratio_newest_first_to_anchor_p50": round(newest_first["p50_ms"] / anchor["p50_ms"], 2)
            if anchor["p50_ms"] else None,
            # With forward-only, oldest-first paging the newest events are this many requests away.
            "anchor_pages_to_reach_newest": -(-n_rows // page_size),
            "database": store.dialect, "fill_s": round(fill_s, 1),
            "page_size": page_size, "repeats": repeats, "results": results,
            "export": {"rows": exported, "complete": exported == n_rows, "seconds": round(export_s, 2),
                       "rows_per_s": round(exported / export_s) if export_s else None,
                       "csv_mb": round(written / 1e6, 1), "traced_peak_mb": round(traced_peak / 1e6, 1),
                       "process_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)},
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        }
    finally:
        store.close()
        tmp.cleanup()


def table(report: dict[str, Any]) -> str:
    """The figures as a plain-text table."""
    lines = [f"audit reads at {report['rows']:,} events ({report['database']}; page {report['page_size']}, "
             f"{report['repeats']} runs each; fill {report['fill_s']} s)",
             f"{'what':58} {'p50 ms':>9} {'p95 ms':>9} {'target':>8}"]
    for row in report["results"]:
        target = "" if row["target_p95_ms"] is None else ("ok" if row["met"] else "MISSED")
        lines.append(f"{row['what']:58} {row['p50_ms']:9.2f} {row['p95_ms']:9.2f} {target:>8}")
    lines.append(f"newest-first first page / anchor (p50): {report['ratio_newest_first_to_anchor_p50']}x; "
                 "with the anchor's forward-only paging the newest event is "
                 f"{report['anchor_pages_to_reach_newest']:,} pages away, with newest first it is on the first page")
    e = report["export"]
    lines.append(f"full export (CSV, streamed in batches of 500): {e['rows']:,} rows in {e['seconds']} s = "
                 f"{e['rows_per_s']:,} rows/s, {e['csv_mb']} MB, complete: {e['complete']}; peak traced memory "
                 f"{e['traced_peak_mb']} MB, process peak RSS {e['process_peak_rss_mb']} MB")
    if "flags" in report:
        lines.append(_flags_line(report))
    return "\n".join(lines)


def _flags_line(report: dict[str, Any]) -> str:
    f = report["flags"]
    return (f"ListFlags from the store, one-day window: {f['seconds']} s (trained on {f['history_events']:,} "
            f"history events, {f['window_events']:,} in the window, {f['flags']} flags; simulated "
            f"consortium of {f['events']:,} events, consents left out)")


def run_audit_bench(quick: bool = False, out: Path | None = None, database_url: str = "",
                    events: int | None = None) -> list[dict[str, Any]]:
    """What ``ciphercare bench audit`` runs: print the table, write the JSON report when asked; returns the rows.

    ``events``: the number of events in the store (default 10^6, or 10^4 with ``quick``); ``quick`` also runs
    fewer repeats and sizes the ListFlags part down."""
    n = events if events is not None else (QUICK_ROWS if quick else FULL_ROWS)
    report = bench_audit(n, database_url=database_url, repeats=10 if quick else 40)
    print(table(report), flush=True)

    def write() -> None:
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    write()  # the reads' figures are kept even if the flags part fails
    # ListFlags on a simulated consortium, in a store of its own (a temporary SQLite file).
    report["flags"] = bench_flags(QUICK_ROWS if quick else min(FLAG_ROWS, max(QUICK_ROWS, n)))
    print(_flags_line(report), flush=True)
    write()
    if out is not None:
        print(f"\nwrote {out}")
    rows: list[dict[str, Any]] = report["results"]
    return rows
