"""``ciphercare bench scoring``: plaintext XGBoost vs ciphercare (encrypted, model-private) vs Concrete ML.

One run, one machine, one model and data set: the default WHAS500 model (100 trees, depth 3) and
10,000 patients (the 100 held-out patients first, then rows drawn from WHAS500 with replacement;
``--quick``: 4,096). ciphercare is measured twice: the server's evaluation alone (the service's
worker pool, 2 processes) and end to end through the real gRPC service in its own process (consent
check and access event per patient included) with the hospital SDK at batch 1, 256 and full.
Concrete ML's encrypted XGBoost (same training split, trees, depth and learning rate) runs only when
asked (``--concrete``), in its own virtualenv (installed on first use, then reused from the cache); at
~1-2 minutes per patient it executes one patient, and its accuracy is taken from its FHE simulation of
the held-out split.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

TARGETS = {
    "server_patients_per_s": 5000.0,
    "e2e_ms_per_patient_full": 0.35,
    "single_patient_s": 0.5,
    "upload_bytes_per_patient": 8 * 1024,
    "evaluation_key_bytes": 4 * 1024 * 1024,
}


def _accuracy(margins: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    return {"agreement": float(np.mean((margins > 0) == (reference > 0))),
            "max_abs_margin_error": float(np.max(np.abs(margins - reference)))}


def _server_process(data_dir: Path) -> tuple[subprocess.Popen[str], int, Any]:
    from ciphercare.services.bench.runner import _wait_for_port, free_port
    from ciphercare.services.platform.settings import load_settings

    issuer_port = free_port()
    env = dict(os.environ, CIPHERCARE_DATA_DIR=str(data_dir), CIPHERCARE_DEV_ISSUER_PORT=str(issuer_port),
               CIPHERCARE_GRPC_PORT="0")
    # The server's JSON log is kept beside its data (server.log), so a refusal during set-up can be explained.
    with open(data_dir / "server.log", "ab") as server_log:
        proc = subprocess.Popen([sys.executable, "-m", "ciphercare.services.cli.main", "up"], env=env,
                                stdout=subprocess.PIPE, stderr=server_log, text=True)
    port = _wait_for_port(proc, 90.0)
    return proc, port, load_settings(data_dir=data_dir, dev_issuer_port=issuer_port)


#: Grants the set-up retried after UNAVAILABLE (the service's "nothing was written, retry later").
GRANT_RETRIES: list[str] = []


def unavailable_causes(data_dir: Path) -> dict[str, int]:
    """The server log's "dependency unavailable" warnings (``server.log``), counted by driver message."""
    causes: dict[str, int] = {}
    try:
        lines = (data_dir / "server.log").read_text(errors="replace").splitlines()
    except OSError:
        return causes
    for line in lines:
        if '"dependency unavailable"' not in line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        key = f"{record.get('error', '?')}: {record.get('detail', '')}"
        causes[key] = causes.get(key, 0) + 1
    return causes


async def worker_once(stub: Any, issuer: Any, pid: str) -> None:
    """One patient's Grant; UNAVAILABLE (nothing written) is retried as a client should, up to 8 times."""
    import grpc

    from ciphercare.v1 import common_pb2, consent_pb2

    token = issuer.issue(subject=f"patient-{pid}", roles=["patient"], org="", pid=pid)
    request = consent_pb2.GrantRequest(
        pid=pid, grantee_organization="hospital-a", decision=consent_pb2.CONSENT_DECISION_PERMIT,
        purposes=["TREAT"], data_classes=["Observation"], period=common_pb2.Period())
    for attempt in range(9):
        try:
            await stub.Grant(request, metadata=[("authorization", f"Bearer {token}")], timeout=60)
            return
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt == 8:
                raise
            GRANT_RETRIES.append(exc.details() or "")
            await asyncio.sleep(min(0.25 * 2 ** attempt, 4.0))


async def _grant_all(target: str, issuer: Any, pids: list[str]) -> None:
    """Each patient grants hospital-a TREAT on Observation (with their own token)."""
    import grpc

    from ciphercare.v1 import consent_pb2_grpc

    async with grpc.aio.insecure_channel(target) as channel:
        stub = consent_pb2_grpc.ConsentServiceStub(channel)
        queue = list(pids)

        async def worker() -> None:
            while queue:
                await worker_once(stub, issuer, queue.pop())

        await worker_once(stub, issuer, queue.pop())  # the server fetches its issuer's JWKS once, then caches it
        await asyncio.gather(*(worker() for _ in range(48)))


