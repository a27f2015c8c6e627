"""Ledger benchmarks: durable group-commit appends and RFC 9162 proof cost at 10^4..10^6 leaves.

(a) Durable appends/s and commit latency (submit -> receipt, i.e. until the
    batch is fsynced) through :meth:`EmbeddedLedger.submit_future` from N
    concurrent submitter threads, each keeping a window of transactions in
    flight, with a trivial contract that writes one key and emits one event.
(b) For each size: bulk-build a :class:`MerkleTree`, then time inclusion and
    consistency proof generation and verification over random indices, and
    report proof sizes against ``32 * ceil(log2 n)`` bytes.

Rows are dicts with ``metric``, ``value``, ``target``, ``met`` (for the
printed table) plus the raw numbers.  Nothing is tuned to meet a target:
the parameters are the defaults below and the figures are what was measured.
"""

from __future__ import annotations

import math
import os
import random
import statistics
import tempfile
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fabric_chaincode_python.fabric_contract_api.contractapi import Contract, ContractChaincode, TransactionContext

from ciphercare.ledger.api import Principal
from ciphercare.ledger.embedded.ledger import EmbeddedLedger, TxFuture
from ciphercare.ledger.transparency.merkle import MerkleTree, verify_consistency, verify_inclusion

BENCH_ORIGIN = "ciphercare.bench/ledger"


class BenchContract(Contract):
    """The trivial benchmark contract: one write and one event per transaction."""

    Name = "bench"

    async def Put(self, ctx: TransactionContext, key: str, value: str) -> str:
        stub = ctx.get_stub()
        await stub.put_state(key, value.encode())
        stub.set_event("bench.put", key.encode())
        return key


def _pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 1])."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _row(metric: str, value: str, target: str = "", met: bool | None = None, **raw: Any) -> dict[str, Any]:
    verdict = "" if met is None else ("yes" if met else "NO")
    return {"metric": metric, "value": value, "target": target, "met": verdict, **raw}


def bench_appends(
    data_dir: Path,
    *,
    submitters: int = 8,
    in_flight: int = 16,
    duration_s: float = 5.0,
    max_batch: int = 256,
    max_wait_ms: float = 2.0,
) -> dict[str, Any]:
    """Durable appends/s and submit->receipt latency with ``submitters`` threads x ``in_flight`` window."""
    led = EmbeddedLedger(
        data_dir / "bench-ledger.db",
        data_dir / "bench-checkpoint.key",
        BENCH_ORIGIN,
        lambda: ContractChaincode.new_chaincode(BenchContract()),
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        msp_dir=data_dir / "bench-msp",
    )
    principals = [Principal(f"bench-{i}", "hospital-a", frozenset({"hospital"}), "bench") for i in range(submitters)]
    try:
        # Warm up: certificates, SQLite caches, code paths.
        for f in [led.submit_future(principals[0], "bench", "Put", [f"warm-{i}", "v"]) for i in range(200)]:
            f.result(30)
        start_stats = led.stats()
        latencies: list[list[float]] = [[] for _ in range(submitters)]
        errors: list[BaseException] = []
        stop_at = time.perf_counter() + duration_s
        last_done = [0.0]

        def worker(t: int) -> None:
            lat = latencies[t]
            window: deque[tuple[TxFuture, float, list[float]]] = deque()
            i = 0
            try:
                while True:
                    now = time.perf_counter()
                    if now < stop_at and len(window) < in_flight:
                        done_at: list[float] = []
                        fut = led.submit_future(principals[t], "bench", "Put", [f"t{t}-{i}", "x" * 32])
                        fut.add_done_callback(lambda _f, d=done_at: d.append(time.perf_counter()))
                        window.append((fut, now, done_at))
                        i += 1
                        continue
                    if not window:
                        return
                    fut, t0, done_at = window.popleft()
                    fut.result(60)
                    lat.append(done_at[0] - t0)
                    last_done[0] = max(last_done[0], done_at[0])
            except BaseException as exc:  # reported by the caller
                errors.append(exc)

        began = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(t,)) for t in range(submitters)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        if errors:
            raise RuntimeError(f"benchmark submitter failed: {errors[0]!r}") from errors[0]
        elapsed = last_done[0] - began
        end_stats = led.stats()
        all_lat = [x for lat in latencies for x in lat]
        committed = end_stats["committed"] - start_stats["committed"]
        batches = end_stats["batches"] - start_stats["batches"]

        # Light load: one submitter, one transaction at a time.
        single: list[float] = []
        for i in range(200):
            t0 = time.perf_counter()
            led.submit(principals[0], "bench", "Put", [f"single-{i}", "v"])
            single.append(time.perf_counter() - t0)
        return {
            "committed": committed,
            "elapsed_s": elapsed,
            "appends_per_s": committed / elapsed if elapsed > 0 else float("nan"),
            "mean_batch": committed / batches if batches else float("nan"),
            "p50_ms": _pct(all_lat, 0.50) * 1000,
            "p99_ms": _pct(all_lat, 0.99) * 1000,
            "single_p50_ms": _pct(single, 0.50) * 1000,
            "single_p99_ms": _pct(single, 0.99) * 1000,
            "submitters": submitters,
            "in_flight": in_flight,
            "max_batch": max_batch,
            "max_wait_ms": max_wait_ms,
        }
    finally:
        led.close()


