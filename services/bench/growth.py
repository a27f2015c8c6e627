"""``ciphercare bench growth``: how the ledger and the access-event search grow from 10^4 to 10^6 entries.

For each size N (``--quick``: 10^3 and 10^4, a CI smoke; default 10^4, 10^5, 10^6 — the 10^6 build takes
minutes on 2 cores): the embedded ledger is grown to N entries with the ledger bench's one-write contract
in large group commits (several submitter threads, a deep window: the fastest durable way in), then:

- **append**: one durable transaction at a time (submit -> fsynced receipt), median and p99 of 100;
- **proof**: RFC 9162 inclusion proof of a random entry against the latest checkpoint (the log's own
  call, as GetInclusionProof makes it), median of 500;
- **start-up**: the ledger reopened in a fresh process (the node's start-up checks included) and that
  process's RSS after opening;
- **search**: the off-chain access-event projection (SQLite) with N rows: one patient's events, one
  organisation's first page of 100, and the last page by time range, median of 50 each.

Nothing runs in tests; CI runs ``--quick``.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

ORIGIN = "ciphercare.bench/growth"


def _chaincode() -> Any:
    from fabric_chaincode_python.fabric_contract_api.contractapi import ContractChaincode

    from ciphercare.ledger.embedded.bench import BenchContract

    return ContractChaincode.new_chaincode(BenchContract())


def _open(data: Path, max_batch: int = 4096) -> Any:
    from ciphercare.ledger.embedded.ledger import EmbeddedLedger

    return EmbeddedLedger(data / "ledger.db", data / "checkpoint.key", ORIGIN, _chaincode, max_batch=max_batch,
                          max_wait_ms=5.0, msp_dir=data / "msp")


def _grow(ledger: Any, target: int, threads: int = 4, window: int = 1024) -> float:
    """Append until the ledger holds ``target`` entries; returns appends/s of the build."""
    from ciphercare.ledger.api import Principal

    need = target - ledger.size()
    if need <= 0:
        return float("nan")
    principal = Principal("bench-growth", "hospital-a", frozenset({"hospital"}), "bench")
    counter = iter(range(ledger.size(), target))
    lock = threading.Lock()
    started = time.perf_counter()

    def worker() -> None:
        pending: deque[Any] = deque()
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            pending.append(ledger.submit_future(principal, "bench", "Put", [f"k{i}", "v" * 32]))
            if len(pending) >= window:
                pending.popleft().result(120)
        for future in pending:
            future.result(120)

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return need / (time.perf_counter() - started)


def _appends(ledger: Any, count: int = 100) -> tuple[float, float]:
    from ciphercare.ledger.api import Principal

    principal = Principal("bench-growth", "hospital-a", frozenset({"hospital"}), "bench")
    times = []
    for i in range(count):
        t0 = time.perf_counter()
        ledger.submit(principal, "bench", "Put", [f"one-{ledger.size()}-{i}", "v"])
        times.append(time.perf_counter() - t0)
    times.sort()
    return statistics.median(times) * 1e3, times[min(len(times) - 1, int(0.99 * len(times)))] * 1e3


def _proofs(ledger: Any, samples: int = 500) -> float:
    size = ledger.checkpoint().size
    rng = random.Random(1)
    times = []
    for _ in range(samples):
        seq = rng.randrange(size)
        t0 = time.perf_counter()
        ledger.inclusion_proof(seq, size)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


_OPEN_SCRIPT = """
import json, sys, time
from pathlib import Path
t0 = time.perf_counter()
from ciphercare.services.bench.growth import _open
ledger = _open(Path(sys.argv[1]))
opened = time.perf_counter() - t0
size = ledger.size()
rss = 0
for line in open("/proc/self/status"):
    if line.startswith("VmRSS:"):
        rss = int(line.split()[1]) * 1024
