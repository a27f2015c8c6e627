"""``ciphercare bench``: print a table of figures and optionally write them as JSON.

``ledger``: the physical limit (raw batched SQLite inserts with
``synchronous=FULL``, same disk, same run), durable transactions/s through the
embedded ledger's pipelined group commit with its ratio to that limit, commit
latency, a scaling curve from 1 to 512 transactions in flight, where the CPU
goes, proof generation/verification time and size at 10^4..10^6 entries (from
:mod:`ciphercare.ledger.embedded.bench`), and ``Check`` RPS over gRPC against a server
in its own process (client and server share the 2 cores).
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

from ciphercare.services.bench import BENCHMARKS  # noqa: F401 - the registry, re-exported
from ciphercare.services.bench.pki import KEY_KIND


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


def _wait_for_line(proc: subprocess.Popen[str], marker: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None  # noqa: S101 - Popen with stdout=PIPE always sets it
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            continue
        if marker in line:
            return
    raise RuntimeError(f"server did not print {marker!r} in time")


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
                   CIPHERCARE_GRPC_PORT="0", CIPHERCARE_METRICS_PORT="0", **(extra_env or {}))
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


def ghz_binary() -> str | None:
    """The ghz load generator: ``$GHZ_BIN``, then PATH, then ``$(go env GOPATH)/bin`` (``~/go/bin``)."""
    import shutil

    for candidate in (os.environ.get("GHZ_BIN"), shutil.which("ghz"), str(Path.home() / "go" / "bin" / "ghz")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _protoset(call: str, directory: str) -> list[str]:
    """ghz ``--protoset`` for a call, built from the generated Python modules' descriptors (no reflection:
    the server's auth interceptor guards it, and grpcio-health-checking ships no .proto file)."""
    from google.protobuf import descriptor_pb2

    if call.startswith("grpc.health.v1."):
        from grpc_health.v1 import health_pb2 as module
    else:
        from ciphercare.v1 import consent_pb2 as module  # type: ignore[no-redef]
    files: dict[str, descriptor_pb2.FileDescriptorProto] = {}

    def add(fd: Any) -> None:
        if fd.name in files:
            return
        for dep in fd.dependencies:
            add(dep)
        proto = descriptor_pb2.FileDescriptorProto()
        fd.CopyToProto(proto)
        files[fd.name] = proto

    add(module.DESCRIPTOR)
    path = os.path.join(directory, call.replace("/", ".") + ".protoset")
    with open(path, "wb") as fh:
        fh.write(descriptor_pb2.FileDescriptorSet(file=list(files.values())).SerializeToString())
    return ["--protoset", path]


def _ghz(ghz: str, port: int, call: str, data: Any, metadata: dict[str, str], duration_s: float,
         concurrency: int, connections: int, cacert: Path | None = None) -> dict[str, Any]:
    """One ghz run; ``cacert``: over TLS, the server's certificate checked against this CA (else plaintext)."""
    security = ["--cacert", str(cacert)] if cacert is not None else ["--insecure"]
    with tempfile.TemporaryDirectory(prefix="ciphercare-ghz-") as tmp:
        data_path = os.path.join(tmp, "data.json")
        with open(data_path, "w") as fh:
            json.dump(data, fh)
        out = subprocess.run(
            [ghz, *security, *_protoset(call, tmp), "--call", call, "--data-file", data_path,
             "--metadata", json.dumps(metadata), "--duration", f"{duration_s}s", "--concurrency", str(concurrency),
             "--connections", str(connections),
             "--format", "json", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=duration_s + 60, check=False,
        )
    if out.returncode != 0 or not out.stdout.strip():
        raise RuntimeError(f"ghz failed ({out.returncode}): {out.stderr.strip()[:300]}")
    report = json.loads(out.stdout)
    dist = {int(d["percentage"]): d["latency"] / 1e6 for d in report.get("latencyDistribution") or []}
    codes = report.get("statusCodeDistribution") or {}
    # ghz cancels the calls still in flight when the duration ends and counts them as Unavailable:
    # up to ``concurrency`` of those are the load generator stopping, not the server failing.
    not_ok = sum(v for k, v in codes.items() if k != "OK")
    return {"rps": report["rps"], "count": report["count"], "p50_ms": dist.get(50, float("nan")),
            "p99_ms": dist.get(99, float("nan")), "status_codes": codes,
            "errors": not_ok if set(codes) - {"OK", "Unavailable"} else max(0, not_ok - concurrency)}


def _children(pid: int) -> list[str]:
    """The child processes of ``pid`` (the read replicas ``up`` started), from /proc."""
    children: list[str] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):  # any thread may have started a child
        try:
            children += (task / "children").read_text().split()
        except OSError:
            pass
    return children


