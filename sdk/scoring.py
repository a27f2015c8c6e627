"""Hospital SDK for encrypted risk scoring: keys stay here, features and scores never leave in clear.

``ScoringClient`` wraps the three ScoringService calls::

    client = ScoringClient.connect("127.0.0.1:50051", token)
    keys = KeyOwner.load_or_generate(Path("~/.ciphercare/keys/hospital-a.tenseal").expanduser())
    results = client.score(keys, pids, rows, purpose="TREAT", data_class="Observation")

``score`` fetches the model's public grid, registers the public context if the server does not know it
(once per key pair), declares the patients, waits for the consent decisions, encrypts the comparison
bits of the permitted patients only, streams them, and decrypts each batch's margins as it arrives.
Every remote call has a deadline.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from ciphercare.sdk.channels import ChannelSecurity, open_channel
from ciphercare.v1 import scoring_pb2, scoring_pb2_grpc

CHUNK_BYTES = 1024 * 1024
STATUS = {
    scoring_pb2.PATIENT_STATUS_PERMITTED: "permitted",
    scoring_pb2.PATIENT_STATUS_DENIED: "denied",
    scoring_pb2.PATIENT_STATUS_SCORED: "scored",
    scoring_pb2.PATIENT_STATUS_ERROR: "error",
}
_END = object()


class ScoringError(RuntimeError):
    """A scoring call failed as a whole (the message says why)."""


@dataclass
class ModelInfo:
    """The public facts of the deployed model (never its trees)."""

    sha256: str
    name: str
    version: str
    features: list[scoring_pb2.FeatureGrid]
    edge_count: int
    slots: int
    label_description: str
    metrics: dict[str, float]
    raw: scoring_pb2.GetModelInfoResponse

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def schema(self) -> Any:
        from ciphercare.analytics.model.datasets import DatasetSchema, FeatureSpec

        return DatasetSchema(tuple(
            FeatureSpec(f.name, f.type, f.description, tuple(f.categories),
                        f.imputation if f.HasField("imputation") else None,
                        (f.min, f.max) if f.HasField("min") and f.HasField("max") else None)
            for f in self.features))

    def grid(self) -> Any:
        from ciphercare.analytics.model.grid import QuantisationGrid

        return QuantisationGrid(tuple(f.name for f in self.features), tuple(tuple(f.edges) for f in self.features))


@dataclass
class PatientScore:
    """One patient's result: probability and margin when scored, the reason otherwise."""

    pid: str
    status: str
    reason_code: str = ""
    probability: float | None = None
    margin: float | None = None
    consent_id: str = ""
    access_event_id: str = ""
    tx_id: str = ""
    sequence: int | None = None
    #: The patient's place in its batch of access events (``sdk/batch_receipts.py``), if batched.
    batch_membership: dict[str, Any] | None = None


@dataclass
class ScoreRun:
    """Per-patient results in request order plus the wire and timing figures of the call."""

    results: list[PatientScore]
    upload_bytes: int = 0
    download_bytes: int = 0
    timings: dict[str, float] = field(default_factory=dict)


def check_features(info: ModelInfo, pids: Sequence[str], features: np.ndarray) -> None:
    """Refuse values the model cannot take: not finite, not 0/1 for a binary feature, outside the plausible
    range, or not a category code (before anything is encrypted; the server cannot see the values)."""
    for f, spec in enumerate(info.features):
        column = features[:, f]
        bad: np.ndarray = ~np.isfinite(column)
        reason = "is missing or not a finite number"
        if not bad.any() and spec.type == "binary":
            bad, reason = ~np.isin(column, (0.0, 1.0)), "is not 0 or 1"
        if not bad.any() and spec.type == "categorical":
            bad = ~np.isin(column, np.arange(len(spec.categories)))
            reason = f"is not a category code 0..{len(spec.categories) - 1}"
        if not bad.any() and spec.HasField("min") and spec.HasField("max"):
            bad = (column < spec.min) | (column > spec.max)
            reason = f"is outside the plausible range {spec.min:g}..{spec.max:g}"
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ScoringError(f"patient {pids[i]}: feature {spec.name!r} = {column[i]:g} {reason}")


