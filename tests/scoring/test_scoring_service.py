"""ScoringService over real gRPC: model info, contexts, consent-gated scoring, access events, bad input."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from testkit.scoring import default_training, deploy_default, grant, key_owner

from ciphercare.analytics.model.training import sigmoid
from ciphercare.sdk.scoring import ScoringClient, ScoringError
from ciphercare.v1 import scoring_pb2


@pytest.fixture(scope="module", autouse=True)
def _deployed(env) -> None:  # type: ignore[no-untyped-def]
    """The default model where the server reads it (what `ciphercare up` does; the service never trains)."""
    deploy_default(env.settings)


@pytest.fixture(scope="module")
def hospital(env) -> Iterator[ScoringClient]:  # type: ignore[no-untyped-def]
    client = ScoringClient.connect(env.server.target, env.token("hospital", org="hospital-a",
                                                                 subject="svc-hospital-a"), deadline_s=120)
    try:
        yield client
    finally:
        client.close()


@functools.cache
def _rows() -> np.ndarray:
    return default_training().test.x


def test_model_info_is_public_and_deployed_on_the_ledger(env, hospital: ScoringClient) -> None:  # type: ignore[no-untyped-def]
    info = hospital.model_info()
    package = default_training().package
    assert info.sha256 == package.sha256  # deterministic training: the server's default model is the same
    assert info.feature_names == list(package.schema.names)
    assert [list(f.edges) for f in info.features] == [list(e) for e in package.grid.edges]
    assert info.edge_count == package.grid.n_edges
    assert info.raw.parameters.poly_modulus_degree == 8192
    assert sum(info.raw.parameters.coeff_mod_bit_sizes) <= 218
    assert info.raw.deployment_receipt.tx_id
    text = str(info.raw)
    leaves = {f"{v:.6g}" for t in package.trees for v in t.leaves()}
    assert not [leaf for leaf in leaves if len(leaf) > 6 and leaf in text]
    import asyncio

    from ciphercare.services.platform.gateway import evaluate_json
    from ciphercare.services.scoring.servicer import SCORING_PRINCIPAL

    record = asyncio.run(evaluate_json(env.app.handles.model(SCORING_PRINCIPAL), "Get", package.sha256))
    assert record["model_sha256"] == package.sha256 and record["deployed_by"]["org"] == "ciphercare"


def test_register_context_is_idempotent_and_refuses_a_secret_key(hospital: ScoringClient) -> None:
    keys = key_owner()
    first = hospital.register(keys.public_context)
    assert first.context_id == keys.context_id
    assert hospital.register(keys.public_context).already_registered
    private = keys._ctx.serialize(save_secret_key=True, save_galois_keys=False)
    with pytest.raises(grpc.RpcError) as caught:
        hospital.register(private)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "secret key" in (caught.value.details() or "")


def test_consented_patient_is_scored_and_refused_patient_is_denied(env, hospital: ScoringClient) -> None:  # type: ignore[no-untyped-def]
    pids = ["pt-score-yes-1", "pt-score-no-1", "pt-score-yes-2"]
    consent_ids = {pid: grant(env, pid) for pid in (pids[0], pids[2])}
    rows = _rows()[:3]
    run = hospital.score(key_owner(), pids, rows, purpose="TREAT", data_class="Observation")
    by_pid = {r.pid: r for r in run.results}
    expected = default_training().xgboost_margin(rows)

    refused = by_pid["pt-score-no-1"]
    assert refused.status == "denied" and refused.reason_code == "no-consent" and refused.probability is None
    assert refused.access_event_id and refused.tx_id
    for i in (0, 2):
        scored = by_pid[pids[i]]
        assert scored.status == "scored" and scored.consent_id == consent_ids[pids[i]]
        assert abs(scored.margin - expected[i]) <= 1e-3
        assert abs(scored.probability - float(sigmoid(np.array([expected[i]]))[0])) <= 1e-3
        assert scored.access_event_id and scored.sequence is not None

    # One access event per patient, on the ledger, naming the model and the consent.
    officer = env.officer()
    try:
        from ciphercare.v1 import access_log_pb2

        for pid in pids:
            event = officer.call(officer.access_log.Get, access_log_pb2.GetAccessEventRequest(
                event_id=by_pid[pid].access_event_id)).event
            assert event.pid == pid and event.type == "risk-scoring" and event.subtype == "score"
            assert event.model_sha256 == default_training().package.sha256
            assert event.agent.organization == "hospital-a"
            assert event.consent_id == (consent_ids.get(pid) or "")
            assert event.outcome == (access_log_pb2.ACCESS_OUTCOME_DENIED if pid == "pt-score-no-1"
                                     else access_log_pb2.ACCESS_OUTCOME_SUCCESS)
    finally:
        officer.close()


def _raw_score(client: ScoringClient, header: scoring_pb2.ScoreHeader,
               bits: list[scoring_pb2.BitCiphertext]) -> list[scoring_pb2.ScoreResponse]:
    """A Score call that sends the header, waits for the decisions, then sends ``bits`` as given."""
    import queue

    outbox: queue.Queue[scoring_pb2.ScoreRequest | None] = queue.Queue()
    outbox.put(scoring_pb2.ScoreRequest(header=header))

    def requests() -> Iterator[scoring_pb2.ScoreRequest]:
        while (item := outbox.get()) is not None:
            yield item

    responses = []
    for response in client.stub.Score(requests(), metadata=client.metadata, timeout=60):
        responses.append(response)
        if response.WhichOneof("payload") == "decisions" and response.decisions.final:
            for item in bits:
                outbox.put(scoring_pb2.ScoreRequest(bits=item))
            outbox.put(None)
    return responses


def _header(pids: list[str], **overrides: object) -> scoring_pb2.ScoreHeader:
    fields: dict[str, object] = {"context_id": key_owner().context_id,
                                 "model_sha256": default_training().package.sha256,
                                 "purpose_of_use": "TREAT", "data_class": "Observation", "pids": pids}
    fields.update(overrides)
    return scoring_pb2.ScoreHeader(**fields)  # type: ignore[arg-type]


def _expect(code: grpc.StatusCode, fragment: str, client: ScoringClient, header: scoring_pb2.ScoreHeader,
            bits: list[scoring_pb2.BitCiphertext] | None = None) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        _raw_score(client, header, bits or [])
    assert caught.value.code() == code, caught.value.details()
    assert fragment in (caught.value.details() or "")


def test_score_refuses_bad_requests(env, hospital: ScoringClient) -> None:  # type: ignore[no-untyped-def]
    hospital.register(key_owner().public_context)
    pid = "pt-score-bad-1"
    grant(env, pid)
    _expect(grpc.StatusCode.INVALID_ARGUMENT, "is not a patient pseudonym", hospital, _header(["a b"]))
    _expect(grpc.StatusCode.INVALID_ARGUMENT, "appears twice", hospital, _header([pid, pid]))
    _expect(grpc.StatusCode.FAILED_PRECONDITION, "is not the deployed model", hospital,
            _header([pid], model_sha256="0" * 64))
    _expect(grpc.StatusCode.NOT_FOUND, "is not registered", hospital, _header([pid], context_id="ab" * 32))
    _expect(grpc.StatusCode.INVALID_ARGUMENT, "purpose_of_use", hospital, _header([pid], purpose_of_use="FUN"))

    keys = key_owner()
    bits = default_training().package.grid.bits(_rows()[:1])
    envelopes = keys.encrypt_bits(bits)[0]
    good = [scoring_pb2.BitCiphertext(batch_index=0, edge_index=j, ciphertext=e) for j, e in enumerate(envelopes)]
    _expect(grpc.StatusCode.INVALID_ARGUMENT, f"got {len(good) - 1}, expected {len(good)}", hospital,
            _header([pid]), good[:-1])
    _expect(grpc.StatusCode.INVALID_ARGUMENT, "was sent twice", hospital, _header([pid]), [good[0], good[0]])
    _expect(grpc.StatusCode.INVALID_ARGUMENT, "batch_index 1 is out of range", hospital, _header([pid]),
            [scoring_pb2.BitCiphertext(batch_index=1, edge_index=0, ciphertext=envelopes[0])])
    truncated = list(good)
    truncated[5] = scoring_pb2.BitCiphertext(batch_index=0, edge_index=5, ciphertext=envelopes[5][:1000])
    _expect(grpc.StatusCode.INVALID_ARGUMENT, "ciphertext (batch 0, edge 5) is truncated", hospital,
            _header([pid]), truncated)
    other = KeyOwner_generate_once()
    foreign = list(good)
    foreign[3] = scoring_pb2.BitCiphertext(batch_index=0, edge_index=3,
                                           ciphertext=other.encrypt_column(bits[:, 3]))
    _expect(grpc.StatusCode.INVALID_ARGUMENT, "was encrypted under context", hospital, _header([pid]), foreign)


@functools.cache
def KeyOwner_generate_once():  # type: ignore[no-untyped-def]  # noqa: N802
    return key_owner("another-hospital")


def test_all_refused_means_no_ciphertexts_are_asked_for(env, hospital: ScoringClient) -> None:  # type: ignore[no-untyped-def]
    hospital.register(key_owner().public_context)
    responses = _raw_score(hospital, _header(["pt-score-none-1"]), [])
    assert len(responses) == 1
    decisions = responses[0].decisions
    assert decisions.permitted_count == 0 and decisions.outcomes[0].status == scoring_pb2.PATIENT_STATUS_DENIED
    assert json.loads('{"ok": true}')


def test_clinician_may_read_model_info_but_not_score(env) -> None:  # type: ignore[no-untyped-def]
    clinician = ScoringClient.connect(env.server.target, env.token("clinician", org="hospital-a"), deadline_s=30)
    try:
        assert clinician.model_info().sha256 == default_training().package.sha256
        with pytest.raises(ScoringError, match="PERMISSION_DENIED"):
            clinician.score(key_owner(), ["pt-score-clin-1"], _rows()[:1], info=clinician.model_info())
    except grpc.RpcError as exc:  # RegisterContext is refused before Score
        assert exc.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        clinician.close()


def test_no_log_no_result(env, hospital: ScoringClient) -> None:  # type: ignore[no-untyped-def]
    """If one patient's access event cannot be committed, the batch holding it is withheld."""
    import asyncio

    from ciphercare.ledger.api import CommitError, Principal
    from ciphercare.ledger.embedded.transport import EmbeddedTransport
    from ciphercare.services.platform.gateway import ContractHandles
    from ciphercare.services.scoring.servicer import ScoringServicer

    hospital.register(key_owner().public_context)
    pids = ["pt-score-log-1", "pt-score-log-2"]
    for pid in pids:
        grant(env, pid)

    class FailingTransport(EmbeddedTransport):  # the real ledger; one commit fails on the way
        async def submit(self, identity, channel, contract, function, args):  # type: ignore[no-untyped-def]
            if function == "Record" and json.loads(args[0])["entity"]["pid"] == pids[1]:
                raise CommitError("tx-injected", "disk full (injected)")
            return await super().submit(identity, channel, contract, function, args)

    handles = ContractHandles(FailingTransport(env.app.ledger), env.app.handles.options)
    servicer = ScoringServicer(handles, env.settings)
    envelopes = key_owner().encrypt_bits(default_training().package.grid.bits(_rows()[:2]))[0]
    principal = Principal(subject="svc-hospital-a", org="hospital-a", roles=frozenset({"hospital"}))

    async def requests():  # type: ignore[no-untyped-def]
        yield scoring_pb2.ScoreRequest(header=_header(pids))
        for j, e in enumerate(envelopes):
            yield scoring_pb2.ScoreRequest(bits=scoring_pb2.BitCiphertext(batch_index=0, edge_index=j, ciphertext=e))

    async def run() -> list[scoring_pb2.ScoreResponse]:
        return [r async for r in servicer._score(requests(), principal)]

    responses = asyncio.run(run())
    score = responses[-1].score
    assert score.ciphertext == b""  # withheld: no result leaves without its log
    statuses = {o.pid: (o.status, o.reason_code) for o in score.outcomes}
    assert statuses[pids[1]] == (scoring_pb2.PATIENT_STATUS_ERROR, "access-event-not-recorded")
    assert statuses[pids[0]] == (scoring_pb2.PATIENT_STATUS_ERROR, "batch-withheld")