def _server_side(package: Any, keys: Any, bits: np.ndarray, work: Path) -> dict[str, Any]:
    """The service's evaluation pool on pre-encrypted batches: wall time for batch 1, 256 and full."""
    from ciphercare.services.scoring.pool import EvaluationPool, evaluate_batch, evaluate_part, finish_parts, warm

    model_file, context_file = work / "model.json", work / "context.ctx"
    sha = package.save(model_file)
    context_file.write_bytes(keys.public_context)
    pool = EvaluationPool.shared()
    for future in [pool.submit(warm, str(context_file), keys.context_id, str(model_file), sha)
                   for _ in range(pool.workers * 2)]:
        future.result()
    started = time.perf_counter()
    batches = keys.encrypt_bits(bits)
    encrypt_s = time.perf_counter() - started
    out: dict[str, Any] = {"client_encrypt_s": encrypt_s, "ciphertexts": sum(len(b) for b in batches)}
    single, whole = [], []
    for _ in range(3):  # one batch as the service runs it for a small call: split over the workers
        t0 = time.perf_counter()
        parts = [pool.submit(evaluate_part, str(context_file), keys.context_id, str(model_file), sha, batches[0], 0,
                             k, pool.workers, 1) for k in range(pool.workers)]
        pool.submit(finish_parts, str(context_file), keys.context_id, [f.result()[0] for f in parts], 1).result()
        single.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        pool.submit(evaluate_batch, str(context_file), keys.context_id, str(model_file), sha, batches[0], 0,
                    keys.params.slots).result()
        whole.append(time.perf_counter() - t0)
    out["one_batch_s"] = statistics.median(single)
    out["one_batch_one_worker_s"] = statistics.median(whole)
    t0 = time.perf_counter()
    owned = [min(keys.params.slots, bits.shape[0] - i * keys.params.slots) for i in range(len(batches))]
    futures = [pool.submit(evaluate_batch, str(context_file), keys.context_id, str(model_file), sha, b, i, owned[i])
               for i, b in enumerate(batches)]
    results = [f.result() for f in futures]
    out["full_s"] = time.perf_counter() - t0
    out["worker_s"] = [r[1] for r in results]
    t0 = time.perf_counter()
    margins = np.concatenate([keys.decrypt(r[0], min(keys.params.slots, bits.shape[0] - i * keys.params.slots))
                              for i, r in enumerate(results)])
    out["decrypt_s"] = time.perf_counter() - t0
    out["margins"] = margins
    out["workers"] = pool.workers
    return out


def evaluate_batch_without_checks(context_path: str, context_id: str, model_path: str, model_sha256: str,
                                  envelopes: list[bytes]) -> tuple[bytes, float]:
    """The evaluation as it was before issue 12 (every slot, no validity term): the bench's anchor only.

    Runs in a pool worker; never used by the service.
    """
    from ciphercare.services.scoring import pool as scoring_pool

    started = time.perf_counter()
    evaluator = scoring_pool._evaluator(context_path, context_id)
    _package, form = scoring_pool._model(model_path, model_sha256, evaluator)
    bits = [evaluator.load_ciphertext(env) for env in envelopes]
    return evaluator.finish_partials([evaluator.evaluate_partial(form, bits, groups=None)]), \
        time.perf_counter() - started