ledger.close()
print(json.dumps({"open_s": opened, "size": size, "rss_bytes": rss}))
"""


def _startup(data: Path) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", _OPEN_SCRIPT, str(data)], capture_output=True, text=True,
                         check=True, timeout=900)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _search(n: int, data: Path) -> dict[str, float]:
    """The access-event projection with ``n`` rows (10 organisations, n/4 patients): query medians in ms."""
    from ciphercare.services.store import AccessEventIndex, AccessQuery, OffchainStore
    from ciphercare.services.store.repository import make_engine

    store = OffchainStore(make_engine(f"sqlite:///{data / 'offchain.db'}"))
    store.migrate()
    rng = random.Random(2)
    patients = max(1, n // 4)
    body = json.dumps({"id": "x"}).encode()
    have = store.projection_cursor()
    chunk = 20_000
    for start in range(have, n, chunk):
        rows = [AccessEventIndex(seq=s, event_id=f"ae-{s:032x}", tx_id=f"{s:064x}", recorded_ms=1_700_000_000_000 + s,
                                 pid=f"pt-g{rng.randrange(patients):07d}", agent_subject=f"svc-{s % 10}",
                                 agent_org=f"hospital-{s % 10}", purpose="TREAT", outcome="success", event_json=body)
                for s in range(start, min(n, start + chunk))]
        store.project_access_events(rows, next_seq=min(n, start + chunk))

    def median_ms(query: AccessQuery, after: int = -1) -> float:
        times = []
        for _ in range(50):
            t0 = time.perf_counter()
            store.search_access_events(query, after_seq=after, limit=100)
            times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1e3

    empty: dict[str, Any] = dict(pid="", agent_subject="", agent_org="", purpose="", outcome="", recorded_from_ms=None,
                 recorded_to_ms=None, scope_pid=None, scope_org=None)
    result = {
        "by_patient_ms": median_ms(AccessQuery(**{**empty, "pid": f"pt-g{patients // 2:07d}"})),
        "org_first_page_ms": median_ms(AccessQuery(**{**empty, "agent_org": "hospital-3"})),
        "time_range_last_page_ms": median_ms(AccessQuery(**{**empty, "recorded_from_ms": 1_700_000_000_000 + n - 150}),
                                             after=n - 200),
    }
    store.close()
    return result


def run_growth_bench(*, quick: bool = False, out: Path | None = None,
                     sizes: tuple[int, ...] | None = None) -> list[dict[str, Any]]:
    sizes = sizes or ((10**3, 10**4) if quick else (10**4, 10**5, 10**6))
    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ciphercare-bench-growth-") as tmp:
        data = Path(tmp)
        for n in sizes:
            ledger = _open(data)
            try:
                build_rate = _grow(ledger, n)
                append_p50, append_p99 = _appends(ledger)
                proof_us = _proofs(ledger)
                size = ledger.size()
            finally:
                ledger.close()
            startup = _startup(data)
            search = _search(n, data)
            row = {"entries": size, "build_appends_per_s": build_rate, "append_p50_ms": append_p50,
                   "append_p99_ms": append_p99, "inclusion_proof_us": proof_us, "startup_s": startup["open_s"],
                   "rss_after_open_mb": startup["rss_bytes"] / 2**20,
                   "ledger_file_mb": (data / "ledger.db").stat().st_size / 2**20, **search}
            rows.append(row)
            print(f"  {size:>9,} entries: built at {build_rate:,.0f}/s, append p50 {append_p50:.2f} ms, "
                  f"proof {proof_us:.0f} us, start-up {startup['open_s']:.2f} s, RSS {row['rss_after_open_mb']:.0f} MB,"
                  f" search by patient {search['by_patient_ms']:.2f} ms", flush=True)
    scoring_rss: dict[str, Any] | None = None
    if not quick:  # server RSS during a 40,000-patient scoring call (the service's largest)
        from ciphercare.services.bench.scoring_e2e import measure_scoring_rss

        scoring_rss = measure_scoring_rss(40_000)
        print(f"  scoring call of {scoring_rss['patients']:,} patients ({scoring_rss['scored']:,} scored in "
              f"{scoring_rss['score_s']:.1f} s): server + workers RSS {scoring_rss['rss_before_mb']:.0f} MB before, "
              f"{scoring_rss['rss_peak_mb']:.0f} MB at peak; {scoring_rss['grant_s']:.0f} s to grant the consents, "
              f"{scoring_rss['grant_retries']} grants retried after UNAVAILABLE", flush=True)
        for cause, count in scoring_rss["unavailable_causes"].items():
            print(f"    server log, dependency unavailable x{count}: {cause}", flush=True)
    load_after = os.getloadavg()
    headers = ["entries", "append_p50_ms", "append_p99_ms", "inclusion_proof_us", "startup_s", "rss_after_open_mb",
               "ledger_file_mb", "by_patient_ms", "org_first_page_ms", "time_range_last_page_ms"]
    print(" | ".join(headers))
    for row in rows:
        print(" | ".join(f"{row[h]:,.0f}" if h == "entries" else f"{row[h]:.3g}" for h in headers))
    first, last = rows[0], rows[-1]
    growth = last["entries"] / first["entries"]
    print(f"x{growth:,.0f} entries: append x{last['append_p50_ms'] / first['append_p50_ms']:.2f}, proof "
          f"x{last['inclusion_proof_us'] / first['inclusion_proof_us']:.2f}, start-up "
          f"x{last['startup_s'] / first['startup_s']:.2f}, search by patient "
          f"x{last['by_patient_ms'] / first['by_patient_ms']:.2f}")
    print(f"load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} (machine shared)")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"benchmark": "growth", "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                   "machine": {"cpus": os.cpu_count(), "load_average_before": load_before,
                                               "load_average_after": load_after},
                                   "rows": rows, "scoring_rss": scoring_rss}, indent=2))
        print(f"wrote {out}")
    return rows
