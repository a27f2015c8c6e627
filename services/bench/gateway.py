"""``ciphercare bench ledger --gateway``: the ledger through the Fabric Gateway protocol beside in-process.

Same contract calls both ways: durable ``consent:Grant`` transactions per second (a receipt
means the transaction is committed and fsynced) and ``consent:Check`` evaluations per second.
In-process: :class:`EmbeddedLedger` called directly. Gateway: ``ciphercare ledger serve`` in its
own process, driven by ciphercare's Python Gateway client over loopback gRPC (each submit is
Endorse + Submit + CommitStatus, three signed round trips; each evaluate one). Client and node
share the machine's cores, so the gateway figures include the client's signing and gRPC work.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from ciphercare.consent import canonical
from ciphercare.consent.contracts import new_chaincode
from ciphercare.ledger.api import Principal
from ciphercare.ledger.embedded.ledger import EmbeddedLedger
from ciphercare.ledger.embedded.msp import EmbeddedMSP
from ciphercare.ledger.fabric import X509Identity, connect, new_private_key_signer

CLINICIAN = Principal("bench-clin", "hospital-a", frozenset({"clinician"}), "bench")
CHECK_AT = "2026-06-01T00:00:00Z"


def _grant(i: int, run: str) -> str:
    sha = hashlib.sha256(f"{run}-{i}".encode()).hexdigest()
    return canonical.dumps(
        {
            "pid": f"pat-{run}-{i}",
            "grantee_org": "hospital-a",
            "decision": "permit",
            "purposes": ["TREAT"],
            "data_classes": ["Observation"],
            "period": {"start": "2025-01-01T00:00:00Z", "end": "2030-01-01T00:00:00Z"},
            "provisions": [],
            "document_sha256": sha,
            "evidence_sha256": sha,
        }
    ).decode()


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def _load(call: Callable[[int], Awaitable[Any]], duration_s: float, concurrency: int) -> dict[str, float]:
    """``concurrency`` workers calling ``call(i)`` back to back for ``duration_s``: rate and latencies."""
    latencies: list[float] = []
    counter = iter(range(10**9))
    stop_at = time.perf_counter() + duration_s

    async def worker() -> None:
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            await call(next(counter))
            latencies.append(time.perf_counter() - t0)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    return {
        "ops": len(latencies),
        "per_s": len(latencies) / elapsed,
        "p50_ms": _pct(latencies, 0.5) * 1000,
        "p99_ms": _pct(latencies, 0.99) * 1000,
    }


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _in_process(tmp: Path, duration_s: float, concurrency: int) -> dict[str, dict[str, float]]:
    led = EmbeddedLedger(tmp / "ledger.db", tmp / "ckpt.pem", "bench/in-process", new_chaincode, msp_dir=tmp / "msp")
    try:
        led.submit(CLINICIAN, "consent", "Grant", [_grant(0, "warm")])

        async def submit(i: int) -> Any:
            return await asyncio.wrap_future(led.submit_future(CLINICIAN, "consent", "Grant", [_grant(i, "in")]))

        submits = asyncio.run(_load(submit, duration_s, concurrency))
        evals: list[float] = []
        stop_at = time.perf_counter() + duration_s
        began = time.perf_counter()
        i = 0
        while time.perf_counter() < stop_at:  # evaluate is synchronous: one caller thread
            t0 = time.perf_counter()
            led.evaluate(
                CLINICIAN, "consent", "Check", [f"pat-in-{i % 500}", "hospital-a", "TREAT", "Observation", CHECK_AT]
            )
            evals.append(time.perf_counter() - t0)
            i += 1
        elapsed = time.perf_counter() - began
        evaluate = {
            "ops": len(evals),
            "per_s": len(evals) / elapsed,
            "p50_ms": _pct(evals, 0.5) * 1000,
            "p99_ms": _pct(evals, 0.99) * 1000,
        }
        return {"submit": submits, "evaluate": evaluate}
    finally:
        led.close()


def _gateway(tmp: Path, duration_s: float, concurrency: int) -> dict[str, dict[str, float]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIPHERCARE_")}
    env["CIPHERCARE_DATA_DIR"] = str(tmp)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ciphercare.services.cli.main", "ledger", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None  # noqa: S101 - Popen with stdout=PIPE sets it
        line = proc.stdout.readline()
        if "gateway.Gateway on " not in line:
            raise RuntimeError(f"ledger serve did not start: {line!r}")
        target = line.split("gateway.Gateway on ", 1)[1].split(" ", 1)[0]
        ident, key = EmbeddedMSP(tmp / "msp").enrol(CLINICIAN)
        assert isinstance(key, ec.EllipticCurvePrivateKey)  # noqa: S101

        async def run() -> dict[str, dict[str, float]]:
            gw = connect(X509Identity(ident.mspid, ident.cert_pem), new_private_key_signer(key), target=target)
            try:
                consent = gw.network("ciphercare").contract("ciphercare", "consent")
                await consent.submit("Grant", [_grant(0, "warm")])
                cpu0 = _cpu_s(proc.pid)

                async def submit(i: int) -> bytes:
                    return await consent.submit("Grant", [_grant(i, "gw")])

                submits = await _load(submit, duration_s, concurrency)
                submits["node_cpu_us_per_op"] = (_cpu_s(proc.pid) - cpu0) / max(1, submits["ops"]) * 1e6
                cpu0 = _cpu_s(proc.pid)

                async def evaluate(i: int) -> bytes:
                    return await consent.evaluate(
                        "Check", [f"pat-gw-{i % 500}", "hospital-a", "TREAT", "Observation", CHECK_AT]
                    )

                evals = await _load(evaluate, duration_s, concurrency)
                evals["node_cpu_us_per_op"] = (_cpu_s(proc.pid) - cpu0) / max(1, evals["ops"]) * 1e6
                return {"submit": submits, "evaluate": evals}
            finally:
                await gw.close()

        return asyncio.run(run())
    finally:
        proc.terminate()
        proc.wait(30)


def _services_check(tmp: Path, duration_s: float, concurrency: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``ConsentService/Check`` RPC of ``ciphercare up``: embedded ledger vs a ``ledger serve`` node."""
    from ciphercare.services.bench.runner import bench_check_rps

    embedded = bench_check_rps(duration_s=duration_s, concurrency=concurrency)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIPHERCARE_")}
    env["CIPHERCARE_DATA_DIR"] = str(tmp)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ciphercare.services.cli.main", "ledger", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None  # noqa: S101 - Popen with stdout=PIPE sets it
        line = proc.stdout.readline()
        if "gateway.Gateway on " not in line:
            raise RuntimeError(f"ledger serve did not start: {line!r}")
        target = line.split("gateway.Gateway on ", 1)[1].split(" ", 1)[0]
        remote = bench_check_rps(
            duration_s=duration_s,
            concurrency=concurrency,
            extra_env={
                "CIPHERCARE_LEDGER_BACKEND": "fabric",
                "CIPHERCARE_LEDGER_ENDPOINT": target,
                "CIPHERCARE_LEDGER_MSP_DIR": str(tmp / "msp"),
                "CIPHERCARE_WEB_ENABLED": "false",
            },
        )
    finally:
        proc.terminate()
        proc.wait(30)
    return embedded, remote