def run_server_bench(*, out: Path | None = None, batches: int = 3) -> list[dict[str, Any]]:
    """Server throughput at full batches, with slot ownership and validity checks and without them (quick)."""
    from ciphercare.analytics.client.keys import KeyOwner
    from ciphercare.analytics.model.datasets import load_whas500
    from ciphercare.analytics.model.forms import model_form
    from ciphercare.analytics.model.training import train_model
    from ciphercare.services.scoring.pool import EvaluationPool, evaluate_batch, evaluate_part, finish_parts, warm

    load_before = os.getloadavg()
    dataset = load_whas500()
    training = train_model(dataset)
    package = training.package
    keys = KeyOwner.generate()
    slots = keys.params.slots
    n = batches * slots
    rng = np.random.default_rng(1)
    x = np.concatenate([training.test.x, dataset.x[rng.integers(0, len(dataset), n - len(training.test))]])
    reference = training.xgboost_margin(x)
    bits = package.grid.bits(x)
    rows: list[dict[str, Any]] = []
    raw: dict[str, Any] = {"n": n, "model_sha256": package.sha256, "form_counts": model_form(package).counts(),
                           "validity_products": package.grid.n_edges}
    with tempfile.TemporaryDirectory(prefix="ciphercare-bench-scoring-") as tmp:
        work = Path(tmp)
        model_file, context_file = work / "model.json", work / "context.ctx"
        sha = package.save(model_file)
        context_file.write_bytes(keys.public_context)
        ctx, cid, model = str(context_file), keys.context_id, str(model_file)
        pool = EvaluationPool.shared()
        for future in [pool.submit(warm, ctx, cid, model, sha) for _ in range(pool.workers * 2)]:
            future.result()
        encrypted = keys.encrypt_bits(bits)
        print(f"server bench: {n} patients in {batches} full batches, {pool.workers} worker processes; "
              f"load average {load_before[0]:.2f}", flush=True)
        for label, checked in (("without slot ownership and validity (before issue 12)", False),
                               ("with slot ownership and validity (now)", True)):
            t0 = time.perf_counter()
            if checked:
                futures = [pool.submit(evaluate_batch, ctx, cid, model, sha, b, i, slots)
                           for i, b in enumerate(encrypted)]
            else:
                futures = [pool.submit(evaluate_batch_without_checks, ctx, cid, model, sha, b) for b in encrypted]
            results = [f.result() for f in futures]
            seconds = time.perf_counter() - t0
            margins = np.concatenate([keys.decrypt(r[0], slots) for r in results])
            acc = _accuracy(margins, reference)
            rows.append({"system": f"ciphercare server, full batches, {label}", "batch": n,
                         "server_ms_per_patient": seconds / n * 1e3, "patients_per_s": n / seconds,
                         "worker_s_per_batch": statistics.median([r[1] for r in results]), **acc})
        # A small call (one patient owned): one batch split over the workers, masked.
        for label, owned in (("one patient owned (masked), split over the workers", 1),):
            times = []
            for _ in range(4):  # the first runs fill each worker's cache of masked coefficients
                t0 = time.perf_counter()
                parts = [pool.submit(evaluate_part, ctx, cid, model, sha, encrypted[0], 0, k, pool.workers, owned)
                         for k in range(pool.workers)]
                pool.submit(finish_parts, ctx, cid, [f.result()[0] for f in parts], owned).result()
                times.append(time.perf_counter() - t0)
            rows.append({"system": f"ciphercare server, {label}", "batch": 1,
                         "server_ms_per_patient": min(times) * 1e3, "patients_per_s": 1 / min(times),
                         "worker_s_per_batch": min(times), "agreement": None, "max_abs_margin_error": None})
    load_after = os.getloadavg()
    print(f"{'system':<95} {'patients/s':>11} {'ms/patient':>11} {'agreement':>10} {'max |dm|':>10}")
    for row in rows:
        agreement = "" if row["agreement"] is None else f"{row['agreement'] * 100:.1f} %"
        error = "" if row["max_abs_margin_error"] is None else f"{row['max_abs_margin_error']:.1e}"
        print(f"{row['system']:<95} {row['patients_per_s']:>11,.0f} {row['server_ms_per_patient']:>11.4f} "
              f"{agreement:>10} {error:>10}")
    print(f"load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} (machine shared)")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"benchmark": "scoring-server", "when": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                          time.gmtime()),
                                   "machine": {"cpus": os.cpu_count(), "load_average_before": load_before,
                                               "load_average_after": load_after},
                                   "rows": rows, "raw": raw}, indent=2, default=_json_default))
        print(f"wrote {out}")
    return rows