def test_consent_phase_is_one_check_many_per_chunk(env, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """Score asks consent:CheckMany once per chunk of pids; each answer is what consent:Check says."""
    import asyncio

    from ciphercare.ledger.api import Principal
    from ciphercare.ledger.embedded.transport import EmbeddedTransport
    from ciphercare.services.platform.gateway import ContractHandles, evaluate_json
    from ciphercare.services.scoring import servicer as scoring_service
    from ciphercare.services.scoring.servicer import ScoringServicer

    pids = [f"pt-score-chunk-{i}" for i in range(5)]
    for pid in pids[::2]:
        grant(env, pid)
    calls: list[tuple[str, int]] = []

    class CountingTransport(EmbeddedTransport):  # the real ledger, counting the proposals that reach it
        async def evaluate(self, identity, channel, contract, function, args):  # type: ignore[no-untyped-def]
            calls.append((function, len(json.loads(args[0])) if function == "CheckMany" else 1))
            return await super().evaluate(identity, channel, contract, function, args)

    handles = ContractHandles(CountingTransport(env.app.ledger), env.app.handles.options)
    servicer = ScoringServicer(handles, env.settings)
    principal = Principal(subject="svc-hospital-a", org="hospital-a", roles=frozenset({"hospital"}))
    monkeypatch.setattr(scoring_service, "CHECKS_PER_CALL", 2)
    decided = asyncio.run(servicer._check_consents(principal, "hospital-a", _header(pids), pids))
    assert calls == [("CheckMany", 2), ("CheckMany", 2), ("CheckMany", 1)]
    assert [pid for pid, _ in decided] == pids
    for pid, decision in decided:
        single = asyncio.run(evaluate_json(handles.consent(principal), "Check", pid, "hospital-a", "TREAT",
                                           "Observation", ""))
        assert decision == single
    assert [d["decision"] for _, d in decided] == ["permit", "deny", "permit", "deny", "permit"]


def test_scoring_service_is_listed_by_reflection(env) -> None:  # type: ignore[no-untyped-def]
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    with grpc.insecure_channel(env.server.target) as channel:
        services = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert "ciphercare.v1.ScoringService" in services


def test_model_info_without_a_deployed_model_is_failed_precondition(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The service never trains: with no model deployed, GetModelInfo says what the operator must do."""
    from testkit.server import ServerThread, make_settings

    from ciphercare.services.identity.devissuer import DevIssuer

    settings = make_settings(tmp_path / "empty")
    server = ServerThread(settings).start()
    try:
        token = DevIssuer.from_settings(settings).issue(subject="svc-hospital-a", roles=["hospital"],
                                                        org="hospital-a")
        client = ScoringClient.connect(server.target, token, deadline_s=30)
        try:
            with pytest.raises(grpc.RpcError) as caught:
                client.model_info()
        finally:
            client.close()
    finally:
        server.stop()
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no scoring model is deployed" in (caught.value.details() or "")
    assert not (settings.data_dir / "scoring" / "model.json").exists()
