"""Batched access events (issue 16 item 3): one ledger transaction per scoring batch, one private receipt
and one search row per patient; real encryption, real gRPC, the real ledger and off-chain store."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from testkit.scoring import default_training, deploy_default, grant, key_owner

from ciphercare.consent.errors import ValidationError
from ciphercare.ledger.api import CommittedEvent, EndorseError, Principal
from ciphercare.sdk.batch_receipts import batch_event_receipt, membership_from_proto, verify_batch_receipt
from ciphercare.sdk.receipts import ReceiptError
from ciphercare.sdk.scoring import ScoreRun, ScoringClient
from ciphercare.services.audit import batches
from ciphercare.services.cli.main import main as cli_main
from ciphercare.v1 import access_log_pb2

PIDS = ["pt-batch-a1", "pt-batch-b2", "pt-batch-c3", "pt-batch-d4"]
REFUSED = "pt-batch-no5"


@pytest.fixture(scope="module", autouse=True)
def _deployed(env) -> None:  # type: ignore[no-untyped-def]
    deploy_default(env.settings)


@pytest.fixture(scope="module")
def scored(env) -> Iterator[ScoreRun]:  # type: ignore[no-untyped-def]
    """Four consented patients and one refused, scored in one call (one ciphertext batch)."""
    for pid in PIDS:
        grant(env, pid)
    client = ScoringClient.connect(env.server.target, env.token("hospital", org="hospital-a",
                                                                subject="svc-hospital-a"), deadline_s=120)
    try:
        yield client.score(key_owner(), [*PIDS, REFUSED], default_training().test.x[:5])
    finally:
        client.close()


def _receipt(env, result) -> dict:  # type: ignore[no-untyped-def]
    """A patient's batched receipt, as the patient builds it: proof by event id with the patient's own token."""
    patient = env.patient(result.pid)
    try:
        proof = patient.call(patient.access_log.GetInclusionProof,
                             access_log_pb2.GetInclusionProofRequest(event_id=result.access_event_id))
        event = patient.call(patient.access_log.Get,
                             access_log_pb2.GetAccessEventRequest(event_id=result.access_event_id)).event
        vkey = patient.call(patient.access_log.GetCheckpoint, access_log_pb2.GetCheckpointRequest()).verifier_key
    finally:
        patient.close()
    # The service gives the patient the same membership the hospital got with the score.
    assert proof.HasField("batch_membership")
    assert membership_from_proto(proof.batch_membership) == result.batch_membership
    return batch_event_receipt(event, membership_from_proto(proof.batch_membership), proof, vkey, event.tx_id,
                               event.sequence)


def test_one_transaction_per_batch_and_one_search_row_per_patient(env, scored: ScoreRun) -> None:  # type: ignore[no-untyped-def]
    by_pid = {r.pid: r for r in scored.results}
    assert all(by_pid[p].status == "scored" for p in PIDS) and by_pid[REFUSED].status == "denied"
    assert len({by_pid[p].tx_id for p in PIDS}) == 1  # the four scored events: one transaction
    assert by_pid[REFUSED].tx_id != by_pid[PIDS[0]].tx_id  # the denial was recorded before, in its own batch
    entry = env.app.handles.transparency.entry(by_pid[PIDS[0]].sequence)
    leaf = entry.leaf.decode("utf-8")
    assert not [p for p in [*PIDS, REFUSED] if p in leaf]  # no pseudonym in the ledger leaf
    record = json.loads([e for e in entry.events if e.name == batches.BATCH_EVENT_NAME][0].payload)
    assert record["count"] == 4 and record["outcomes"] == {"success": 4}
    assert record["agent"]["org"] == "hospital-a"
    officer = env.officer()
    try:
        for pid in [*PIDS, REFUSED]:
            rows = officer.call(officer.access_log.Search, access_log_pb2.SearchRequest(pid=pid)).events
            assert len(rows) == 1, pid
            row = rows[0]
            assert row.id == by_pid[pid].access_event_id and row.tx_id == by_pid[pid].tx_id
            assert row.agent.organization == "hospital-a" and row.type == "risk-scoring"
            assert row.model_sha256 == default_training().package.sha256
        # Pages may end inside a batch entry: page size 1 walks every row exactly once.
        seen, token = [], ""
        while True:
            page = officer.call(officer.access_log.Search, access_log_pb2.SearchRequest(
                organization="hospital-a", purpose_of_use="TREAT", page_size=1, page_token=token))
            seen += [e.id for e in page.events if e.pid in PIDS]
            token = page.next_page_token
            if not token:
                break
        assert sorted(seen) == sorted(by_pid[p].access_event_id for p in PIDS)
    finally:
        officer.close()


def test_receipts_verify_and_show_no_other_patient(env, scored: ScoreRun, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    by_pid = {r.pid: r for r in scored.results}
    for pid in PIDS:
        receipt = _receipt(env, by_pid[pid])
        check = verify_batch_receipt(receipt, expected_pid=pid)
        assert check.ok, check.problems
        text = json.dumps(receipt)
        assert not [other for other in [*PIDS, REFUSED] if other != pid and other in text]
        path = tmp_path / f"{pid}.json"
        path.write_text(text)
        assert cli_main(["receipt", "verify", str(path)]) == 0


def test_forged_and_other_patients_receipts_are_refused(env, scored: ScoreRun, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    by_pid = {r.pid: r for r in scored.results}
    good = _receipt(env, by_pid[PIDS[0]])
    other = _receipt(env, by_pid[PIDS[1]])
    # Another patient's (valid) receipt is not a receipt about this patient.
    assert verify_batch_receipt(other).ok
    assert not verify_batch_receipt(other, expected_pid=PIDS[0]).ok
    forgeries = []
    swapped = copy.deepcopy(good)  # claim the event was about someone else
    swapped["batch"]["member_json"] = swapped["batch"]["member_json"].replace(PIDS[0], PIDS[2])
    forgeries.append(swapped)
    event_only = copy.deepcopy(good)  # change only the stated event
    event_only["event"]["pid"] = PIDS[2]
    forgeries.append(event_only)
    salt = copy.deepcopy(good)  # another salt (same member)
    salt["batch"]["salt_b64"] = other["batch"]["salt_b64"]
    forgeries.append(salt)
    path = copy.deepcopy(good)  # another member's path
    path["batch"]["audit_path"] = other["batch"]["audit_path"]
    forgeries.append(path)
    count = copy.deepcopy(good)  # claim a smaller batch
    count["batch"]["batch_size"] = 1
    forgeries.append(count)
    agent = copy.deepcopy(good)  # another agent in the stated event
    agent["event"]["agent"]["organization"] = "hospital-x"
    forgeries.append(agent)
    outcome = copy.deepcopy(good)  # any other field of the stated event (every field is compared)
    outcome["event"]["outcome"] = "ACCESS_OUTCOME_DENIED"
    forgeries.append(outcome)
    claims = copy.deepcopy(good)  # a self-asserted verification claim
    claims["verified"] = True
    forgeries.append(claims)
    batch_claims = copy.deepcopy(good)
    batch_claims["batch"]["verified"] = True
    forgeries.append(batch_claims)
    other_batch = copy.deepcopy(good)  # the batch section names another batch id
    other_batch["batch"]["batch_id"] = "ab-" + "0" * 32
    forgeries.append(other_batch)
    for i, forged in enumerate(forgeries):
        assert not verify_batch_receipt(forged).ok, i
        file = tmp_path / f"forged-{i}.json"
        file.write_text(json.dumps(forged))
        assert cli_main(["receipt", "verify", str(file)]) == 1
    with pytest.raises(ReceiptError):
        verify_batch_receipt({**good, "batch": {"salt_b64": "!!"}})


def _event(pid: str, outcome: str = "success") -> dict:
    return {"type": "risk-scoring", "subtype": "score", "action": "E", "outcome": outcome,
            "outcome_desc": "consent-permit", "purpose_of_use": "TREAT", "source": {"observer": "test/batches"},
            "entity": {"pid": pid, "consent_id": None, "model_sha256": "0" * 64, "data_classes": ["Observation"]}}


def test_a_refused_batch_writes_nothing(env) -> None:  # type: ignore[no-untyped-def]
    store, handles = env.app.store, env.app.handles
    before_batches, before_size = store.access_batch_count(), handles.transparency.size()
    patient = Principal(subject="patient-pt-batch-x7", org="", roles=frozenset({"patient"}), client_id="portal",
                        pid="pt-batch-x7")
    with pytest.raises(EndorseError) as caught:  # only a hospital or clinician may record 'success'
        asyncio.run(batches.record_batch(handles, store, patient, [_event("pt-batch-x7"), _event("pt-batch-y8")],
                                         "test/batches"))
    assert caught.value.code == "PERMISSION_DENIED"
    with pytest.raises(ValidationError):  # an invalid member: refused before anything is staged
        asyncio.run(batches.record_batch(handles, store, patient, [_event("pt-batch-x7", outcome="maybe")],
                                         "test/batches"))
    assert store.access_batch_count() == before_batches
    assert handles.transparency.size() == before_size
    env.app.projections.read_committed()
    officer = env.officer()
    try:
        for pid in ("pt-batch-x7", "pt-batch-y8"):
            assert not officer.call(officer.access_log.Search, access_log_pb2.SearchRequest(pid=pid)).events
    finally:
        officer.close()


def test_rows_off_chain_that_do_not_match_the_root_project_nothing() -> None:
    leaves = [batches.make_leaf(_event(f"pt-batch-r{i}")) for i in range(3)]
    root = batches.batch_root(leaves).root().hex()
    record = {"id": "ab-" + "1" * 32, "root": root, "count": 3, "outcomes": {"success": 3},
              "recorded": "2026-12-03T10:00:00.000Z", "source": {"observer": "test/batches"},
              "agent": {"subject": "svc-hospital-a", "org": "hospital-a", "roles": ["hospital"], "client": "c"}}
    event = CommittedEvent(7, "f" * 64, 0, batches.BATCH_EVENT_NAME, json.dumps(record).encode())
    rows = batches.rows_from_batch(event, leaves)
    assert [r.pid for r in rows] == ["pt-batch-r0", "pt-batch-r1", "pt-batch-r2"] and {r.seq for r in rows} == {7}
    assert batches.rows_from_batch(event, leaves[:2]) == []  # a dropped row: the count on the ledger says so
    altered = [leaves[0], leaves[1].replace(b"pt-batch-r1", b"pt-batch-zz"), leaves[2]]
    assert batches.rows_from_batch(event, altered) == []  # an altered row: the root on the ledger says so
    salt = base64.b64decode(batches.membership(leaves, 1, record["id"])["salt_b64"])
    assert batches.member_id(salt) == rows[1].event_id


def test_outcomes_spread_over_messages_keep_their_scores(env, scored: ScoreRun, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A batch's outcomes may span several messages (the ciphertext rides with the first): scores stay exact."""
    from ciphercare.services.scoring import servicer

    monkeypatch.setattr(servicer, "OUTCOMES_PER_MESSAGE", 2)
    rows = default_training().test.x[:4]
    expected = default_training().xgboost_margin(rows)
    client = ScoringClient.connect(env.server.target, env.token("hospital", org="hospital-a",
                                                                subject="svc-hospital-a"), deadline_s=120)
    try:
        run = client.score(key_owner(), PIDS, rows)
        single = client.score(key_owner(), PIDS[:1], rows[:1])
    finally:
        client.close()
    assert [r.status for r in run.results] == ["scored"] * 4
    assert max(abs(r.margin - e) for r, e in zip(run.results, expected, strict=True)) <= 1e-3
    assert all(r.batch_membership is not None for r in run.results)
    assert single.results[0].status == "scored" and abs(single.results[0].margin - expected[0]) <= 1e-3


