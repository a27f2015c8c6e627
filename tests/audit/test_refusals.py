"""Refusals, played by the callers who would abuse them, over real gRPC on loopback.

* Anonymous callers write nothing to the ledger (1,000 tokenless calls naming pids), their refusals go to
  the rate-limited security log.
* Authenticated refusals (interceptor, servicer, contract) are recorded with what was asked, never an
  invented purpose; tokens without an org are recorded too; repeated refusals are aggregated per window.
* Record checks what it can (observer, cited consent) before anything is stored; a hospital can prove its
  own writes; refused Grants store nothing off-chain.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from testkit.server import Env, ServerThread, make_settings

from ciphercare.sdk.client import CiphercareClient
from ciphercare.services.identity.devissuer import DevIssuer
from ciphercare.v1 import access_log_pb2, consent_pb2

PERMIT = consent_pb2.CONSENT_DECISION_PERMIT
DENY = consent_pb2.CONSENT_DECISION_DENY
_ids = itertools.count()


def new_pid() -> str:
    return f"pr-{next(_ids):05d}-{datetime.now(UTC).strftime('%H%M%S%f')}"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    # A long window: summaries are written only when a test flushes them, so sizes stay predictable.
    settings = make_settings(tmp_path_factory.mktemp("refusals"), refusal_window_s=3600.0,
                             security_log_rate_per_s=5.0, security_log_burst=20)
    server = ServerThread(settings).start()
    try:
        yield Env(server=server, issuer=DevIssuer.from_settings(settings))
    finally:
        server.stop()


def size(env: Env) -> int:
    return env.app.ledger.size()


def flush(env: Env) -> int:
    loop = env.server._loop  # noqa: SLF001 - the server's own event loop
    assert loop is not None
    return asyncio.run_coroutine_threadsafe(env.app.refusals.flush(force=True), loop).result(30)


def events_for(env: Env, pid: str) -> list[access_log_pb2.AccessEvent]:
    officer = env.officer()
    return list(officer.search_all(access_log_pb2.SearchRequest(pid=pid)))


def grant_request(pid: str, org: str = "hospital-b", decision: int = PERMIT,
                  purposes: tuple[str, ...] = ("TREAT", "HRESCH"), **kw: object) -> consent_pb2.GrantRequest:
    return consent_pb2.GrantRequest(pid=pid, grantee_organization=org, decision=decision,  # type: ignore[arg-type]
                                    purposes=list(purposes), data_classes=["Observation"], **kw)


def test_a_thousand_tokenless_calls_write_nothing(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    channel = grpc.insecure_channel(env.server.target)
    anonymous = CiphercareClient(channel, lambda: "not.a.jwt")
    calls = [
        lambda pid: anonymous.check(pid, "hospital-b", "HRESCH", "Observation"),
        lambda pid: anonymous.grant(grant_request(pid)),
        lambda pid: anonymous.list_for_patient(pid),
        lambda pid: list(anonymous.search_all(access_log_pb2.SearchRequest(pid=pid))),
        lambda pid: anonymous.call(anonymous.access_log.Record, access_log_pb2.RecordRequest(
            type="110110", action="R", purpose_of_use="TREAT", pid=pid,
            outcome=access_log_pb2.ACCESS_OUTCOME_SUCCESS)),
    ]
    pids = [new_pid() for _ in range(20)]
    before = size(env)
    caplog.set_level(logging.WARNING, logger="ciphercare.security")
    for i in range(1000):
        with pytest.raises(grpc.RpcError) as err:
            calls[i % len(calls)](pids[i % len(pids)])
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert flush(env) == 0
    assert size(env) == before
    lines = [r for r in caplog.records if r.name == "ciphercare.security"]
    # Rate-limited: the burst and what the rate refilled, far fewer than 1,000; drops are counted in the lines.
    assert 20 <= len(lines) < 1000
    assert all(r.getMessage() == "refused unauthenticated call" for r in lines)
    assert sum(getattr(r, "dropped_since_last", 0) for r in lines) + len(lines) <= 1000
    assert any(getattr(r, "dropped_since_last", 0) > 0 for r in lines)
    channel.close()


def test_refusals_inside_services_are_recorded_with_what_was_asked(env: Env) -> None:
    pid = new_pid()
    env.patient(pid).grant(grant_request(pid, decision=DENY))
    # hospital-b checks consent as hospital-a, for research: refused by the consent contract.
    before = size(env)
    with pytest.raises(grpc.RpcError) as err:
        env.hospital("hospital-b").check(pid, "hospital-a", "HRESCH", "Observation")
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert size(env) == before + 1
    (event,) = [e for e in events_for(env, pid) if e.outcome == access_log_pb2.ACCESS_OUTCOME_DENIED]
    assert (event.agent.organization, event.purpose_of_use, list(event.data_classes)) == (
        "hospital-b", "HRESCH", ["Observation"])
    assert event.source_observer == "ciphercare/ConsentService"
    # Another patient lists this patient's consents: recorded, with no invented purpose.
    snoop = new_pid()
    with pytest.raises(grpc.RpcError) as err:
        env.patient(snoop).list_for_patient(pid)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    listed = [e for e in events_for(env, pid) if e.agent.subject == f"patient-{snoop}"]
    assert len(listed) == 1 and listed[0].purpose_of_use == "" and list(listed[0].data_classes) == []


def test_a_token_without_an_org_is_recorded_under_no_org(env: Env) -> None:
    pid = new_pid()
    officer = env.client(env.token("compliance-officer", subject="officer-without-org"))
    before = size(env)
    with pytest.raises(grpc.RpcError) as err:
        officer.check(pid, "hospital-a", "TREAT", "Observation")
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert size(env) == before + 1
    (event,) = events_for(env, pid)
    assert (event.agent.subject, event.agent.organization) == ("officer-without-org", "no-org")


def test_repeated_refusals_are_aggregated_per_window(env: Env) -> None:
    pid = new_pid()
    snoop = env.hospital("hospital-c")
    flush(env)
    before = size(env)
    for _ in range(50):
        with pytest.raises(grpc.RpcError):
            snoop.check(pid, "hospital-a", "TREAT", "Observation")
    assert size(env) == before + 1  # the first at once ...
    assert flush(env) == 1
    assert size(env) == before + 2  # ... the other 49 as one summary
    first, summary = events_for(env, pid)
    assert first.repeat_count == 0 and summary.repeat_count == 49
    assert (summary.purpose_of_use, summary.outcome_description) == ("TREAT", "permission-denied")


# --- Record --------------------------------------------------------------------------------------------


def record_request(pid: str, **kw: object) -> access_log_pb2.RecordRequest:
    base: dict[str, object] = dict(type="110110", subtype="read", action="R", purpose_of_use="TREAT", pid=pid,
                                   outcome=access_log_pb2.ACCESS_OUTCOME_SUCCESS, data_classes=["Observation"],
                                   detail_json='{"chart": "opened"}')
    base.update(kw)
    return access_log_pb2.RecordRequest(**base)  # type: ignore[arg-type]


def documents(env: Env) -> int:
    from sqlalchemy import func, select

    from ciphercare.services.store.models import Document

    with env.app.store.session() as session:
        return int(session.scalar(select(func.count()).select_from(Document)) or 0)


@pytest.mark.parametrize("observer", ["hospital-a/ehr", "ciphercare/ScoringService", "hospital-b", "x" * 120])
def test_record_refuses_an_observer_that_is_not_the_callers(env: Env, observer: str) -> None:
    before, docs = size(env), documents(env)
    with pytest.raises(grpc.RpcError) as err:
        env.hospital("hospital-b").record(record_request(new_pid(), source_observer=observer))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "source_observer" in err.value.details() and len(err.value.details()) < 300
    # The refusal itself is recorded (one denied event), the claimed access and its detail are not.
    assert size(env) == before + 1 and documents(env) == docs


def test_record_checks_the_cited_consent_before_storing_anything(env: Env) -> None:
    pid, other = new_pid(), new_pid()
    mine = env.patient(pid).grant(grant_request(pid, purposes=("TREAT",))).consent
    theirs = env.patient(other).grant(grant_request(other)).consent
    for_a = env.patient(pid).grant(grant_request(pid, org="hospital-a")).consent
    revoked = env.patient(pid).grant(grant_request(pid)).consent
    env.patient(pid).revoke(revoked.id, "patient-request")
    hospital = env.hospital("hospital-b")
    cases = [
        ("cns-" + "ab" * 16, "TREAT", "does not exist"),
        (theirs.id, "TREAT", "about another patient"),
        (for_a.id, "TREAT", "names hospital-a, not hospital-b"),
        (revoked.id, "TREAT", "(inactive) does not permit"),
        (mine.id, "ETREAT", "does not permit ETREAT"),
    ]
    for consent_id, purpose, fragment in cases:
        before, docs = size(env), documents(env)
        with pytest.raises(grpc.RpcError) as err:
            hospital.record(record_request(pid, consent_id=consent_id, purpose_of_use=purpose))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, err.value.details()
        assert fragment in err.value.details()
        assert (size(env), documents(env)) == (before, docs)
    ok = hospital.record(record_request(pid, consent_id=mine.id)).event
    assert ok.consent_basis == "verified-consent"
    bare = hospital.record(record_request(pid)).event
    assert (bare.consent_basis, bare.consent_id) == ("no-consent-cited", "")


def test_record_observer_registry(server_kit, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings = server_kit.make_settings(tmp_path, record_observers={"hospital-b": ["hospital-b/ehr"]})
    server = server_kit.ServerThread(settings).start()
    try:
        kit = server_kit.Env(server=server, issuer=DevIssuer.from_settings(settings))
        hospital = kit.hospital("hospital-b")
        with pytest.raises(grpc.RpcError) as err:
            hospital.record(record_request(new_pid(), source_observer="hospital-b/lab"))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED and "registered" in err.value.details()
        assert hospital.record(record_request(new_pid(), source_observer="hospital-b/ehr")).event.source_observer \
            == "hospital-b/ehr"
    finally:
        server.stop()


# --- Writers prove their own writes -------------------------------------------------------------------


def test_an_organisation_fetches_proofs_of_its_own_writes_only(env: Env) -> None:
    pid = new_pid()
    form = base64.b64encode(b"signed form").decode()
    document = json.dumps({"resourceType": "Consent", "status": "active",
                           "sourceAttachment": {"contentType": "application/pdf", "data": form}})
    granted = env.hospital("hospital-b").grant(grant_request(pid, fhir_consent_json=document))
    seq = granted.receipt.sequence
    assert granted.receipt.leaf and granted.receipt.inclusion_proof is not None
    own = env.hospital("hospital-b")
    proof = own.call(own.access_log.GetInclusionProof, access_log_pb2.GetInclusionProofRequest(sequence=seq))
    assert proof.leaf == granted.receipt.leaf
    other = env.hospital("hospital-a")
    with pytest.raises(grpc.RpcError) as err:
        other.call(other.access_log.GetInclusionProof, access_log_pb2.GetInclusionProofRequest(sequence=seq))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_the_sdk_refuses_a_write_receipt_that_does_not_match(env: Env) -> None:
    from ciphercare.sdk.client import ProofError

    pid = new_pid()
    client = env.patient(pid)
    response = client.grant(grant_request(pid))  # verified on receipt
    forged = consent_pb2.Consent()
    forged.CopyFrom(response.consent)
    forged.grantee_organization = "hospital-a"
    with pytest.raises(ProofError, match="grantee_organization"):
        client.verify_write(response.receipt, forged)
    tampered = type(response.receipt)()
    tampered.CopyFrom(response.receipt)
    tampered.leaf = tampered.leaf.replace(b"hospital-b", b"hospital-a")
    with pytest.raises(ProofError, match="inclusion_proof"):
        client.verify_write(tampered, response.consent)
    wrong_key = CiphercareClient.connect(env.server.target, env.token("patient", pid=pid),
                                         vkey="other+00000000+AQ" + "A" * 42 + "=")
    with pytest.raises((ProofError, ValueError)):
        wrong_key.verify_write(response.receipt, response.consent)


# --- Nothing stored off-chain for a refused Grant ------------------------------------------------------


def data_keys(env: Env) -> int:
    return env.app.store.data_key_count()


def test_refused_grants_store_nothing_off_chain(env: Env) -> None:
    attacker = env.patient(new_pid())
    big = json.dumps({"resourceType": "Consent", "status": "active", "note": "x" * 250_000})
    before = (size(env), documents(env), data_keys(env))
    for _ in range(40):
        with pytest.raises(grpc.RpcError) as err:
            attacker.grant(grant_request(new_pid(), fhir_consent_json=big))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    flush(env)
    after = (size(env), documents(env), data_keys(env))
    # 40 denied events (one per victim), no document, no data key.
    assert after == (before[0] + 40, before[1], before[2])


def test_an_oversized_document_is_refused_with_its_limit(env: Env) -> None:
    pid = new_pid()
    huge = json.dumps({"resourceType": "Consent", "status": "active", "note": "x" * 300_000})
    before = (size(env), documents(env))
    with pytest.raises(grpc.RpcError) as err:
        env.patient(pid).grant(grant_request(pid, fhir_consent_json=huge))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "larger than 262144 bytes" in err.value.details()
    assert (size(env), documents(env)) == before
