"""ScoringService: consent-gated, logged, model-private encrypted risk scoring.

The servicer is thin: it checks the request, asks the consent contract about every patient, records
one access event per patient on the ledger, and hands ciphertexts to the evaluation pool
(:mod:`ciphercare.services.scoring.pool`). No log, no result: a batch's encrypted scores leave only
after every one of its patients' access events is committed; if any of them fails, the whole batch
(one ciphertext holds all its patients) is withheld and its patients get ``ERROR``.

State lives under ``<data_dir>/scoring``: ``model.json`` (the deployed model package, written by
``ciphercare model train``; ``ciphercare up`` trains the default WHAS500 model there if none is
deployed; the service itself never trains) and ``contexts/<org>/<id>.ctx`` (registered public
contexts).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from ciphercare.consent import codes
from ciphercare.consent.contracts import MAX_CHECK_MANY
from ciphercare.consent.model import PID_RE
from ciphercare.ledger.api import EndorseError, Principal, Receipt
from ciphercare.services.audit.events import access_event
from ciphercare.services.identity.interceptor import current_principal
from ciphercare.services.platform import convert
from ciphercare.services.platform.errors import ServiceError, forbidden, invalid, not_found, status_for
from ciphercare.services.platform.gateway import ContractHandles, evaluate_json
from ciphercare.services.platform.settings import Settings
from ciphercare.services.scoring.usage import QuotaExceeded, ScoringUsage
from ciphercare.v1 import common_pb2, scoring_pb2, scoring_pb2_grpc

log = logging.getLogger("ciphercare.scoring")

#: The identity under which the service records model deployments.
SCORING_PRINCIPAL = Principal(subject="service:ciphercare-scoring", org="ciphercare", roles=frozenset(),
                              client_id="ciphercare-scoring")
OBSERVER = "ciphercare/ScoringService"
MAX_PATIENTS = 40_000
MAX_CONTEXT_BYTES = 8 * 1024 * 1024
DECISIONS_PER_MESSAGE = 2_000
#: Outcomes per EncryptedScore message: each carries its receipt and batch membership (~1.5 KB).
OUTCOMES_PER_MESSAGE = 1_000
#: Patients per ``consent:CheckMany`` call (at most the contract's bound). A call runs on the event loop
#: (~55 us a patient in-process), so 1024 keeps each pause near the ~60-100 ms the loop used to get between
#: per-patient Checks; the per-call overhead it adds over 4096 is ~1 ms per 4096 patients.
CHECKS_PER_CALL = min(1024, MAX_CHECK_MANY)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class Deployment:
    """The deployed model: its package on disk, public facts and the ledger record of its deployment."""

    path: Path
    sha256: str
    info: dict[str, Any]
    parameters: dict[str, Any]
    receipt: common_pb2.LedgerReceipt


def scoring_dir(settings: Settings) -> Path:
    return settings.data_dir / "scoring"


def model_path(settings: Settings) -> Path:
    """Where the service reads the deployed model package (``ciphercare model train`` writes it)."""
    return scoring_dir(settings) / "model.json"


#: What a caller learns when the deployed model cannot be served (no model statistics: the reason is logged).
NOT_SERVABLE = ("the deployed model cannot be served by the encrypted evaluator under its 128-bit parameters; "
                "the model owner must retrain it (ciphercare model train checks this before writing a package)")


NOT_DEPLOYED = ("no scoring model is deployed on this server; the operator trains one with `ciphercare model train` "
                "(`ciphercare up` trains the default WHAS500 model when none is there)")


def ensure_default_model(settings: Settings) -> bool:
    """Train the default WHAS500 model into ``model_path(settings)`` if no model is there (``ciphercare up``).

    Returns whether it trained. The service itself never trains: a request never waits for training.
    """
    from ciphercare.analytics.model.datasets import load_whas500
    from ciphercare.analytics.model.training import train_model

    path = model_path(settings)
    if path.exists():
        return False
    log.info("no model at %s; training the default WHAS500 model", path)
    train_model(load_whas500()).package.save(path)
    return True


def _load_deployed(path: Path) -> tuple[str, dict[str, Any]]:
    """The deployed package's hash and public facts, or FAILED_PRECONDITION (no model statistic in the message)."""
    from ciphercare.analytics.he.budget import servable_problem
    from ciphercare.analytics.model.package import ModelError, ModelPackage

    if not path.exists():
        raise ServiceError(grpc.StatusCode.FAILED_PRECONDITION, NOT_DEPLOYED)
    try:
        package = ModelPackage.load(path)
    except ModelError as exc:
        log.error("deployed model package %s does not load: %s", path, exc)
        raise ServiceError(grpc.StatusCode.FAILED_PRECONDITION,
                           "the deployed model package does not load; the operator must redeploy it") from None
    problem = servable_problem(package)
    if problem is not None:
        log.error("deployed model %s cannot be served: %s", package.sha256, problem)
        raise ServiceError(grpc.StatusCode.FAILED_PRECONDITION, NOT_SERVABLE)
    return package.sha256, package.public_info()