def bench_gateway(*, duration_s: float = 5.0, concurrency: int = 32) -> list[dict[str, Any]]:
    """Rows for the benchmark table: in-process and gateway side by side, with ratios."""
    with tempfile.TemporaryDirectory(prefix="ciphercare-gw-bench-") as d:
        inproc = _in_process(Path(d) / "in-process", duration_s, concurrency)
        gateway = _gateway(Path(d) / "gateway", duration_s, concurrency)
        rpc_embedded, rpc_remote = _services_check(Path(d) / "services", duration_s, concurrency)
    rows = []
    for op, what in (("submit", "durable consent:Grant tx/s"), ("evaluate", "consent:Check evaluations/s")):
        a, b = inproc[op], gateway[op]
        rows.append(
            {
                "metric": f"{what} in-process",
                "value": f"{a['per_s']:.0f}",
                "p50_ms": round(a["p50_ms"], 2),
                "p99_ms": round(a["p99_ms"], 2),
            }
        )
        rows.append(
            {
                "metric": f"{what} via Fabric Gateway protocol ({concurrency} in flight)",
                "value": f"{b['per_s']:.0f}",
                "p50_ms": round(b["p50_ms"], 2),
                "p99_ms": round(b["p99_ms"], 2),
                "node_cpu_us_per_op": round(b["node_cpu_us_per_op"]),
            }
        )
        rows.append({"metric": f"{what}: gateway / in-process", "value": f"{b['per_s'] / a['per_s']:.2f}"})
    for label, r in (("embedded ledger in the server", rpc_embedded), ("ledger serve node via gateway", rpc_remote)):
        rows.append(
            {
                "metric": f"ConsentService/Check RPS, {label} ({concurrency} in flight)",
                "value": f"{r['rps']:.0f}",
                "p50_ms": round(r["p50_ms"], 2),
                "p99_ms": round(r["p99_ms"], 2),
                "errors": r["errors"],
                "server_cpu_us_per_op": round(r["server_cpu_us_per_request"]),
            }
        )
    rows.append(
        {
            "metric": "ConsentService/Check RPS: gateway / embedded",
            "value": f"{rpc_remote['rps'] / rpc_embedded['rps']:.2f}",
        }
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    """``python -m ciphercare.services.bench.gateway [--quick] [--json FILE]``."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    rows = bench_gateway(duration_s=1.0 if args.quick else 5.0)
    for row in rows:
        extra = ", ".join(f"{k}={v}" for k, v in row.items() if k not in ("metric", "value"))
        print(f"{row['metric']:<75} {row['value']:>8}  {extra}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
