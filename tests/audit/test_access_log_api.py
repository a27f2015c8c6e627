"""AccessLogService over real gRPC: record, scoped search with cursors, Watch resume, proofs.

Proofs are checked with tests/rfc9162.py, a verifier written from the RFC, not
with the ledger's own code.
"""

from __future__ import annotations

import itertools
import threading
from datetime import UTC, datetime

import grpc
import pytest
from testkit import rfc9162

from ciphercare.v1 import access_log_pb2

SUCCESS = access_log_pb2.ACCESS_OUTCOME_SUCCESS
DENIED = access_log_pb2.ACCESS_OUTCOME_DENIED
_ids = itertools.count()


def new_pid() -> str:
    return f"pa-{next(_ids):05d}-{datetime.now(UTC).strftime('%H%M%S%f')}"


def record(client, pid: str, *, outcome: int = SUCCESS, purpose: str = "TREAT", subtype: str = "read",
           detail: str = "") -> access_log_pb2.RecordResponse:
    return client.record(access_log_pb2.RecordRequest(
        type="110110", subtype=subtype, action="R", outcome=outcome, purpose_of_use=purpose, pid=pid,
        data_classes=["Observation"], source_observer="test/ehr", detail_json=detail,
        outcome_description="" if outcome == SUCCESS else "no-consent"))


def test_record_takes_the_agent_from_the_token(env):
    pid = new_pid()
    response = record(env.hospital("hospital-a"), pid, detail='{"chart": "viewed"}')
    event = response.event
    assert event.agent.subject == "svc-hospital-a" and event.agent.organization == "hospital-a"
    assert "hospital" in event.agent.roles
    assert event.pid == pid and event.outcome == SUCCESS
    assert event.sequence == response.receipt.sequence and event.tx_id == response.receipt.tx_id
    assert len(event.detail_sha256) == 64


def test_patients_cannot_record_successful_accesses(env):
    pid = new_pid()
    with pytest.raises(grpc.RpcError) as err:
        record(env.patient(pid), pid)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_search_filters_pagination_and_scope(env):
    pid = new_pid()
    a, b = env.hospital("hospital-a"), env.hospital("hospital-b")
    ids_a = [record(a, pid).event.id for _ in range(7)]
    ids_denied = [record(a, pid, outcome=DENIED).event.id for _ in range(2)]
    ids_b = [record(b, pid, purpose="HRESCH").event.id for _ in range(3)]

    officer = env.officer()
    everything = list(officer.search_all(access_log_pb2.SearchRequest(pid=pid, page_size=4)))
    assert [e.id for e in everything] == ids_a + ids_denied + ids_b
    seqs = [e.sequence for e in everything]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)

    first = officer.call(officer.access_log.Search, access_log_pb2.SearchRequest(pid=pid, page_size=5))
    assert len(first.events) == 5 and first.next_page_token

    denied = list(officer.search_all(access_log_pb2.SearchRequest(pid=pid, outcome=DENIED)))
    assert [e.id for e in denied] == ids_denied
    research = list(officer.search_all(access_log_pb2.SearchRequest(pid=pid, purpose_of_use="HRESCH")))
    assert [e.id for e in research] == ids_b
    by_org = list(officer.search_all(access_log_pb2.SearchRequest(pid=pid, organization="hospital-b")))
    assert [e.id for e in by_org] == ids_b

    # A hospital sees only its own organisation's accesses, whatever it asks for.
    seen_by_b = list(b.search_all(access_log_pb2.SearchRequest(pid=pid)))
    assert [e.id for e in seen_by_b] == ids_b
    assert list(b.search_all(access_log_pb2.SearchRequest(pid=pid, organization="hospital-a"))) == []
    # The patient sees every access to their own data and nothing about anyone else.
    assert [e.id for e in env.patient(pid).search_all(access_log_pb2.SearchRequest())] == ids_a + ids_denied + ids_b
    assert list(env.patient(new_pid()).search_all(access_log_pb2.SearchRequest(pid=pid))) == []