class ScoringServicer(scoring_pb2_grpc.ScoringServiceServicer):
    def __init__(self, ledger: ContractHandles, settings: Settings, metrics: Any | None = None,
                 store: Any | None = None) -> None:
        self.ledger = ledger
        #: The off-chain store: with it, each batch's access events are one ``accessbatch:RecordBatch``
        #: transaction (members kept off-chain, one private receipt per patient); without it, one Record each.
        self.store = store
        self.metrics = metrics  # services/platform/telemetry/metrics.py: scoring patients, batches, quota refusals
        self.settings = settings
        self._deployment: Deployment | None = None
        self._lock = asyncio.Lock()
        self._contexts_lock = asyncio.Lock()
        #: Scoring volume per organisation and purpose (quota + counters for the anomaly detector and metrics).
        self.usage = ScoringUsage(settings.scoring_quota_patients, settings.scoring_quota_window_s)

    # ------------------------------------------------------------ deployment

    async def deployment(self) -> Deployment:
        """Load the deployed model once and make sure its hash is on the ledger (never trains)."""
        async with self._lock:
            if self._deployment is None:
                from ciphercare.analytics.he.ckks import CKKS_PARAMETERS

                path = model_path(self.settings)
                sha, info = await asyncio.to_thread(_load_deployed, path)
                receipt = await self._record_deployment(sha, info)
                self._deployment = Deployment(path, sha, info, CKKS_PARAMETERS.to_dict(), receipt)
            return self._deployment

    async def _record_deployment(self, sha: str, info: dict[str, Any]) -> common_pb2.LedgerReceipt:
        try:
            record = await evaluate_json(self.ledger.model(SCORING_PRINCIPAL), "Get", sha)
            return common_pb2.LedgerReceipt(tx_id=record.get("tx_id", ""))
        except EndorseError as exc:
            if exc.code != "NOT_FOUND":
                raise
        body = {"model_sha256": sha, "name": info["name"], "version": info["version"],
                "n_trees": info["n_trees"], "max_depth": info["max_depth"],
                "edge_count": sum(len(f["edges"]) for f in info["grid"]["features"])}
        receipt = await self.ledger.model(SCORING_PRINCIPAL).submit("Deploy", self.ledger.arg(body))
        log.info("model deployed on the ledger", extra={"model_sha256": sha, "tx_id": receipt.tx_id})
        return convert.receipt_to_proto(receipt)

    # ---------------------------------------------------------------- contexts

    def _context_path(self, org: str, cid: str) -> Path:
        return scoring_dir(self.settings) / "contexts" / org / f"{cid}.ctx"

    async def RegisterContext(self, request_iterator: AsyncIterator[scoring_pb2.RegisterContextRequest],
                              context: grpc.aio.ServicerContext) -> scoring_pb2.RegisterContextResponse:
        try:
            principal = current_principal()
            org = _org(principal)
            chunks: list[bytes] = []
            total = 0
            async for request in request_iterator:
                total += len(request.chunk)
                if total > MAX_CONTEXT_BYTES:
                    raise invalid(f"context is larger than {MAX_CONTEXT_BYTES} bytes")
                chunks.append(request.chunk)
            data = b"".join(chunks)
            if not data:
                raise invalid("context is empty: send the serialised public context in chunks")
            from ciphercare.analytics.he.ckks import HEError, context_id
            from ciphercare.analytics.server.evaluator import Evaluator

            cid = context_id(data)
            path = self._context_path(org, cid)
            if path.exists():
                path.touch()  # last use: the clean-up keeps recently used contexts
                return scoring_pb2.RegisterContextResponse(context_id=cid, size_bytes=len(data),
                                                           already_registered=True)
            try:
                await asyncio.to_thread(Evaluator, data)
            except HEError as exc:
                raise invalid(str(exc)) from None
            async with self._contexts_lock:
                self._make_room(org)
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_bytes(data)
                tmp.replace(path)
            log.info("context registered", extra={"org": org, "context_id": cid, "bytes": len(data)})
            return scoring_pb2.RegisterContextResponse(context_id=cid, size_bytes=len(data))
        except Exception as exc:  # noqa: BLE001 - mapped to a status (streaming handlers bypass the error interceptor)
            await _abort(context, "RegisterContext", exc)
            raise

    def _make_room(self, org: str) -> None:
        """Keep at most ``scoring_max_contexts_per_org`` contexts: drop idle ones first, else refuse."""
        import time

        folder = scoring_dir(self.settings) / "contexts" / org
        if not folder.is_dir():
            return
        limit = self.settings.scoring_max_contexts_per_org
        stored = sorted(folder.glob("*.ctx"), key=lambda f: f.stat().st_mtime)
        idle_before = time.time() - self.settings.scoring_context_idle_s
        while len(stored) >= limit and stored and stored[0].stat().st_mtime <= idle_before:
            victim = stored.pop(0)
            victim.unlink(missing_ok=True)
            log.info("idle context removed", extra={"org": org, "context_id": victim.stem})
        if len(stored) >= limit:
            raise ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"organisation {org!r} already has {len(stored)} registered contexts (the limit is "
                               f"{limit}); reuse a registered key pair (the SDK remembers its registration per "
                               f"key file) or wait until an unused context expires")

    def context_count(self, org: str) -> int:
        """Registered public contexts of ``org`` (bounded by ``scoring_max_contexts_per_org``)."""
        folder = scoring_dir(self.settings) / "contexts" / org
        return len(list(folder.glob("*.ctx"))) if folder.is_dir() else 0

    # ---------------------------------------------------------------- model info

    async def GetModelInfo(self, request: scoring_pb2.GetModelInfoRequest,
                           context: grpc.aio.ServicerContext) -> scoring_pb2.GetModelInfoResponse:
        deployment = await self.deployment()
        info, params = deployment.info, deployment.parameters
        features = []
        types = {f["name"]: f for f in info["schema"]["features"]}
        for item in info["grid"]["features"]:
            spec = types[item["name"]]
            feature = scoring_pb2.FeatureGrid(name=item["name"], type=spec["type"],
                                              description=spec.get("description", ""), edges=item["edges"],
                                              categories=spec.get("categories", []))
            if spec.get("impute") is not None:
                feature.imputation = float(spec["impute"])
            if spec.get("range") is not None:
                feature.min, feature.max = (float(v) for v in spec["range"])
            features.append(feature)
        return scoring_pb2.GetModelInfoResponse(
            model_sha256=deployment.sha256, model_name=info["name"], model_version=info["version"],
            features=features, edge_count=sum(len(f.edges) for f in features),
            parameters=scoring_pb2.CkksParameters(
                poly_modulus_degree=params["poly_modulus_degree"],
                coeff_mod_bit_sizes=params["coeff_mod_bit_sizes"], slots=params["slots"],
                bit_scale_log2=params["bit_scale_log2"], result_scale_log2=params["result_scale_log2"],
                security_level=params["security_level"], security_reference=params["security_reference"]),
            label_description=info["schema"].get("label_description", ""),
            metrics={k: float(v) for k, v in info.get("metrics", {}).items()},
            deployment_receipt=deployment.receipt,
        )

    # ---------------------------------------------------------------- score

    async def Score(self, request_iterator: AsyncIterator[scoring_pb2.ScoreRequest],
                    context: grpc.aio.ServicerContext) -> AsyncIterator[scoring_pb2.ScoreResponse]:
        try:
            async for response in self._score(request_iterator, current_principal()):
                yield response
        except Exception as exc:  # noqa: BLE001 - mapped to a status (streaming handlers bypass the error interceptor)
            await _abort(context, "Score", exc)
            raise

    async def _score(self, requests: AsyncIterator[scoring_pb2.ScoreRequest],
                     principal: Principal) -> AsyncIterator[scoring_pb2.ScoreResponse]:
        org = _org(principal)
        iterator = requests.__aiter__()
        try:
            first = await iterator.__anext__()
        except StopAsyncIteration:
            raise invalid("Score needs a header as its first message") from None
        if first.WhichOneof("payload") != "header":
            raise invalid("the first Score message must be a header")
        header = first.header
        deployment = await self.deployment()
        _check_header(header, deployment.sha256)
        context_path = self._context_path(org, header.context_id)
        if not context_path.exists():
            raise not_found(f"context {header.context_id} is not registered for organisation {org}; "
                            "call RegisterContext first")
        context_path.touch()  # last use
        pids = list(header.pids)

        # 1. Consent for every patient (recipient = the caller's organisation): one CheckMany per chunk.
        outcomes: list[scoring_pb2.PatientOutcome] = []
        permitted: list[tuple[str, str]] = []
        denied: list[tuple[int, str, dict[str, Any]]] = []
        for i, (pid, decision) in enumerate(await self._check_consents(principal, org, header, pids)):
            outcome = scoring_pb2.PatientOutcome(pid=pid, reason_code=decision.get("reason_code", ""),
                                                 consent_id=decision.get("consent_id") or "")
            if decision.get("decision") == codes.PERMIT:
                outcome.status = scoring_pb2.PATIENT_STATUS_PERMITTED
                permitted.append((pid, decision.get("consent_id") or ""))
            else:
                outcome.status = scoring_pb2.PATIENT_STATUS_DENIED
                denied.append((i, pid, decision))
            outcomes.append(outcome)

        # 1b. The organisation's scoring quota for this purpose (refused before anything is recorded).
        try:
            self.usage.reserve(org, header.purpose_of_use, len(permitted))
        except QuotaExceeded as exc:
            log.warning("scoring quota exhausted", extra={"org": org, "purpose_of_use": header.purpose_of_use})
            if self.metrics is not None:
                self.metrics.scoring_quota_refusals.labels(org).inc()
            raise ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)) from None

        # 2. A `denied` access event for every refused patient (committed before answering).
        events = [self._event(pid, "denied", decision.get("reason_code") or "consent-deny",
                              decision.get("consent_id"), header, deployment.sha256)
                  for _, pid, decision in denied]
        logged_denials = await self._log_events(principal, events)
        if self.metrics is not None and denied:
            self.metrics.scoring_patients.labels(org, "denied").inc(len(denied))
        for (i, _, _), entry in zip(denied, logged_denials, strict=True):
            if entry is not None:
                entry.fill(outcomes[i])
            else:
                log.error("denied access event not recorded")

        slots = int(deployment.parameters["slots"])
        edge_count = sum(len(f["edges"]) for f in deployment.info["grid"]["features"])
        batch_count = (len(permitted) + slots - 1) // slots
        slot_of = {pid: divmod(k, slots) for k, (pid, _) in enumerate(permitted)}
        for outcome in outcomes:
            if outcome.pid in slot_of and outcome.status == scoring_pb2.PATIENT_STATUS_PERMITTED:
                outcome.batch_index, outcome.slot = slot_of[outcome.pid]
        for start in range(0, max(1, len(outcomes)), DECISIONS_PER_MESSAGE):
            final = start + DECISIONS_PER_MESSAGE >= len(outcomes)
            yield scoring_pb2.ScoreResponse(decisions=scoring_pb2.ScoreDecisions(
                outcomes=outcomes[start:start + DECISIONS_PER_MESSAGE], permitted_count=len(permitted),
                batch_count=batch_count, edge_count=edge_count, final=final))
        if not permitted:
            return

        # 3. Ciphertexts for the permitted patients: validate, evaluate each batch as it completes.
        from ciphercare.services.scoring.pool import EvaluationPool

        pool = EvaluationPool.shared()
        parts = pool.workers if batch_count < pool.workers else 1  # small calls: split each batch over the workers
        pending: dict[int, list[bytes | None]] = {}
        futures: dict[int, asyncio.Future[tuple[bytes, float]]] = {}
        received = 0
        expected = batch_count * edge_count
        async for request in iterator:
            if request.WhichOneof("payload") != "bits":
                raise invalid("after the header a Score stream carries only bit ciphertexts")
            bits = request.bits
            if bits.batch_index >= batch_count:
                raise invalid(f"batch_index {bits.batch_index} is out of range: {len(permitted)} permitted "
                              f"patients make {batch_count} batch(es)")
            if bits.edge_index >= edge_count:
                raise invalid(f"edge_index {bits.edge_index} is out of range: the grid has {edge_count} edges")
            if bits.batch_index in futures:
                raise invalid(f"batch {bits.batch_index} was already complete; ciphertext "
                              f"(batch {bits.batch_index}, edge {bits.edge_index}) is one too many")
            row = pending.setdefault(bits.batch_index, [None] * edge_count)
            if row[bits.edge_index] is not None:
                raise invalid(f"ciphertext (batch {bits.batch_index}, edge {bits.edge_index}) was sent twice")
            row[bits.edge_index] = bits.ciphertext
            received += 1
            if all(item is not None for item in row):
                envelopes = [item for item in row if item is not None]
                del pending[bits.batch_index]
                owned = len(permitted[bits.batch_index * slots:(bits.batch_index + 1) * slots])
                futures[bits.batch_index] = asyncio.ensure_future(_evaluate_batch(
                    pool, parts, str(context_path), header.context_id, deployment, envelopes, bits.batch_index,
                    owned, self.settings.scoring_output_noise))
        if received != expected:
            for future in futures.values():
                future.cancel()
            raise invalid(f"wrong number of ciphertexts: got {received}, expected {expected} "
                          f"({batch_count} batch(es) x {edge_count} edges)")

        # 4. No log, no result: per batch, commit every patient's access event, then release.
        from ciphercare.analytics.he.budget import ModelNotServable
        from ciphercare.analytics.he.ckks import HEError

        try:
            for b in range(batch_count):
                try:
                    envelope, _seconds = await futures[b]
                except ModelNotServable:
                    raise ServiceError(grpc.StatusCode.FAILED_PRECONDITION, NOT_SERVABLE) from None
                except HEError as exc:
                    raise invalid(str(exc)) from None
                members = permitted[b * slots:(b + 1) * slots]
                events = [self._event(pid, "success", "consent-permit", consent_id or None, header,
                                      deployment.sha256) for pid, consent_id in members]
                results = await self._log_events(principal, events)
                logged = all(r is not None for r in results)
                batch_outcomes = []
                for slot, ((pid, consent_id), entry) in enumerate(zip(members, results, strict=True)):
                    outcome = scoring_pb2.PatientOutcome(pid=pid, consent_id=consent_id, batch_index=b, slot=slot)
                    if entry is not None:
                        entry.fill(outcome)
                    if logged:
                        outcome.status = scoring_pb2.PATIENT_STATUS_SCORED
                        outcome.reason_code = "consent-permit"
                    else:
                        outcome.status = scoring_pb2.PATIENT_STATUS_ERROR
                        outcome.reason_code = ("batch-withheld" if entry is not None
                                               else "access-event-not-recorded")
                    batch_outcomes.append(outcome)
                if self.metrics is not None:
                    self.metrics.scoring_batches.inc()
                    self.metrics.scoring_patients.labels(org, "scored" if logged else "error").inc(len(members))
                if not logged:
                    log.error("batch %d withheld: access events not recorded", b)
                # The ciphertext goes with the first chunk of outcomes; the rest follow (receipts are large).
                for start in range(0, len(batch_outcomes), OUTCOMES_PER_MESSAGE):
                    yield scoring_pb2.ScoreResponse(score=scoring_pb2.EncryptedScore(
                        batch_index=b, ciphertext=envelope if logged and start == 0 else b"",
                        patient_count=len(members), outcomes=batch_outcomes[start:start + OUTCOMES_PER_MESSAGE],
                        more=start + OUTCOMES_PER_MESSAGE < len(batch_outcomes)))
        finally:
            for future in futures.values():
                future.cancel()

    async def _check_consents(self, principal: Principal, org: str, header: scoring_pb2.ScoreHeader,
                              pids: list[str]) -> list[tuple[str, dict[str, Any]]]:
        """Each pid with its consent Decision (what ``consent:Check`` returns), in order."""
        decided: list[tuple[str, dict[str, Any]]] = []
        for start in range(0, len(pids), CHECKS_PER_CALL):
            if start:
                await asyncio.sleep(0)  # keep the event loop responsive during long batches
            chunk = pids[start:start + CHECKS_PER_CALL]
            decisions = await evaluate_json(self.ledger.consent(principal), "CheckMany", self.ledger.arg(chunk), org,
                                            header.purpose_of_use, header.data_class, "")
            if not isinstance(decisions, list) or len(decisions) != len(chunk):
                raise RuntimeError(f"consent:CheckMany answered {type(decisions).__name__} "
                                   f"{len(decisions) if isinstance(decisions, list) else ''} for {len(chunk)} pids")
            decided.extend(zip(chunk, decisions, strict=True))
        return decided

    def _event(self, pid: str, outcome: str, reason: str, consent_id: str | None,
               header: scoring_pb2.ScoreHeader, model_sha256: str) -> dict[str, Any]:
        return access_event(  # the one access-event builder (services/audit/events.py)
            type="risk-scoring", subtype="score", action="E", outcome=outcome, outcome_desc=reason,
            purpose_of_use=header.purpose_of_use, observer=OBSERVER, pid=pid, consent_id=consent_id,
            model_sha256=model_sha256, data_classes=[header.data_class],
        )

    async def _log_events(self, principal: Principal, events: list[dict[str, Any]]) -> list[LoggedEvent | None]:
        """Record ``events``; per event what its outcome carries, or None where it was not recorded.

        With the store: one ``accessbatch:RecordBatch`` transaction for all of them (all or none recorded).
        """
        if not events:
            return []
        if self.store is None:
            results = await self._record(principal, events)
            return [LoggedEvent(json.loads(r.result)["id"], convert.receipt_to_proto(r)) if isinstance(r, Receipt)
                    else None for r in results]
        from ciphercare.services.audit.batches import record_batch

        try:
            batch = await record_batch(self.ledger, self.store, principal, events, OBSERVER)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every patient of the batch gets ERROR; nothing was written
            log.error("access batch of %d events not recorded: %s", len(events), exc)
            return [None] * len(events)
        receipt = convert.receipt_to_proto(batch.receipt)
        logged: list[LoggedEvent | None] = []
        for position in range(len(events)):
            m = batch.membership(position)
            membership = common_pb2.AccessBatchMembership(
                batch_id=m["batch_id"], root=m["root"], batch_size=m["batch_size"], position=position,
                salt=batch.leaves[position][:32], member_json=m["member_json"],
                audit_path=[bytes.fromhex(h) for h in m["audit_path"]])
            logged.append(LoggedEvent(batch.event_id(position), receipt, membership))
        return logged

    async def _record(self, principal: Principal, events: list[dict[str, Any]]) -> list[Receipt | BaseException]:
        """Submit every event concurrently (the ledger's group commit batches them); failures are returned."""
        if not events:
            return []
        accesslog = self.ledger.accesslog(principal)
        submits = [accesslog.submit("Record", self.ledger.arg(e)) for e in events]
        results = await asyncio.gather(*submits, return_exceptions=True)
        for result in results:
            if isinstance(result, asyncio.CancelledError):
                raise result
        return list(results)


