"""The cost of witnessing (``ciphercare bench ledger --witness``).

A real witness process on loopback (``ciphercare witness serve``), three embedded ledgers:
no witness, a witness submitted to in the background (the default), and a witness whose
quorum each commit waits for (``witness_wait_ms``).  Reports durable appends/s under the
same load, and the checkpoint latency: publish -> quorum cosignature, for single commits.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from ciphercare.ledger.api import Principal
from ciphercare.ledger.embedded.bench import BENCH_ORIGIN, BenchContract, _pct, _row
from ciphercare.ledger.embedded.ledger import EmbeddedLedger
from ciphercare.ledger.transparency.checkpoint import CheckpointSigner
from ciphercare.ledger.witness.policy import Policy


def _start_witness(state: Path, log_vkeys: list[str]) -> tuple[subprocess.Popen[str], str, str]:
    args = [sys.executable, "-m", "ciphercare.services.cli.main", "witness", "serve", "--dir", str(state),
            "--name", "bench-witness.local", "--port", "0"]
    for vkey in log_vkeys:
        args += ["--log", vkey]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    first, second = proc.stdout.readline(), proc.stdout.readline()
    if not first.startswith("witness "):
        proc.kill()
        raise RuntimeError(f"witness did not start: {first!r}")
    return proc, first.split(" ", 1)[1].strip(), second.split(" ")[2]


def _load(led: EmbeddedLedger, submitters: int, in_flight: int, duration_s: float) -> float:
    principals = [Principal(f"bench-{i}", "hospital-a", frozenset({"hospital"}), "bench") for i in range(submitters)]
    for f in [led.submit_future(principals[0], "bench", "Put", [f"warm-{i}", "v"]) for i in range(100)]:
        f.result(30)
    before = led.stats()["committed"]
    stop_at = time.perf_counter() + duration_s

    def worker(t: int) -> None:
        i = 0
        window: list[Future[Any]] = []
        while time.perf_counter() < stop_at or window:
            if time.perf_counter() < stop_at and len(window) < in_flight:
                window.append(led.submit_future(principals[t], "bench", "Put", [f"t{t}-{i}", "x" * 32]))
                i += 1
                continue
            window.pop(0).result(60)

    began = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(t,)) for t in range(submitters)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return (led.stats()["committed"] - before) / (time.perf_counter() - began)


def bench_witnessing(*, duration_s: float = 3.0, samples: int = 100, submitters: int = 8, in_flight: int = 16,
                     wait_ms: float = 1000.0) -> list[dict[str, Any]]:
    """Rows: appends/s without / with a background witness / waiting for it; checkpoint cosign latency."""
    from fabric_chaincode_python.fabric_contract_api.contractapi import ContractChaincode

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ciphercare-witness-bench-") as tmp:
        base = Path(tmp)
        # One log per configuration (own origin and key): a witness must never see two trees of one log.
        keys = {name: CheckpointSigner(base / f"{name}.key", f"{BENCH_ORIGIN}/{name}") for name in ("async", "wait")}
        proc, w_vkey, url = _start_witness(base / "witness", [k.vkey for k in keys.values()])
        try:
            policies = {name: Policy.parse(f"log {k.vkey}\nwitness {w_vkey} {url}\nquorum 1\n")
                        for name, k in keys.items()}

            def ledger(name: str, **kw: Any) -> EmbeddedLedger:
                return EmbeddedLedger(base / f"{name}.db", base / f"{name}.key", f"{BENCH_ORIGIN}/{name}",
                                      lambda: ContractChaincode.new_chaincode(BenchContract()),
                                      max_batch=256, max_wait_ms=2.0, msp_dir=base / "msp", **kw)

            results: dict[str, float] = {}
            for name, kw in (("none", {}), ("async", {"witness_policy": policies["async"]}),
                             ("wait", {"witness_policy": policies["wait"], "witness_wait_ms": wait_ms})):
                led = ledger(name, **kw)
                try:
                    results[name] = _load(led, submitters, in_flight, duration_s)
                    if name == "async":
                        sub = led.witnessing
                        assert sub is not None
                        size = led.size()
                        t0 = time.perf_counter()
                        sub.wait_cosigned(size, 30)
                        results["drain_ms"] = (time.perf_counter() - t0) * 1000
                        results["rounds"] = float(sub.rounds)
                        latencies = []
                        principal = Principal("bench-single", "hospital-a", frozenset({"hospital"}), "bench")
                        for i in range(samples):
                            receipt = led.submit(principal, "bench", "Put", [f"single-{i}", "v"])
                            t0 = time.perf_counter()
                            if not sub.wait_cosigned(receipt.checkpoint.size, 30):
                                raise RuntimeError("the witness did not cosign within 30 s")
                            latencies.append(time.perf_counter() - t0)
                        results["lat_p50_ms"] = _pct(latencies, 0.5) * 1000
                        results["lat_p99_ms"] = _pct(latencies, 0.99) * 1000
                finally:
                    led.close()
        finally:
            proc.terminate()
            proc.wait(10)
    load = f"{submitters}x{in_flight} in flight, {duration_s:.0f} s"
    rows.append(_row(f"appends/s, no witness ({load})", f"{results['none']:.0f}", raw=results["none"]))
    rows.append(_row(f"appends/s, 1 witness in the background ({load})", f"{results['async']:.0f}",
                     ratio=f"{results['async'] / results['none']:.2f}x", raw=results["async"]))
    rows.append(_row(f"appends/s, each commit waits for the witness ({load})", f"{results['wait']:.0f}",
                     ratio=f"{results['wait'] / results['none']:.2f}x", raw=results["wait"]))
    rows.append(_row("checkpoint latency: publish -> cosigned, p50 (single commits)",
                     f"{results['lat_p50_ms']:.2f} ms"))
    rows.append(_row("checkpoint latency: publish -> cosigned, p99 (single commits)",
                     f"{results['lat_p99_ms']:.2f} ms"))
    rows.append(_row("witness rounds during the background run (newest checkpoint each)",
                     f"{results['rounds']:.0f}", note=f"caught up {results['drain_ms']:.1f} ms after the load"))
    return rows


def format_witness_rows(rows: Sequence[dict[str, Any]]) -> str:
    width = max(len(r["metric"]) for r in rows)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  -----"]
    lines += [f"{r['metric']:<{width}}  {r['value']}" + (f"  ({r['ratio']})" if r.get("ratio") else "")
              + (f"  [{r['note']}]" if r.get("note") else "") for r in rows]
    return "\n".join(lines)