def test_watch_streams_each_batched_event(env, scored: ScoreRun) -> None:  # type: ignore[no-untyped-def]
    import itertools

    by_pid = {r.pid: r for r in scored.results}
    officer = env.officer()
    try:
        stream = officer.watch(start_sequence=by_pid[PIDS[1]].sequence, pid=PIDS[1])
        first = next(itertools.islice(stream, 1))
        stream.cancel()
    finally:
        officer.close()
    assert first.id == by_pid[PIDS[1]].access_event_id and first.pid == PIDS[1]
    assert first.sequence == by_pid[PIDS[1]].sequence


def test_an_event_with_a_detail_document_is_never_batched() -> None:
    event = _event("pt-batch-d9")
    event["entity"]["detail_sha256"] = "a" * 64
    with pytest.raises(ValidationError):
        batches.make_leaf(event)


def test_the_contract_refuses_members_and_wrong_counts(env) -> None:  # type: ignore[no-untyped-def]
    """A hospital that crafts its own RecordBatch: pseudonyms, bad counts and bad roots are refused, nothing written."""
    from ciphercare.consent.contracts.accessbatch import ACCESSBATCH_CONTRACT

    handles = env.app.handles
    hospital = Principal(subject="svc-hospital-a", org="hospital-a", roles=frozenset({"hospital"}), client_id="c")
    contract = handles.contract(hospital, ACCESSBATCH_CONTRACT)
    good = {"root": "ab" * 32, "count": 2, "outcomes": {"success": 2}, "observer": "test/batches"}
    before = handles.transparency.size()
    for bad in ({**good, "members": ["pt-batch-m1"]}, {**good, "count": 3}, {**good, "count": 0, "outcomes": {}},
                {**good, "root": "not-hex"}, {**good, "outcomes": {"maybe": 2}}, {"root": good["root"]}):
        with pytest.raises(EndorseError) as caught:
            asyncio.run(contract.submit("RecordBatch", handles.arg(bad)))
        assert caught.value.code == "INVALID_ARGUMENT", bad
    assert handles.transparency.size() == before
    receipt = asyncio.run(contract.submit("RecordBatch", handles.arg(good)))
    record = json.loads(receipt.result)
    assert record["agent"]["org"] == "hospital-a" and record["id"].startswith("ab-")
    got = json.loads(asyncio.run(contract.evaluate("Get", record["id"])))
    assert got == record