def bench_proofs(n: int, *, samples: int = 1000, seed: int = 1) -> dict[str, Any]:
    """Build a tree of ``n`` random leaf hashes and time proof generation/verification."""
    rng = random.Random(seed)
    hashes = os.urandom(32 * n)
    t0 = time.perf_counter()
    tree = MerkleTree.from_leaf_hashes(hashes)
    build_s = time.perf_counter() - t0
    root = tree.root()
    pc = time.perf_counter_ns

    inc_gen: list[float] = []
    inc_ver: list[float] = []
    inc_len: list[int] = []
    for _ in range(samples):
        i = rng.randrange(n)
        lh = tree.leaf_hash_at(i)
        a = pc()
        proof = tree.inclusion_proof(i, n)
        b = pc()
        ok = verify_inclusion(lh, i, n, proof, root)
        c = pc()
        if not ok:
            raise RuntimeError(f"inclusion proof of {i} in {n} did not verify")
        inc_gen.append((b - a) / 1e3)
        inc_ver.append((c - b) / 1e3)
        inc_len.append(len(proof))

    con_gen: list[float] = []
    con_ver: list[float] = []
    con_len: list[int] = []
    for _ in range(samples):
        m = rng.randrange(1, n)
        first_root = tree.root(m)
        a = pc()
        proof = tree.consistency_proof(m, n)
        b = pc()
        ok = verify_consistency(m, n, proof, first_root, root)
        c = pc()
        if not ok:
            raise RuntimeError(f"consistency proof {m}->{n} did not verify")
        con_gen.append((b - a) / 1e3)
        con_ver.append((c - b) / 1e3)
        con_len.append(len(proof))

    return {
        "size": n,
        "build_s": build_s,
        "tree_mb": tree.memory_bytes() / 2**20,
        "bound_bytes": 32 * math.ceil(math.log2(n)),
        "inclusion_gen_p50_us": statistics.median(inc_gen),
        "inclusion_gen_p99_us": _pct(inc_gen, 0.99),
        "inclusion_verify_p50_us": statistics.median(inc_ver),
        "inclusion_verify_p99_us": _pct(inc_ver, 0.99),
        "inclusion_max_bytes": 32 * max(inc_len),
        "consistency_gen_p50_us": statistics.median(con_gen),
        "consistency_gen_p99_us": _pct(con_gen, 0.99),
        "consistency_verify_p50_us": statistics.median(con_ver),
        "consistency_verify_p99_us": _pct(con_ver, 0.99),
        "consistency_max_bytes": 32 * max(con_len),
    }