def test_time_range_filter(env):
    pid = new_pid()
    a = env.hospital()
    events = [record(a, pid).event for _ in range(3)]
    officer = env.officer()
    start = events[1].recorded
    hits = list(officer.search_all(access_log_pb2.SearchRequest(pid=pid, recorded_from=start)))
    assert [e.id for e in hits] == [e.id for e in events if e.recorded.ToMilliseconds() >= start.ToMilliseconds()]


def test_page_token_cannot_be_reused_with_other_filters(env):
    pid = new_pid()
    a = env.hospital()
    for _ in range(3):
        record(a, pid)
    officer = env.officer()
    page = officer.call(officer.access_log.Search, access_log_pb2.SearchRequest(pid=pid, page_size=1))
    with pytest.raises(grpc.RpcError) as err:
        officer.call(officer.access_log.Search,
                     access_log_pb2.SearchRequest(pid=new_pid(), page_size=1, page_token=page.next_page_token))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        officer.call(officer.access_log.Search, access_log_pb2.SearchRequest(page_token="garbage!"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_get_is_scoped(env):
    pid = new_pid()
    event = record(env.hospital("hospital-a"), pid).event
    b = env.hospital("hospital-b")
    with pytest.raises(grpc.RpcError) as err:
        b.call(b.access_log.Get, access_log_pb2.GetAccessEventRequest(event_id=event.id))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    patient = env.patient(pid)
    got = patient.call(patient.access_log.Get, access_log_pb2.GetAccessEventRequest(event_id=event.id))
    assert got.event == event


def _collect(stream, n: int, out: list, done: threading.Event) -> None:
    try:
        for event in stream:
            out.append(event)
            if len(out) >= n:
                break
    except grpc.RpcError:
        pass
    finally:
        done.set()


def test_watch_delivers_every_event_in_order_and_resumes_without_gaps(env):
    pid = new_pid()
    officer = env.officer()
    start = officer.call(officer.access_log.GetCheckpoint, access_log_pb2.GetCheckpointRequest()).checkpoint.tree_size
    first_batch: list = []
    done = threading.Event()
    stream = officer.watch(start_sequence=start, pid=pid)
    reader = threading.Thread(target=_collect, args=(stream, 6, first_batch, done), daemon=True)
    reader.start()
    hospital = env.hospital()
    writers = [threading.Thread(target=lambda: [record(hospital, pid) for _ in range(5)]) for _ in range(2)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    assert done.wait(30), "Watch did not deliver the first six events"
    stream.cancel()
    assert len(first_batch) == 6
    last = first_batch[-1].sequence
    resumed = list(itertools.islice(officer.watch(start_sequence=last + 1, pid=pid), 4))
    seen = first_batch + resumed
    expected = list(officer.search_all(access_log_pb2.SearchRequest(pid=pid)))
    assert [e.id for e in seen] == [e.id for e in expected]
    assert len({e.sequence for e in seen}) == 10


def test_inclusion_proofs_verify_with_an_independent_rfc9162_verifier(env):
    pid = new_pid()
    hospital = env.hospital()
    events = [record(hospital, pid).event for _ in range(5)]
    officer = env.officer()
    head = officer.call(officer.access_log.GetCheckpoint, access_log_pb2.GetCheckpointRequest())
    origin, size, root = rfc9162.verify_note(head.checkpoint.signed_note, head.verifier_key)
    assert size == head.checkpoint.tree_size and root == head.checkpoint.root_hash
    assert origin == env.settings.ledger_origin
    for event in events:
        proof = officer.call(officer.access_log.GetInclusionProof,
                             access_log_pb2.GetInclusionProofRequest(event_id=event.id))
        _, p_size, p_root = rfc9162.verify_note(proof.checkpoint.signed_note, head.verifier_key)
        assert proof.leaf_index == event.sequence and proof.tree_size == p_size
        assert len(proof.hashes) <= max(1, (p_size - 1).bit_length())
        assert rfc9162.verify_inclusion(proof.leaf, proof.leaf_index, proof.tree_size, list(proof.hashes), p_root)
        assert event.id.encode() in proof.leaf
        # A single flipped bit anywhere breaks it.
        bad_leaf = bytes([proof.leaf[0] ^ 1]) + proof.leaf[1:]
        assert not rfc9162.verify_inclusion(bad_leaf, proof.leaf_index, proof.tree_size, list(proof.hashes), p_root)


def test_consistency_between_checkpoints(env):
    officer = env.officer()
    hospital = env.hospital()
    record(hospital, new_pid())
    first = officer.call(officer.access_log.GetCheckpoint, access_log_pb2.GetCheckpointRequest())
    for _ in range(3):
        record(hospital, new_pid())
    proof = officer.call(officer.access_log.GetConsistencyProof,
                         access_log_pb2.GetConsistencyProofRequest(first_tree_size=first.checkpoint.tree_size))
    vkey = first.verifier_key
    _, size1, root1 = rfc9162.verify_note(proof.first_checkpoint.signed_note, vkey)
    _, size2, root2 = rfc9162.verify_note(proof.second_checkpoint.signed_note, vkey)
    assert (size1, root1) == (first.checkpoint.tree_size, first.checkpoint.root_hash)
    assert size2 > size1
    assert rfc9162.verify_consistency(size1, size2, list(proof.hashes), root1, root2)
    assert not rfc9162.verify_consistency(size1, size2, list(proof.hashes), root2, root1)


def test_patients_cannot_prove_arbitrary_entries(env):
    pid = new_pid()
    patient = env.patient(pid)
    with pytest.raises(grpc.RpcError) as err:
        patient.call(patient.access_log.GetInclusionProof, access_log_pb2.GetInclusionProofRequest(sequence=0))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_bad_record_input(env):
    hospital = env.hospital()
    pid = new_pid()
    def req(**fields):
        base = {"type": "110110", "subtype": "read", "action": "R", "outcome": SUCCESS,
                "purpose_of_use": "TREAT", "pid": pid}
        base.update(fields)
        return access_log_pb2.RecordRequest(**{k: v for k, v in base.items() if v is not None})

    cases = [
        (req(pid=None), "pid"),
        (req(purpose_of_use="NOPE"), "NOPE"),
        (req(action="Z"), "action"),
        (req(outcome=None), "outcome"),
        (req(detail_json="[1,2"), "detail_json"),
    ]
    for request, fragment in cases:
        before = env.app.ledger.size()
        with pytest.raises(grpc.RpcError) as err:
            hospital.record(request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, fragment
        assert fragment in err.value.details()
        assert env.app.ledger.size() == before


def test_patients_can_prove_the_entries_about_themselves(env):
    from ciphercare.v1 import consent_pb2

    pid = new_pid()
    patient = env.patient(pid)
    granted = patient.grant(consent_pb2.GrantRequest(
        pid=pid, grantee_organization="hospital-a", decision=consent_pb2.CONSENT_DECISION_PERMIT,
        purposes=["TREAT"], data_classes=["Observation"]))
    proof = patient.call(patient.access_log.GetInclusionProof,
                         access_log_pb2.GetInclusionProofRequest(sequence=granted.receipt.sequence))
    head = patient.call(patient.access_log.GetCheckpoint, access_log_pb2.GetCheckpointRequest())
    _, size, root = rfc9162.verify_note(proof.checkpoint.signed_note, head.verifier_key)
    assert rfc9162.verify_inclusion(proof.leaf, granted.receipt.sequence, size, list(proof.hashes), root)
    other = env.patient(new_pid())
    with pytest.raises(grpc.RpcError) as err:
        other.call(other.access_log.GetInclusionProof,
                   access_log_pb2.GetInclusionProofRequest(sequence=granted.receipt.sequence))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_search_sees_events_written_outside_record_at_once(env):
    """Refusals are logged by the server's hook, not by Record; a search right after must still see them."""
    from ciphercare.v1 import consent_pb2

    pid = new_pid()
    officer = env.officer()
    for _ in range(3):
        with pytest.raises(grpc.RpcError):
            officer.grant(consent_pb2.GrantRequest(
                pid=pid, grantee_organization="hospital-a", decision=consent_pb2.CONSENT_DECISION_PERMIT,
                purposes=["TREAT"], data_classes=["Observation"]))
        found = list(officer.search_all(access_log_pb2.SearchRequest(pid=pid)))
        assert found and all(e.outcome == DENIED for e in found)
    assert len(found) == 3
