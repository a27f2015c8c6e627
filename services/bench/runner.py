"""``ciphercare bench``: print a table of figures and optionally write them as JSON.

``ledger``: durable appends/s and commit latency through the embedded ledger's
group commit, proof generation/verification time and size at 10^4..10^6
entries (from :mod:`ciphercare.ledger.embedded.bench`), and ``Check`` RPS over gRPC
against a server in its own process (client and server share the 2 cores).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(q * (len(ordered) - 1)))))
    return ordered[index]


def _process_cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A currently free loopback TCP port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(proc: subprocess.Popen[str], timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None  # noqa: S101 - Popen with stdout=PIPE always sets it
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            continue
        if line.strip().startswith("gRPC"):
            return int(line.rsplit(":", 1)[1])
    raise RuntimeError("server did not report its port in time")


def bench_check_rps(
    duration_s: float = 10.0, concurrency: int = 32, extra_env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Consent ``Check`` requests per second over real gRPC on loopback, server in a subprocess.

    ``extra_env`` configures the server further (the Fabric Gateway backend: services/bench/gateway.py).
    """
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from ciphercare.services.identity.devissuer import DevIssuer
    from ciphercare.services.platform.settings import load_settings
    from ciphercare.v1 import common_pb2, consent_pb2, consent_pb2_grpc

    with tempfile.TemporaryDirectory(prefix="ciphercare-bench-") as tmp:
        issuer_port = free_port()
        env = dict(os.environ, CIPHERCARE_DATA_DIR=tmp, CIPHERCARE_DEV_ISSUER_PORT=str(issuer_port),
                   CIPHERCARE_GRPC_PORT="0", **(extra_env or {}))
        settings = load_settings(data_dir=Path(tmp), dev_issuer_port=issuer_port)
        proc = subprocess.Popen([sys.executable, "-m", "ciphercare.services.cli.main", "up"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            port = _wait_for_port(proc, 60.0)
            issuer = DevIssuer.from_settings(settings)
            hospital = issuer.issue(subject="bench-hospital", roles=["hospital"], org="hospital-a")
            patient_tokens = {}
            pids = [f"pt-bench-{i:04d}" for i in range(50)]
            for pid in pids:
                patient_tokens[pid] = issuer.issue(subject=f"bench-{pid}", roles=["patient"], org="", pid=pid)

            async def load() -> dict[str, Any]:
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                    stub = consent_pb2_grpc.ConsentServiceStub(channel)
                    for pid in pids:
                        await stub.Grant(consent_pb2.GrantRequest(
                            pid=pid, grantee_organization="hospital-a",
                            decision=consent_pb2.CONSENT_DECISION_PERMIT, purposes=["TREAT"],
                            data_classes=["Observation"], period=common_pb2.Period(),
                        ), metadata=[("authorization", f"Bearer {patient_tokens[pid]}")], timeout=30)
                    meta = [("authorization", f"Bearer {hospital}")]
                    latencies: list[float] = []
                    errors = 0
                    stop_at = time.perf_counter() + duration_s

                    async def worker(n: int) -> None:
                        nonlocal errors
                        i = n
                        while time.perf_counter() < stop_at:
                            pid = pids[i % len(pids)]
                            i += concurrency
                            t0 = time.perf_counter()
                            try:
                                await stub.Check(consent_pb2.CheckRequest(
                                    pid=pid, recipient_organization="hospital-a", purpose="TREAT",
                                    data_class="Observation"), metadata=meta, timeout=10)
                            except grpc.aio.AioRpcError:
                                errors += 1
                                continue
                            latencies.append(time.perf_counter() - t0)

                    cpu_before = _process_cpu_s(proc.pid)
                    start = time.perf_counter()
                    await asyncio.gather(*(worker(n) for n in range(concurrency)))
                    elapsed = time.perf_counter() - start
                    server_cpu = _process_cpu_s(proc.pid) - cpu_before

                    # The floor: the same load on grpc.health.v1 Check (no auth, no ledger).
                    health = health_pb2_grpc.HealthStub(channel)
                    floor: list[float] = []
                    floor_stop = time.perf_counter() + min(duration_s, 3.0)

                    async def floor_worker() -> None:
                        while time.perf_counter() < floor_stop:
                            t0 = time.perf_counter()
                            await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
                            floor.append(time.perf_counter() - t0)

                    floor_cpu_before = _process_cpu_s(proc.pid)
                    floor_start = time.perf_counter()
                    await asyncio.gather(*(floor_worker() for _ in range(concurrency)))
                    floor_elapsed = time.perf_counter() - floor_start
                    floor_cpu = _process_cpu_s(proc.pid) - floor_cpu_before
                    return {
                        "requests": len(latencies),
                        "errors": errors,
                        "rps": len(latencies) / elapsed,
                        "p50_ms": _percentile(latencies, 0.50) * 1000,
                        "p99_ms": _percentile(latencies, 0.99) * 1000,
                        "concurrency": concurrency,
                        "server_cpu_us_per_request": server_cpu / max(1, len(latencies)) * 1e6,
                        "grpc_floor_rps": len(floor) / floor_elapsed,
                        "grpc_floor_server_cpu_us": floor_cpu / max(1, len(floor)) * 1e6,
                    }

            return asyncio.run(load())
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _table(rows: list[dict[str, Any]]) -> str:
    headers = ["metric", "value", "target", "met"]
    widths = [max(len(str(r.get(h, ""))) for r in rows + [dict(zip(headers, headers, strict=True))])
              for h in headers]
    lines = [" | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    for row in rows:
        lines.append(" | ".join(str(row.get(h, "")).ljust(w) for h, w in zip(headers, widths, strict=True)))
    return "\n".join(lines)


def run_bench(which: str, *, quick: bool = False, out: Path | None = None,
              witness: bool = False) -> list[dict[str, Any]]:
    if which == "ledger" and witness:  # the cost of witnessing (ledger integrity, issue 11)
        from ciphercare.ledger.witness.bench import bench_witnessing, format_witness_rows

        rows = bench_witnessing(duration_s=1.5 if quick else 3.0, samples=50 if quick else 200)
        print(format_witness_rows(rows))
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"benchmark": "ledger-witness", "rows": rows,
                                       "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}},
                                      indent=2))
        return rows
    if which == "scoring":  # encrypted risk scoring: services/bench/scoring.py
        from ciphercare.services.bench.scoring import run_scoring_bench

        return run_scoring_bench(quick=quick, out=out)
    if which != "ledger":
        raise ValueError(f"unknown benchmark {which!r}")
    from ciphercare.ledger.embedded.bench import run_ledger_bench

    sizes = (10**4, 10**5) if quick else (10**4, 10**5, 10**6)
    rows = list(run_ledger_bench(sizes=sizes))
    check = bench_check_rps(duration_s=3.0 if quick else 10.0)
    rows.append({"metric": "Check RPS over gRPC (1 server process, 32 in flight)",
                 "value": f"{check['rps']:.0f}", "target": ">= 3000",
                 "met": "yes" if check["rps"] >= 3000 else "NO"})
    rows.append({"metric": "Check latency p99 over gRPC", "value": f"{check['p99_ms']:.2f} ms",
                 "target": "<= 10 ms", "met": "yes" if check["p99_ms"] <= 10 else "NO"})
    rows.append({"metric": "Check latency p50 over gRPC", "value": f"{check['p50_ms']:.2f} ms",
                 "target": "", "met": ""})
    rows.append({"metric": "Check server CPU per request", "value": f"{check['server_cpu_us_per_request']:.0f} us",
                 "target": "", "met": ""})
    rows.append({"metric": "gRPC floor: Health.Check RPS, same load", "value": f"{check['grpc_floor_rps']:.0f}",
                 "target": "", "met": ""})
    rows.append({"metric": "gRPC floor: server CPU per Health.Check",
                 "value": f"{check['grpc_floor_server_cpu_us']:.0f} us", "target": "", "met": ""})
    print(_table(rows))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({
            "benchmark": which,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform()},
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "rows": rows,
            "check_rps_raw": check,
        }, indent=2))
        print(f"\nwrote {out}")
    return rows