def run_ledger_bench(
    sizes: Sequence[int] = (10**4, 10**5, 10**6),
    out_dir: str | os.PathLike[str] | None = None,
    *,
    duration_s: float = 5.0,
    loads: Sequence[tuple[int, int]] = ((8, 8), (8, 16)),
    proof_samples: int = 1000,
) -> list[dict[str, Any]]:
    """Run (a) the durable-append benchmark per load and (b) the proof benchmark per size; return table rows.

    ``loads`` are ``(submitter threads, transactions in flight per thread)``;
    each is reported separately because latency grows with the number in
    flight (Little's law) while throughput saturates.  The append ledgers are
    created under ``out_dir`` (a temporary directory, removed afterwards, when None).
    """
    for n in sizes:
        if n < 2:
            raise ValueError(f"tree sizes must be >= 2, got {n}")
    rows: list[dict[str, Any]] = []
    for submitters, in_flight in loads:
        with tempfile.TemporaryDirectory(prefix="ciphercare-ledger-bench-") as tmp:
            data_dir = Path(out_dir) / f"appends-{submitters}x{in_flight}" if out_dir is not None else Path(tmp)
            data_dir.mkdir(parents=True, exist_ok=True)
            a = bench_appends(data_dir, submitters=submitters, in_flight=in_flight, duration_s=duration_s)
        load = f"{submitters} threads x {in_flight} in flight"
        raw = {f"append_{k}": v for k, v in a.items()}
        rows.append(
            _row(
                f"durable appends/s ({load}; batch<={a['max_batch']}, wait<={a['max_wait_ms']:g} ms)",
                f"{a['appends_per_s']:.0f}",
                ">= 5000",
                a["appends_per_s"] >= 5000,
                **raw,
            )
        )
        rows.append(
            _row(
                f"commit latency p50 / p99, submit -> durable receipt ({load})",
                f"{a['p50_ms']:.2f} / {a['p99_ms']:.2f} ms",
                "p99 <= 20 ms",
                a["p99_ms"] <= 20,
            )
        )
        rows.append(_row(f"mean group-commit batch ({load})", f"{a['mean_batch']:.1f} tx"))
    rows.append(
        _row(
            "commit latency p50 / p99, one submitter, 1 in flight",
            f"{a['single_p50_ms']:.2f} / {a['single_p99_ms']:.2f} ms",
        )
    )
    for n in sizes:
        p = bench_proofs(n, samples=proof_samples)
        at = f"@ {n:,} leaves"
        strict = n >= 10**6
        rows.append(_row(f"tree bulk build {at}", f"{p['build_s']:.2f} s, {p['tree_mb']:.0f} MB", **p))
        rows.append(
            _row(
                f"inclusion proof generation p50 / p99 {at}",
                f"{p['inclusion_gen_p50_us']:.1f} / {p['inclusion_gen_p99_us']:.1f} us",
                "<= 1 ms" if strict else "",
                p["inclusion_gen_p99_us"] <= 1000 if strict else None,
            )
        )
        rows.append(
            _row(
                f"inclusion proof verification p50 / p99 {at}",
                f"{p['inclusion_verify_p50_us']:.1f} / {p['inclusion_verify_p99_us']:.1f} us",
                "<= 0.2 ms" if strict else "",
                p["inclusion_verify_p99_us"] <= 200 if strict else None,
            )
        )
        rows.append(
            _row(
                f"inclusion proof size (max) {at}",
                f"{p['inclusion_max_bytes']} B",
                f"<= {p['bound_bytes']} B",
                p["inclusion_max_bytes"] <= p["bound_bytes"],
            )
        )
        rows.append(
            _row(
                f"consistency proof generation / verification p99 {at}",
                f"{p['consistency_gen_p99_us']:.1f} / {p['consistency_verify_p99_us']:.1f} us",
            )
        )
        rows.append(_row(f"consistency proof size (max) {at}", f"{p['consistency_max_bytes']} B"))
    return rows


def format_rows(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of the metric/value/target/met columns."""
    headers = ["metric", "value", "target", "met"]
    widths = [max(len(str(r.get(h, ""))) for r in [dict(zip(headers, headers, strict=True)), *rows]) for h in headers]
    lines = [" | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(str(r.get(h, "")).ljust(w) for h, w in zip(headers, widths, strict=True)) for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    chosen = tuple(int(s) for s in sys.argv[1:]) or (10**4, 10**5)
    print(format_rows(run_ledger_bench(chosen)))