def _tree_thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds of a server and its children, split: each process's main thread (its asyncio event loop,
    where gRPC aio, the interceptors, the servicer and the contract run) and its other threads (gRPC's
    event engine, executors), each in user and kernel time."""
    out = {"main_user": 0.0, "main_sys": 0.0, "other_user": 0.0, "other_sys": 0.0}
    tick = os.sysconf("SC_CLK_TCK")
    for process in [str(pid), *_children(pid)]:
        for task in Path(f"/proc/{process}/task").glob("*"):
            try:
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            where = "main" if task.name == process else "other"
            out[f"{where}_user"] += int(fields[11]) / tick
            out[f"{where}_sys"] += int(fields[12]) / tick
    return out


def _split_us(before: dict[str, float], after: dict[str, float], calls: int) -> dict[str, float]:
    return {k: round((after[k] - before[k]) / max(1, calls) * 1e6, 1) for k in before}


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds of a server and its child processes."""
    total = _process_cpu_s(pid)
    for child in _children(pid):
        try:
            total += _process_cpu_s(int(child))
        except (OSError, ValueError):
            pass
    return total


def bench_check_ghz(duration_s: float = 10.0, concurrency: int = 32, connections: int = 4,
                    processes: int = 1, health_s: float = 5.0, repeats: int = 1, tls: bool = False,
                    warmup_s: float = 1.0) -> dict[str, Any]:
    """``Check`` and the gRPC Health floor under ghz (a Go load generator), server in its own process.

    The same server, the same run: first ``ConsentService/Check`` as a hospital over 50 patients with a
    consent each (round robin), then ``grpc.health.v1.Health/Check`` with the same concurrency. Server CPU
    per call comes from /proc. ``tls``: the server serves TLS only, with a certificate made for this run
    (services/bench/pki.py); the clients (the set-up and ghz) check it against the run's CA.
    """
    ghz = ghz_binary()
    if ghz is None:
        raise RuntimeError("ghz not found: set GHZ_BIN or `go install github.com/bojand/ghz/cmd/ghz@v0.121.0`")
    from ciphercare.services.identity.devissuer import DevIssuer
    from ciphercare.services.platform.settings import load_settings
    from ciphercare.v1 import common_pb2, consent_pb2, consent_pb2_grpc

    with tempfile.TemporaryDirectory(prefix="ciphercare-bench-") as tmp:
        issuer_port = free_port()
        env = dict(os.environ, CIPHERCARE_DATA_DIR=tmp, CIPHERCARE_DEV_ISSUER_PORT=str(issuer_port),
                   CIPHERCARE_GRPC_PORT="0", CIPHERCARE_METRICS_PORT="0", CIPHERCARE_WEB_ENABLED="false",
                   CIPHERCARE_GRPC_PROCESSES=str(processes))
        for name in list(env):  # only what this run sets: no TLS or mTLS settings from the caller's environment
            if name.startswith("CIPHERCARE_TLS_"):
                del env[name]
        pki = None
        if tls:
            from ciphercare.services.bench.pki import make_pki

            pki = make_pki(Path(tmp) / "tls")
            env.update(CIPHERCARE_TLS_CERT_PATH=str(pki.cert), CIPHERCARE_TLS_KEY_PATH=str(pki.key))
        cacert = pki.ca if pki is not None else None
        settings = load_settings(data_dir=Path(tmp), dev_issuer_port=issuer_port)
        proc = subprocess.Popen([sys.executable, "-m", "ciphercare.services.cli.main", "up"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            port = _wait_for_port(proc, 60.0)
            _wait_for_line(proc, "try: ciphercare demo", 120.0)  # every replica is serving
            issuer = DevIssuer.from_settings(settings)
            hospital = issuer.issue(subject="bench-hospital", roles=["hospital"], org="hospital-a")
            pids = [f"pt-bench-{i:04d}" for i in range(50)]

            def channel() -> grpc.aio.Channel:
                if cacert is None:
                    return grpc.aio.insecure_channel(f"127.0.0.1:{port}")
                return grpc.aio.secure_channel(f"127.0.0.1:{port}", grpc.ssl_channel_credentials(cacert.read_bytes()))

            async def grant_all() -> None:
                async with channel() as channel_:
                    stub = consent_pb2_grpc.ConsentServiceStub(channel_)
                    for pid in pids:
                        token = issuer.issue(subject=f"bench-{pid}", roles=["patient"], org="", pid=pid)
                        await stub.Grant(consent_pb2.GrantRequest(
                            pid=pid, grantee_organization="hospital-a",
                            decision=consent_pb2.CONSENT_DECISION_PERMIT, purposes=["TREAT"],
                            data_classes=["Observation"], period=common_pb2.Period(),
                        ), metadata=[("authorization", f"Bearer {token}")], timeout=30)

            asyncio.run(grant_all())
            checks = [{"pid": pid, "recipient_organization": "hospital-a", "purpose": "TREAT",
                       "data_class": "Observation"} for pid in pids]
            auth = {"authorization": f"Bearer {hospital}"}
            _ghz(ghz, port, "ciphercare.v1.ConsentService.Check", checks, auth, warmup_s, concurrency, connections,
                 cacert)
            check, check_cpu, health, health_cpu = None, 0.0, None, 0.0
            # The machine may be shared: the best of ``repeats`` short runs of each, alternated, same server.
            check_split: dict[str, float] = {}
            health_split: dict[str, float] = {}
            for _ in range(max(1, repeats)):
                cpu0, split0 = _tree_cpu_s(proc.pid), _tree_thread_cpu_s(proc.pid)
                run = _ghz(ghz, port, "ciphercare.v1.ConsentService.Check", checks, auth, duration_s, concurrency,
                           connections, cacert)
                cpu = _tree_cpu_s(proc.pid) - cpu0
                if check is None or run["rps"] > check["rps"]:
                    check, check_cpu = run, cpu
                    check_split = _split_us(split0, _tree_thread_cpu_s(proc.pid), run["count"])
                cpu0, split0 = _tree_cpu_s(proc.pid), _tree_thread_cpu_s(proc.pid)
                run = _ghz(ghz, port, "grpc.health.v1.Health.Check", {}, {}, min(duration_s, health_s), concurrency,
                           connections, cacert)
                cpu = _tree_cpu_s(proc.pid) - cpu0
                if health is None or run["rps"] > health["rps"]:
                    health, health_cpu = run, cpu
                    health_split = _split_us(split0, _tree_thread_cpu_s(proc.pid), run["count"])
            assert check is not None and health is not None  # noqa: S101 - at least one run
            return {
                "load_generator": "ghz",
                "tls": f"server TLS, {KEY_KIND} certificate made in the run" if tls else "",
                "processes": processes,
                "server_processes_measured": 1 + len(_children(proc.pid)),
                "concurrency": concurrency,
                "connections": connections,
                "check": check,
                "check_server_cpu_us": check_cpu / max(1, check["count"]) * 1e6,
                "health": health,
                "health_server_cpu_us": health_cpu / max(1, health["count"]) * 1e6,
                # µs per call by thread kind (main = each process's event loop) and user / kernel time
                "check_cpu_split_us": check_split,
                "health_cpu_split_us": health_split,
            }
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def bench_check_scaling(process_counts: tuple[int, ...] = (1, 2, 3, 4), *, duration_s: float = 4.0,
                        health_s: float = 3.0, repeats: int = 2, concurrency: int = 32,
                        connections: int = 16, tls_counts: tuple[int, ...] = (),
                        warmup_s: float = 1.0) -> list[dict[str, Any]]:
    """``Check`` and the Health floor under ghz for each number of server processes (issue 16 item 2); for
    the counts in ``tls_counts`` the same again over TLS (issue 14), as the run's ``with_tls`` entry."""
    def measure(n: int, tls: bool) -> dict[str, Any]:
        return bench_check_ghz(duration_s=duration_s, concurrency=concurrency, connections=connections,
                               processes=n, health_s=health_s, repeats=repeats, tls=tls, warmup_s=warmup_s)

    results = []
    for n in process_counts:
        run = measure(n, False)
        run["with_tls"] = measure(n, True) if n in tls_counts else None
        results.append(run)
    return results


def check_scaling_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for g in results:
        c, h = g["check"], g["health"]
        n = g["processes"]
        rows.append({"metric": f"{n} process(es): Check RPS, p50 / p99", "value":
                     f"{c['rps']:.0f}, {c['p50_ms']:.2f} / {c['p99_ms']:.2f} ms",
                     "target": ">= 3000, p99 <= 10 ms",
                     "met": "yes" if c["rps"] >= 3000 and c["p99_ms"] <= 10 and not c["errors"] else "NO"})
        rows.append({"metric": f"{n} process(es): Health floor RPS, p99; Check / floor",
                     "value": f"{h['rps']:.0f}, {h['p99_ms']:.2f} ms; {c['rps'] / h['rps']:.2f}", "target": "",
                     "met": ""})
        rows.append({"metric": f"{n} process(es): server CPU per Check / per Health",
                     "value": f"{g['check_server_cpu_us']:.0f} / {g['health_server_cpu_us']:.0f} us", "target": "",
                     "met": ""})
        cs, hs = g.get("check_cpu_split_us") or {}, g.get("health_cpu_split_us") or {}
        if cs and hs:
            rows.append({"metric": f"{n} process(es): CPU per call in the event-loop threads, user + kernel "
                                   "(Check / Health); other threads",
                         "value": f"{cs['main_user']:.0f} + {cs['main_sys']:.0f} / {hs['main_user']:.0f} + "
                                  f"{hs['main_sys']:.0f} us; {cs['other_user'] + cs['other_sys']:.0f} / "
                                  f"{hs['other_user'] + hs['other_sys']:.0f} us", "target": "", "met": ""})
        secure = g.get("with_tls")
        if secure:
            t, th = secure["check"], secure["health"]
            rows.append({"metric": f"{n} process(es), TLS: Check RPS, p50 / p99",
                         "value": f"{t['rps']:.0f}, {t['p50_ms']:.2f} / {t['p99_ms']:.2f} ms",
                         "target": ">= 3000, p99 <= 10 ms",
                         "met": "yes" if t["rps"] >= 3000 and t["p99_ms"] <= 10 and not t["errors"] else "NO"})
            rows.append({"metric": f"{n} process(es), TLS / plaintext: Check RPS, p99; Health RPS",
                         "value": f"{t['rps'] / c['rps']:.2f}, {t['p99_ms'] / c['p99_ms']:.2f}; "
                                  f"{th['rps'] / h['rps']:.2f}", "target": "", "met": ""})
            rows.append({"metric": f"{n} process(es), TLS: server CPU per Check / per Health",
                         "value": f"{secure['check_server_cpu_us']:.0f} / {secure['health_server_cpu_us']:.0f} us",
                         "target": "", "met": ""})
    return rows


def check_tls_summary(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per process count measured both ways: Check RPS and p99 in plaintext and with TLS, and their ratios."""
    summary = []
    for g in results:
        secure = g.get("with_tls")
        if not secure:
            continue
        plain, tls = g["check"], secure["check"]
        summary.append({"processes": g["processes"], "plaintext_rps": plain["rps"], "plaintext_p99_ms": plain["p99_ms"],
                        "tls_rps": tls["rps"], "tls_p99_ms": tls["p99_ms"],
                        "rps_ratio_tls_to_plaintext": tls["rps"] / plain["rps"],
                        "p99_ratio_tls_to_plaintext": tls["p99_ms"] / plain["p99_ms"], "tls": secure["tls"]})
    return summary


def _table(rows: list[dict[str, Any]]) -> str:
    headers = ["metric", "value", "target", "met"]
    widths = [max(len(str(r.get(h, ""))) for r in rows + [dict(zip(headers, headers, strict=True))])
              for h in headers]
    lines = [" | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    for row in rows:
        lines.append(" | ".join(str(row.get(h, "")).ljust(w) for h, w in zip(headers, widths, strict=True)))
    return "\n".join(lines)


def run_bench(which: str, *, quick: bool = False, smoke: bool = False, out: Path | None = None,
              witness: bool = False, million: bool = False, concrete: bool = False, events: int | None = None,
              database_url: str = "") -> list[dict[str, Any]]:
    """Run benchmark ``which``; with ``out`` write its JSON report plus its headline ``figures``
    (:mod:`ciphercare.services.bench.figures`) and the options it ran with.

    ``smoke``: the smallest sizes (checks the benchmark runs; its figures mean little); benchmarks without
    smoke sizes run ``quick``. ``concrete``: Concrete ML in ``scoring`` (never installed or run without it).
    """
    _quiet_logging()
    rows = _run(which, quick=quick or smoke, smoke=smoke, out=out, witness=witness, million=million,
                concrete=concrete, events=events, database_url=database_url)
    if out is not None and out.is_file():
        from ciphercare.services.bench.figures import figures_for

        report = json.loads(out.read_text())
        if isinstance(report, dict):
            report["figures"] = figures_for(report)
            report["options"] = {"quick": quick, "smoke": smoke, "concrete_ml": concrete}
            out.write_text(json.dumps(report, indent=2) + "\n")
    return rows


def _quiet_logging() -> None:
    """Tables and JSON only: the Fabric shim's import sets the root logger to DEBUG (``basicConfig``), and
    alembic and the embedded services log at INFO; import the shim first, then keep warnings only."""
    import logging

    import fabric_chaincode_python.fabric_shim.logging  # noqa: F401 - its import-time basicConfig, once

    logging.getLogger().setLevel(logging.WARNING)
    for name in ("alembic", "asyncio"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _run(which: str, *, quick: bool, smoke: bool, out: Path | None, witness: bool, million: bool,
         concrete: bool, events: int | None, database_url: str) -> list[dict[str, Any]]:
    if which == "audit":  # compliance reads at scale (issue 15 item 5): services/bench/audit.py
        from ciphercare.services.bench.audit import run_audit_bench

        return run_audit_bench(quick=quick, out=out, database_url=database_url,
                               events=2_000 if smoke and events is None else events)
    if which == "auth":  # identity: one bearer-token verification (services/bench/auth.py)
        from ciphercare.services.bench.auth import run_auth_bench

        return run_auth_bench(n=500 if smoke else 5000, out=out)
    if which == "anomaly":  # unusual-access detection: analytics/anomaly/bench.py (docs/ANOMALY.md)
        from ciphercare.analytics.anomaly.bench import run_anomaly_bench

        return run_anomaly_bench(quick=quick, include_million=million, out=out)
    if which == "ledger" and witness:  # the cost of witnessing (ledger integrity, issue 11)
        from ciphercare.ledger.witness.bench import bench_witnessing, format_witness_rows

        rows = bench_witnessing(duration_s=1.0 if smoke else 1.5 if quick else 3.0,
                                samples=20 if smoke else 50 if quick else 200)
        print(format_witness_rows(rows))
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"benchmark": "ledger-witness", "rows": rows,
                                       "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}},
                                      indent=2))
        return rows
    if which == "scoring-e2e":  # scoreperf: end to end beside the HE pipeline alone (services/bench/scoring_e2e.py)
        from ciphercare.services.bench.scoring_e2e import run_e2e_bench

        if smoke:
            return run_e2e_bench(quick=True, out=out, repeats=1, n=64)
        return run_e2e_bench(quick=quick, out=out)
    if which == "growth":  # scoreperf: append, proof, start-up, RSS and search from 10^4 to 10^6 entries
        from ciphercare.services.bench.growth import run_growth_bench

        return run_growth_bench(quick=quick, out=out, sizes=(10**3, 2 * 10**3) if smoke else None)
    if which == "scoring":  # encrypted risk scoring: services/bench/scoring.py
        from ciphercare.services.bench.scoring import run_scoring_bench

        return run_scoring_bench(quick=quick, out=out, concrete=concrete, smoke=smoke)
    if which == "check":  # issue 16 item 2: Check with 1..4 server processes, the Health floor beside it
        if ghz_binary() is None:
            raise RuntimeError("ghz not found: set GHZ_BIN or `go install github.com/bojand/ghz/cmd/ghz@v0.121.0`")
        counts = (1, 2) if quick else (1, 2, 3, 4)
        # TLS beside plaintext (issue 14): every process count, or the first one only in a quick run.
        short = 0.5 if smoke else 1.5
        results = bench_check_scaling(counts, duration_s=short if quick else 4.0, health_s=short if quick else 3.0,
                                      repeats=1 if quick else 2, tls_counts=counts[:1] if quick else counts,
                                      warmup_s=0.3 if smoke else 1.0)
        rows = check_scaling_rows(results)
        print("ghz, 32 in flight over 16 connections; best of the runs per process count (shared machine); "
              f"TLS: a server certificate ({KEY_KIND}) made in the run, checked by ghz (--cacert)")
        print(_table(rows))
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"benchmark": "check", "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                       "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                                       "rows": rows, "tls_vs_plaintext": check_tls_summary(results),
                                       "runs": results}, indent=2))
            print(f"\nwrote {out}")
        return rows
    if which != "ledger":
        raise ValueError(f"unknown benchmark {which!r}")
    from ciphercare.ledger.embedded.bench import run_ledger_bench

    sizes = (10**4,) if smoke else (10**4, 10**5) if quick else (10**4, 10**5, 10**6)
    if smoke:
        rows = list(run_ledger_bench(sizes=sizes, quick=True, duration_s=0.2, in_flights=(1, 8)))
    else:
        rows = list(run_ledger_bench(sizes=sizes, quick=quick))
    if ghz_binary() is not None:
        g = bench_check_ghz(duration_s=0.5 if smoke else 2.0 if quick else 10.0, warmup_s=0.3 if smoke else 1.0)
        c, h = g["check"], g["health"]
        load = f"ghz, {g['concurrency']} in flight over {g['connections']} connections, 1 server process"
        check: dict[str, Any] = g
        rows.append({"metric": f"Check RPS over gRPC ({load})", "value": f"{c['rps']:.0f}",
                     "target": ">= 3000", "met": "yes" if c["rps"] >= 3000 and not c["errors"] else "NO"})
        rows.append({"metric": "Check latency p50 / p99", "value": f"{c['p50_ms']:.2f} / {c['p99_ms']:.2f} ms",
                     "target": "p99 <= 10 ms", "met": "yes" if c["p99_ms"] <= 10 else "NO"})
        rows.append({"metric": "Check server CPU per request", "value": f"{g['check_server_cpu_us']:.0f} us",
                     "target": "", "met": ""})
        rows.append({"metric": "gRPC floor: Health.Check RPS / p99 (same server, same load)",
                     "value": f"{h['rps']:.0f} / {h['p99_ms']:.2f} ms", "target": "", "met": ""})
        rows.append({"metric": "gRPC floor: server CPU per Health.Check, ratio Check RPS / floor RPS",
                     "value": f"{g['health_server_cpu_us']:.0f} us, {c['rps'] / h['rps']:.2f}", "target": "",
                     "met": ""})
    else:
        check = bench_check_rps(duration_s=1.0 if smoke else 3.0 if quick else 10.0)
        rows.append({"metric": "Check RPS over gRPC (Python load generator: ghz not found; 1 server process)",
                     "value": f"{check['rps']:.0f}", "target": ">= 3000",
                     "met": "yes" if check["rps"] >= 3000 else "NO"})
        rows.append({"metric": "Check latency p99 over gRPC", "value": f"{check['p99_ms']:.2f} ms",
                     "target": "<= 10 ms", "met": "yes" if check["p99_ms"] <= 10 else "NO"})
        rows.append({"metric": "gRPC floor: Health.Check RPS, same load", "value": f"{check['grpc_floor_rps']:.0f}",
                     "target": "", "met": ""})
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