def run_scoring_bench(*, quick: bool = False, out: Path | None = None, concrete: bool = False,
                      smoke: bool = False) -> list[dict[str, Any]]:
    """Run every measurement, print one table, write JSON; returns the table rows.

    ``quick``: the server's throughput only, with and without slot ownership and validity (about a minute);
    ``smoke``: the same with one batch. ``concrete``: also Concrete ML (installs it on first use; never
    without this flag).
    """
    if quick or smoke:
        return run_server_bench(out=out, batches=1 if smoke else 3)
    import xgboost as xgb

    from ciphercare.analytics.client.keys import KeyOwner
    from ciphercare.analytics.model.datasets import load_whas500
    from ciphercare.analytics.model.forms import model_form
    from ciphercare.analytics.model.training import roc_auc, sigmoid, train_model
    from ciphercare.sdk.scoring import ScoringClient
    from ciphercare.services.identity.devissuer import DevIssuer

    load_before = os.getloadavg()
    dataset = load_whas500()
    training = train_model(dataset)
    package = training.package
    n = 4096 if quick else 10_000
    rng = np.random.default_rng(1)
    x = np.concatenate([training.test.x, dataset.x[rng.integers(0, len(dataset), n - len(training.test))]])
    reference = training.xgboost_margin(x)
    n_test = len(training.test)
    auc_plain = roc_auc(training.test.y, sigmoid(reference[:n_test]))
    print(f"scoring bench: {n} patients, {len(package.trees)} trees of depth {package.max_depth}, "
          f"{package.grid.n_edges} grid edges; load average {load_before[0]:.2f}", flush=True)
    rows: list[dict[str, Any]] = []
    raw: dict[str, Any] = {"n": n, "model_sha256": package.sha256, "form_counts": model_form(package).counts()}

    # 1. Plaintext XGBoost (the model owner scoring cleartext features).
    names = list(package.schema.names)
    t0 = time.perf_counter()
    training.booster.predict(xgb.DMatrix(package.grid.quantise(x).astype(np.float32), feature_names=names),
                             output_margin=True)
    full_plain = time.perf_counter() - t0
    singles = []
    for i in range(20):
        t0 = time.perf_counter()
        training.booster.predict(xgb.DMatrix(package.grid.quantise(x[i:i + 1]).astype(np.float32),
                                             feature_names=names), output_margin=True)
        singles.append(time.perf_counter() - t0)
    rows.append({"system": "plaintext XGBoost (model owner sees features)", "batch": n,
                 "server_ms_per_patient": full_plain / n * 1e3, "e2e_ms_per_patient": full_plain / n * 1e3,
                 "single_patient_s": statistics.median(singles), "upload_bytes_per_patient": 8 * len(names),
                 "key_bytes_per_patient": 0, "auc": auc_plain, "agreement": 1.0, "max_abs_margin_error": 0.0})

    with tempfile.TemporaryDirectory(prefix="ciphercare-bench-scoring-") as tmp:
        work = Path(tmp)
        keys = KeyOwner.generate()
        bits = package.grid.bits(x)

        # 2. ciphercare: the server's evaluation alone (worker pool).
        server = _server_side(package, keys, bits, work)
        raw["server_side"] = {k: v for k, v in server.items() if k != "margins"}
        acc_server = _accuracy(server["margins"], reference)
        raw["server_side"]["accuracy"] = acc_server
        evaluation_key_bytes = len(keys.public_context)

        # 3. ciphercare end to end through the service (consent + access event per patient).
        data_dir = work / "server"
        (data_dir / "scoring").mkdir(parents=True)
        package.save(data_dir / "scoring" / "model.json")
        proc, port, settings = _server_process(data_dir)
        target = f"127.0.0.1:{port}"
        try:
            issuer = DevIssuer.from_settings(settings)
            token = issuer.issue(subject="bench-hospital-a", roles=["hospital"], org="hospital-a", ttl_s=7200)
            pids = [f"pt-bench-{i:05d}" for i in range(n)]
            t0 = time.perf_counter()
            asyncio.run(_grant_all(target, issuer, pids))
            raw["grant_s"] = time.perf_counter() - t0
            client = ScoringClient.connect(target, token, deadline_s=1800)
            try:
                info = client.model_info()
                t0 = time.perf_counter()
                client.register(keys.public_context)
                raw["register_context_s"] = time.perf_counter() - t0
                client.score(keys, pids[:1], x[:1], info=info)  # warm the server's worker pool
                runs: dict[str, dict[str, Any]] = {}
                for label, size, repeat in (("1", 1, 3), ("256", 256, 1), ("full", n, 1)):
                    times = []
                    for _ in range(repeat):
                        t0 = time.perf_counter()
                        run = client.score(keys, pids[:size], x[:size], info=info)
                        times.append(time.perf_counter() - t0)
                    margins = np.array([r.margin if r.margin is not None else np.nan for r in run.results])
                    runs[label] = {"size": size, "seconds": statistics.median(times), "all_seconds": times,
                                   "upload_bytes": run.upload_bytes, "download_bytes": run.download_bytes,
                                   "scored": sum(r.status == "scored" for r in run.results), "timings": run.timings,
                                   "margins": margins}
            finally:
                client.close()
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()

    for label, entry in runs.items():
        size = entry["size"]
        margins = entry["margins"]
        acc = _accuracy(margins, reference[:size])
        server_s = server["one_batch_s"] if size <= keys.params.slots else server["full_s"]
        auc = roc_auc(training.test.y, sigmoid(margins[:n_test])) if size >= n_test else None
        rows.append({"system": f"ciphercare encrypted, model-private (batch {label})", "batch": size,
                     "server_ms_per_patient": server_s / size * 1e3 if size == n or size <= keys.params.slots
                     else None,
                     "e2e_ms_per_patient": entry["seconds"] / size * 1e3, "single_patient_s": runs["1"]["seconds"],
                     "upload_bytes_per_patient": entry["upload_bytes"] / size,
                     "key_bytes_per_patient": evaluation_key_bytes / size, "auc": auc, **acc})
        raw[f"e2e_batch_{label}"] = {k: v for k, v in entry.items() if k != "margins"} | {"accuracy": acc}

    # 4. Concrete ML (TFHE), same split, trees, depth and learning rate.
    concrete_note = ""
    if concrete:
        from ciphercare.services.bench import concrete as scoring_concrete

        cml = scoring_concrete.run(training.train.x, training.train.y, training.test.x,
                                   n_trees=len(package.trees), max_depth=package.max_depth,
                                   learning_rate=float(package.metadata["training"]["params"]["eta"]), patients=1)
        if cml is None:
            concrete_note = "Concrete ML could not be installed or run; see the log above"
        else:
            raw["concrete_ml"] = cml
            run0 = cml["runs"][0]
            p_sim = np.asarray(cml["p_sim"])
            e2e = run0["encrypt_s"] + run0["server_s"] + run0["decrypt_s"]
            rows.append({"system": "Concrete ML 1.9 XGBClassifier, TFHE (batch 1)", "batch": 1,
                         "server_ms_per_patient": run0["server_s"] * 1e3, "e2e_ms_per_patient": e2e * 1e3,
                         "single_patient_s": e2e, "upload_bytes_per_patient": run0["upload_bytes"],
                         "key_bytes_per_patient": cml["evaluation_key_bytes"],
                         "auc": roc_auc(training.test.y, p_sim),
                         "agreement": float(np.mean((p_sim > 0.5) == (reference[:n_test] > 0))),
                         "max_abs_margin_error": None})
    else:
        concrete_note = "Concrete ML not run (ask for it with --concrete)"

    full = runs["full"]
    server_rate = n / server["full_s"]
    targets = [
        ("server patients/s at full batch (2 processes)", f"{server_rate:,.0f}", ">= 5,000",
         server_rate >= TARGETS["server_patients_per_s"]),
        ("end to end ms/patient at full batch", f"{full['seconds'] / n * 1e3:.3f}", "<= 0.35",
         full["seconds"] / n * 1e3 <= TARGETS["e2e_ms_per_patient_full"]),
        ("single patient end to end", f"{runs['1']['seconds']:.3f} s", "<= 0.5 s",
         runs["1"]["seconds"] <= TARGETS["single_patient_s"]),
        ("upload per patient (full batch)", f"{full['upload_bytes'] / n / 1024:.2f} KiB", "<= 8 KiB",
         full["upload_bytes"] / n <= TARGETS["upload_bytes_per_patient"]),
        ("evaluation keys (public key + relinearisation keys)", f"{evaluation_key_bytes / 2**20:.2f} MiB",
         "<= 4 MiB", evaluation_key_bytes <= TARGETS["evaluation_key_bytes"]),
    ]
    print(format_table(rows))
    print()
    for name, value, target, met in targets:
        print(f"  {name:<55} {value:>14}   target {target:<10} {'met' if met else 'MISSED'}")
    if concrete_note:
        print(f"\nnote: {concrete_note}")
    load_after = os.getloadavg()
    print(f"\nload average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} (machine shared)")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({
            "benchmark": "scoring",
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                        "load_average_before": load_before, "load_average_after": load_after},
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "rows": rows,
            "targets": [{"metric": m, "value": v, "target": t, "met": ok} for m, v, t, ok in targets],
            "note": concrete_note,
            "raw": raw,
        }, indent=2, default=_json_default))
        print(f"wrote {out}")
    return rows


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(rows: list[dict[str, Any]]) -> str:
    headers = ["system", "server ms/pt", "e2e ms/pt", "1-patient s", "upload B/pt", "key B/pt", "AUC",
               "agree", "max|dm|"]
    lines = []
    for r in rows:
        lines.append([r["system"], _fmt(r["server_ms_per_patient"], ".4g"), _fmt(r["e2e_ms_per_patient"], ".4g"),
                      _fmt(r["single_patient_s"], ".3g"), _fmt(r["upload_bytes_per_patient"], ",.0f"),
                      _fmt(r["key_bytes_per_patient"], ",.0f"), _fmt(r["auc"], ".3f"),
                      _fmt(r["agreement"] * 100 if r["agreement"] is not None else None, ".1f") + "%",
                      _fmt(r["max_abs_margin_error"], ".1e")])
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]
    out = [" | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)),
           "-+-".join("-" * w for w in widths)]
    out.extend(" | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines)
    return "\n".join(out)