@dataclass
class LoggedEvent:
    """A recorded access event as a patient's outcome carries it: id, ledger receipt, batch membership."""

    event_id: str
    receipt: common_pb2.LedgerReceipt
    membership: common_pb2.AccessBatchMembership | None = None

    def fill(self, outcome: scoring_pb2.PatientOutcome) -> None:
        outcome.access_event_id = self.event_id
        outcome.receipt.CopyFrom(self.receipt)
        if self.membership is not None:
            outcome.batch_membership.CopyFrom(self.membership)


async def _evaluate_batch(pool: Any, parts: int, context_path: str, context_id: str, deployment: Deployment,
                          envelopes: list[bytes], batch_index: int, owned: int,
                          output_sigma: float) -> tuple[bytes, float]:
    """One batch in the worker pool: whole, or split into ``parts`` summed and finished by a worker.

    Only the first ``owned`` slots (this batch's permitted patients) carry a result; the rest is noise.
    """
    from ciphercare.services.scoring.pool import evaluate_batch, evaluate_part, finish_parts

    model, sha = str(deployment.path), deployment.sha256
    if parts <= 1:
        return await asyncio.wrap_future(pool.submit(evaluate_batch, context_path, context_id, model, sha, envelopes,
                                                     batch_index, owned, output_sigma))
    partials = await asyncio.gather(*(asyncio.wrap_future(pool.submit(
        evaluate_part, context_path, context_id, model, sha, envelopes, batch_index, k, parts, owned))
        for k in range(parts)))
    return await asyncio.wrap_future(pool.submit(finish_parts, context_path, context_id, [p[0] for p in partials],
                                                 owned, output_sigma))