class ScoringClient:
    """A ScoringService client with explicit channel, token and deadline."""

    def __init__(self, channel: grpc.Channel, token: str, *, deadline_s: float = 600.0, target: str = "") -> None:
        self.channel = channel
        self.stub = scoring_pb2_grpc.ScoringServiceStub(channel)
        self.metadata = (("authorization", f"Bearer {token}"),)
        self.deadline_s = deadline_s
        self.target = target
        self._registered: set[str] = set()
        self.registrations = 0  # RegisterContext uploads made by this client (the context churn test counts them)

    @classmethod
    def connect(cls, target: str, token: str, *, deadline_s: float = 600.0,
                security: ChannelSecurity | None = None) -> ScoringClient:
        options: list[tuple[str, object]] = [("grpc.max_receive_message_length", 8 * 1024 * 1024)]
        return cls(open_channel(target, security, options=options), token, deadline_s=deadline_s, target=target)

    # Registration memory: a key file's public context is stable (KeyOwner keeps it beside the key), and the
    # server keeps it per organisation, so the SDK uploads it once per (key, server) and remembers that in
    # "<key file>.registered" (one "<target> <context id>" per line). If the server has since removed an
    # unused context, Score answers NOT_FOUND and the SDK registers again, once.

    @staticmethod
    def _memory_path(keys: Any) -> Path | None:
        path = getattr(keys, "path", None)
        return None if path is None else Path(path).with_name(Path(path).name + ".registered")

    def _remembered(self, keys: Any) -> bool:
        if keys.context_id in self._registered:
            return True
        memory = self._memory_path(keys)
        if memory is None or not memory.exists() or not self.target:
            return False
        return f"{self.target} {keys.context_id}" in memory.read_text(encoding="utf-8").splitlines()

    def _remember(self, keys: Any, registered: bool) -> None:
        memory = self._memory_path(keys)
        if memory is None or not self.target:
            return
        line = f"{self.target} {keys.context_id}"
        lines = memory.read_text(encoding="utf-8").splitlines() if memory.exists() else []
        lines = [entry for entry in lines if entry != line] + ([line] if registered else [])
        memory.write_text("".join(f"{entry}\n" for entry in lines), encoding="utf-8")

    def ensure_registered(self, keys: Any) -> None:
        """Register ``keys``' public context unless this client or its key file remembers doing so."""
        if not self._remembered(keys):
            self.register(keys.public_context)
            self._remember(keys, True)
        self._registered.add(keys.context_id)

    def close(self) -> None:
        self.channel.close()

    def model_info(self) -> ModelInfo:
        info = self.stub.GetModelInfo(scoring_pb2.GetModelInfoRequest(), metadata=self.metadata,
                                      timeout=self.deadline_s)
        return ModelInfo(info.model_sha256, info.model_name, info.model_version, list(info.features),
                         info.edge_count, info.parameters.slots, info.label_description, dict(info.metrics), info)

    def register(self, public_context: bytes) -> scoring_pb2.RegisterContextResponse:
        """Upload a public context in 1 MiB chunks (idempotent on the server)."""
        def chunks() -> Iterator[scoring_pb2.RegisterContextRequest]:
            for start in range(0, len(public_context), CHUNK_BYTES):
                yield scoring_pb2.RegisterContextRequest(chunk=public_context[start:start + CHUNK_BYTES])

        response = self.stub.RegisterContext(chunks(), metadata=self.metadata, timeout=self.deadline_s)
        self.registrations += 1
        self._registered.add(response.context_id)
        return response

    def score(self, keys: Any, pids: Sequence[str], features: np.ndarray, *, purpose: str = "TREAT",
              data_class: str = "Observation", info: ModelInfo | None = None,
              progress: Callable[[str, int, int], None] | None = None) -> ScoreRun:
        """Score ``features`` (rows in ``pids`` order, columns in the model's feature order)."""
        self.ensure_registered(keys)
        try:
            return self._score(keys, pids, features, purpose=purpose, data_class=data_class, info=info,
                               progress=progress)
        except ScoringError as exc:
            if not str(exc).startswith("NOT_FOUND") or "is not registered" not in str(exc):
                raise
        # The server removed the context (unused for too long): register again and retry once.
        self._registered.discard(keys.context_id)
        self._remember(keys, False)
        self.ensure_registered(keys)
        return self._score(keys, pids, features, purpose=purpose, data_class=data_class, info=info,
                           progress=progress)

    def _score(self, keys: Any, pids: Sequence[str], features: np.ndarray, *, purpose: str,
               data_class: str, info: ModelInfo | None,
               progress: Callable[[str, int, int], None] | None) -> ScoreRun:
        import time

        from ciphercare.analytics.model.training import sigmoid

        started = time.perf_counter()
        info = info or self.model_info()
        features = np.asarray(features, dtype=np.float64)
        if features.shape != (len(pids), len(info.features)):
            raise ScoringError(f"features must be {len(pids)} x {len(info.features)} (patients x model features), "
                               f"got {features.shape}")
        check_features(info, pids, features)
        bits = info.grid().bits(features)
        index = {pid: i for i, pid in enumerate(pids)}
        results = [PatientScore(pid=pid, status="unknown") for pid in pids]
        run = ScoreRun(results)
        outbox: queue.Queue[Any] = queue.Queue(maxsize=256)

        def requests() -> Iterator[scoring_pb2.ScoreRequest]:
            while True:
                item = outbox.get()
                if item is _END:
                    return
                yield item

        outbox.put(scoring_pb2.ScoreRequest(header=scoring_pb2.ScoreHeader(
            context_id=keys.context_id, model_sha256=info.sha256, purpose_of_use=purpose,
            data_class=data_class, pids=list(pids))))
        responses = self.stub.Score(requests(), metadata=self.metadata, timeout=self.deadline_s)
        permitted: list[str] = []
        stop = threading.Event()
        encryptor: threading.Thread | None = None
        failure: list[BaseException] = []
        done_batches = 0
        batch_margins: dict[int, np.ndarray] = {}
        try:
            for response in responses:
                kind = response.WhichOneof("payload")
                if kind == "decisions":
                    decisions = response.decisions
                    for outcome in decisions.outcomes:
                        self._apply(results[index[outcome.pid]], outcome)
                        if outcome.status == scoring_pb2.PATIENT_STATUS_PERMITTED:
                            permitted.append(outcome.pid)
                    if not decisions.final:
                        continue
                    run.timings["decisions_s"] = time.perf_counter() - started
                    if not permitted:
                        outbox.put(_END)
                        continue
                    rows = bits[[index[p] for p in permitted]]
                    encryptor = threading.Thread(target=self._encrypt_all, daemon=True,
                                                 args=(keys, rows, info.slots, outbox, run, failure, progress, stop))
                    encryptor.start()
                elif kind == "score":
                    score = response.score
                    run.timings.setdefault("first_result_s", time.perf_counter() - started)
                    run.timings["last_result_s"] = time.perf_counter() - started
                    run.download_bytes += len(score.ciphertext)
                    members = permitted[score.batch_index * info.slots:][:score.patient_count]
                    if score.ciphertext:  # the first message of a batch; more outcomes may follow (`more`)
                        batch_margins[score.batch_index] = keys.decrypt(score.ciphertext, len(members))
                    margins = batch_margins.get(score.batch_index)
                    for outcome in score.outcomes:
                        result = results[index[outcome.pid]]
                        self._apply(result, outcome)
                        if margins is not None and outcome.status == scoring_pb2.PATIENT_STATUS_SCORED:
                            result.margin = float(margins[outcome.slot])
                            result.probability = float(sigmoid(np.array([result.margin]))[0])
                    if score.more:
                        continue
                    done_batches += 1
                    if progress is not None:
                        progress("scored", done_batches, math.ceil(len(permitted) / info.slots))
        except grpc.RpcError as exc:
            raise ScoringError(f"{exc.code().name}: {exc.details()}") from exc
        finally:
            stop.set()
            if encryptor is not None:
                encryptor.join(timeout=self.deadline_s)
        if failure:
            raise ScoringError(f"encryption failed: {failure[0]}")
        run.timings["total_s"] = time.perf_counter() - started
        return run

    @staticmethod
    def _apply(result: PatientScore, outcome: scoring_pb2.PatientOutcome) -> None:
        result.status = STATUS.get(outcome.status, "unknown")
        result.reason_code = outcome.reason_code or result.reason_code
        result.consent_id = outcome.consent_id or result.consent_id
        if outcome.access_event_id:
            result.access_event_id = outcome.access_event_id
            result.tx_id = outcome.receipt.tx_id
            result.sequence = outcome.receipt.sequence
            if outcome.HasField("batch_membership"):
                from ciphercare.sdk.batch_receipts import membership_from_proto

                result.batch_membership = membership_from_proto(outcome.batch_membership)

    @staticmethod
    def _encrypt_all(keys: Any, rows: np.ndarray, slots: int, outbox: queue.Queue[Any], run: ScoreRun,
                     failure: list[BaseException], progress: Callable[[str, int, int], None] | None,
                     stop: threading.Event) -> None:
        import time

        def put(item: Any) -> bool:
            while not stop.is_set():
                try:
                    outbox.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        started = time.perf_counter()
        try:
            total = math.ceil(rows.shape[0] / slots) * rows.shape[1]
            sent = 0
            for b, start in enumerate(range(0, rows.shape[0], slots)):
                for j in range(rows.shape[1]):
                    envelope = keys.encrypt_column(rows[start:start + slots, j])
                    run.upload_bytes += len(envelope)
                    if not put(scoring_pb2.ScoreRequest(bits=scoring_pb2.BitCiphertext(
                            batch_index=b, edge_index=j, ciphertext=envelope))):
                        return
                    sent += 1
                    if progress is not None:
                        progress("encrypted", sent, total)
        except BaseException as exc:  # noqa: BLE001 - reported by score()
            failure.append(exc)
        finally:
            run.timings["encrypt_s"] = time.perf_counter() - started
            put(_END)