def _org(principal: Principal) -> str:
    if not principal.org:
        raise forbidden("scoring needs a token with an organisation claim (the consent recipient)")
    return principal.org


def _check_header(header: scoring_pb2.ScoreHeader, model_sha256: str) -> None:
    if not _HEX64.match(header.context_id):
        raise invalid("context_id must be the 64-character hex id returned by RegisterContext")
    if header.model_sha256 != model_sha256:
        raise ServiceError(grpc.StatusCode.FAILED_PRECONDITION,
                           f"model_sha256 {header.model_sha256 or '(empty)'} is not the deployed model "
                           f"{model_sha256}; call GetModelInfo and prepare the input for that model")
    if header.purpose_of_use not in codes.PURPOSES_OF_USE:
        raise invalid(f"purpose_of_use {header.purpose_of_use!r} is not one of {codes.allowed(codes.PURPOSES_OF_USE)}")
    if header.data_class not in codes.DATA_CLASSES:
        raise invalid(f"data_class {header.data_class!r} is not one of {codes.allowed(codes.DATA_CLASSES)}")
    if not header.pids:
        raise invalid("pids is empty: name at least one patient")
    if len(header.pids) > MAX_PATIENTS:
        raise invalid(f"at most {MAX_PATIENTS} patients per call, got {len(header.pids)}")
    seen: set[str] = set()
    for i, pid in enumerate(header.pids):
        if not PID_RE.match(pid):
            raise invalid(f"pids[{i}] {pid[:70]!r} is not a patient pseudonym (3-64 of A-Z a-z 0-9 . _ -)")
        if pid in seen:
            raise invalid(f"pids[{i}] {pid!r} appears twice")
        seen.add(pid)


async def _abort(context: grpc.aio.ServicerContext, method: str, exc: BaseException) -> None:
    """Map ``exc`` through the service's one error table (HE input errors are INVALID_ARGUMENT)."""
    if isinstance(exc, (grpc.aio.AbortError, asyncio.CancelledError)):
        return
    from ciphercare.analytics.he.ckks import HEError

    if isinstance(exc, HEError):
        exc = invalid(str(exc))
    code, message = status_for(exc)
    if code == grpc.StatusCode.INTERNAL:
        log.error("unhandled error in ScoringService/%s", method, exc_info=(type(exc), exc, exc.__traceback__))
    await context.abort(code, message)


__all__ = ["SCORING_PRINCIPAL", "ScoringServicer", "ensure_default_model", "model_path"]
