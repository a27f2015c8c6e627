"""The gateway node refuses what a Fabric peer refuses, with the right gRPC status, and writes nothing.

Each test plays a misbehaving client against ``gateway.Gateway`` on loopback (real gRPC, real
signatures): forged or high-S signatures, a wrong tx id, an identity from no configured MSP or
from a CA the channel does not know, wrong channel or chaincode names, malformed protos, tampered
envelopes and endorsements, replays. Then: MVCC conflicts surface as ``CommitError`` with
``MVCC_READ_CONFLICT``; deadlines; chaincode events resume from a checkpoint without gaps; the
transparency API serves verifiable proofs to channel members only.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.x509.oid import NameOID
from fabric_protos.common import common_pb2
from fabric_protos.gateway import gateway_pb2, gateway_pb2_grpc
from fabric_protos.peer import proposal_pb2, proposal_response_pb2, transaction_pb2
from testkit import rfc9162
from testkit.fabric.gateway import Enrolled, InProcessNode, enrol, in_process_node
from testkit.fabric.gateway_plan import _grant

from ciphercare.ledger.api import Principal
from ciphercare.ledger.embedded.gateway_server import sign_transparency_call
from ciphercare.ledger.fabric import ConnectOptions, X509Identity, connect
from ciphercare.ledger.fabric.errors import CommitError, CommitStatusError, EndorseError, error_details
from ciphercare.ledger.fabric.network import Checkpointer, FileCheckpointer
from ciphercare.ledger.fabric.proposal import build_proposal, envelope_result, transaction_id
from ciphercare.ledger.fabric.signer import P256_N, new_private_key_signer, to_low_s
from ciphercare.v1 import access_log_pb2, access_log_pb2_grpc

CLIN = Principal("u-clin-a", "hospital-a", frozenset({"clinician"}), "ehr-a")
CHECK_ARGS = ["pat-0001", "hospital-a", "TREAT", "Observation", "2025-06-01T12:00:00Z"]


@pytest.fixture
def node(tmp_path: Path) -> Any:
    with in_process_node(tmp_path) as n:
        yield n


@pytest.fixture
def clin(tmp_path: Path, node: InProcessNode) -> Enrolled:
    return enrol(tmp_path / "msp", CLIN)


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


def _key(e: Enrolled) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(e.key_pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def _creator(e: Enrolled) -> bytes:
    return X509Identity(e.msp_id, e.cert_pem).serialize()


def signed_proposal(
    e: Enrolled,
    *,
    fn: str = "consent:Check",
    args: list[str] | None = None,
    channel: str = "ciphercare",
    chaincode: str = "ciphercare",
    creator: bytes | None = None,
    mutate: Callable[[proposal_pb2.Proposal], None] | None = None,
    sign: Callable[[bytes], bytes] | None = None,
) -> tuple[proposal_pb2.SignedProposal, str]:
    proposal, tx_id = build_proposal(
        channel=channel,
        chaincode=chaincode,
        transaction=fn,
        args=args if args is not None else CHECK_ARGS,
        creator=creator if creator is not None else _creator(e),
    )
    if mutate is not None:
        mutate(proposal)
    data = proposal.SerializeToString()
    signature = (sign or new_private_key_signer(_key(e)))(data)
    return proposal_pb2.SignedProposal(proposal_bytes=data, signature=signature), tx_id


async def _call(node: InProcessNode, method: str, request: Any, timeout: float = 10.0) -> Any:
    async with grpc.aio.insecure_channel(node.target) as ch:
        stub = gateway_pb2_grpc.GatewayStub(ch)
        return await getattr(stub, method)(request, timeout=timeout)


def refused(node: InProcessNode, method: str, request: Any) -> grpc.aio.AioRpcError:
    size = node.ledger.size()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        run(_call(node, method, request))
    assert node.ledger.size() == size, "a refused request must write nothing"
    return err.value


def evaluate_request(sp: proposal_pb2.SignedProposal, tx_id: str, channel: str = "ciphercare") -> Any:
    return gateway_pb2.EvaluateRequest(transaction_id=tx_id, channel_id=channel, proposed_transaction=sp)


def endorse_request(sp: proposal_pb2.SignedProposal, tx_id: str) -> Any:
    return gateway_pb2.EndorseRequest(transaction_id=tx_id, channel_id="ciphercare", proposed_transaction=sp)


# --------------------------------------------------------------------------- the happy path, raw


def test_a_well_formed_signed_proposal_is_evaluated(node: InProcessNode, clin: Enrolled) -> None:
    sp, tx_id = signed_proposal(clin)
    response = run(_call(node, "Evaluate", evaluate_request(sp, tx_id)))
    assert response.result.status == 200
    assert json.loads(response.result.payload)["decision"] == "deny"


def test_the_node_answers_grpc_health_for_itself_and_its_services(node: InProcessNode) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(node.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "gateway.Gateway", "ciphercare.v1.AccessLogService"):
            answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING, service


# --------------------------------------------------------------------------- signatures


@pytest.mark.parametrize("method", ["Evaluate", "Endorse"])
def test_signature_over_other_bytes_is_unauthenticated(node: InProcessNode, clin: Enrolled, method: str) -> None:
    signer = new_private_key_signer(_key(clin))
    sp, tx_id = signed_proposal(clin, sign=lambda data: signer(data + b"x"))
    req = evaluate_request(sp, tx_id) if method == "Evaluate" else endorse_request(sp, tx_id)
    err = refused(node, method, req)
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "does not verify" in (err.details() or "")


def test_high_s_signature_is_refused(node: InProcessNode, clin: Enrolled) -> None:
    signer = new_private_key_signer(_key(clin))

    def high_s(data: bytes) -> bytes:
        r, s = decode_dss_signature(signer(data))
        return encode_dss_signature(r, P256_N - s)  # the same signature, mathematically valid, high S

    sp, tx_id = signed_proposal(clin, sign=high_s)
    err = refused(node, "Evaluate", evaluate_request(sp, tx_id))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "low-S" in (err.details() or "")
    # ... and the low-S form of that very signature is accepted
    low = to_low_s(high_s(sp.proposal_bytes))
    ok = proposal_pb2.SignedProposal(proposal_bytes=sp.proposal_bytes, signature=low)
    assert run(_call(node, "Evaluate", evaluate_request(ok, tx_id))).result.status == 200


def test_garbage_signature_is_unauthenticated(node: InProcessNode, clin: Enrolled) -> None:
    sp, tx_id = signed_proposal(clin, sign=lambda data: b"\x30\x02\x01")
    assert refused(node, "Evaluate", evaluate_request(sp, tx_id)).code() == grpc.StatusCode.UNAUTHENTICATED


# --------------------------------------------------------------------------- identities


def test_unknown_msp_is_unauthenticated(node: InProcessNode, clin: Enrolled) -> None:
    creator = X509Identity("NoSuchOrgMSP", clin.cert_pem).serialize()
    sp, tx_id = signed_proposal(clin, creator=creator)
    err = refused(node, "Evaluate", evaluate_request(sp, tx_id))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "NoSuchOrgMSP" in (err.details() or "")


def _self_issued(
    org: str,
    subject: str,
    *,
    ca_key: ec.EllipticCurvePrivateKey | None = None,
    issuer: x509.Name | None = None,
    not_after: dt.datetime | None = None,
) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org), x509.NameAttribute(NameOID.COMMON_NAME, subject)]
    )
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=2))
        .not_valid_after(not_after or now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key or key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), key


def test_certificate_from_a_foreign_ca_claiming_a_member_msp_is_unauthenticated(
    node: InProcessNode, clin: Enrolled
) -> None:
    # A misbehaving org admin mints its own certificate and claims HospitalAMSP.
    cert_pem, key = _self_issued("hospital-a", "u-clin-a")
    forged = Enrolled(
        CLIN,
        "HospitalAMSP",
        cert_pem,
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    sp, tx_id = signed_proposal(forged, creator=X509Identity("HospitalAMSP", cert_pem).serialize())
    err = refused(node, "Endorse", endorse_request(sp, tx_id))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "not issued by a CA of HospitalAMSP" in (err.details() or "")


def test_certificate_of_another_member_org_cannot_claim_this_msp(tmp_path: Path, node: InProcessNode) -> None:
    other = enrol(tmp_path / "msp", Principal("u-clin-b", "hospital-b", frozenset({"clinician"}), "ehr-b"))
    enrol(tmp_path / "msp", CLIN)  # HospitalAMSP exists
    sp, tx_id = signed_proposal(other, creator=X509Identity("HospitalAMSP", other.cert_pem).serialize())
    assert refused(node, "Evaluate", evaluate_request(sp, tx_id)).code() == grpc.StatusCode.UNAUTHENTICATED


def test_expired_certificate_is_unauthenticated(tmp_path: Path, node: InProcessNode, clin: Enrolled) -> None:
    ca_dir = tmp_path / "msp" / "HospitalAMSP"
    ca_key = serialization.load_pem_private_key((ca_dir / "ca-key.pem").read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca-cert.pem").read_bytes())
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    cert_pem, key = _self_issued(
        "hospital-a",
        "u-clin-a",
        ca_key=ca_key,
        issuer=ca_cert.subject,
        not_after=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1),
    )
    old = Enrolled(
        CLIN,
        "HospitalAMSP",
        cert_pem,
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    sp, tx_id = signed_proposal(old)
    err = refused(node, "Evaluate", evaluate_request(sp, tx_id))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED and "expired" in (err.details() or "")


# --------------------------------------------------------------------------- tx id, names, structure


def test_tx_id_not_derived_from_nonce_and_creator_is_invalid(node: InProcessNode, clin: Enrolled) -> None:
    def wrong_tx_id(p: proposal_pb2.Proposal) -> None:
        header = common_pb2.Header.FromString(p.header)
        ch = common_pb2.ChannelHeader.FromString(header.channel_header)
        ch.tx_id = transaction_id(b"another nonce", b"")
        header.channel_header = ch.SerializeToString()
        p.header = header.SerializeToString()

    sp, _ = signed_proposal(clin, mutate=wrong_tx_id)
    ch = common_pb2.ChannelHeader.FromString(
        common_pb2.Header.FromString(proposal_pb2.Proposal.FromString(sp.proposal_bytes).header).channel_header
    )
    err = refused(node, "Endorse", endorse_request(sp, ch.tx_id))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "SHA-256(nonce || creator)" in (err.details() or "")


def test_request_tx_id_differing_from_the_proposal_is_invalid(node: InProcessNode, clin: Enrolled) -> None:
    sp, tx_id = signed_proposal(clin)
    err = refused(node, "Evaluate", evaluate_request(sp, "0" * 64))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_wrong_channel_is_not_found(node: InProcessNode, clin: Enrolled) -> None:
    sp, tx_id = signed_proposal(clin, channel="other-channel")
    err = refused(node, "Evaluate", evaluate_request(sp, tx_id, channel="other-channel"))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "other-channel" in (err.details() or "")


def test_request_channel_differing_from_the_proposal_is_invalid(node: InProcessNode, clin: Enrolled) -> None:
    sp, tx_id = signed_proposal(clin)
    assert (
        refused(node, "Evaluate", evaluate_request(sp, tx_id, channel="x")).code() == grpc.StatusCode.INVALID_ARGUMENT
    )


def test_wrong_chaincode_is_not_found(node: InProcessNode, clin: Enrolled) -> None:
    sp, tx_id = signed_proposal(clin, chaincode="basic")
    err = refused(node, "Endorse", endorse_request(sp, tx_id))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "basic" in (err.details() or "")


@pytest.mark.parametrize("garbage", [b"\xff\xff\xff", b"", b"\x0a\x05abc"])
def test_malformed_proposal_bytes_are_invalid(node: InProcessNode, clin: Enrolled, garbage: bytes) -> None:
    signer = new_private_key_signer(_key(clin))
    sp = proposal_pb2.SignedProposal(proposal_bytes=garbage, signature=signer(garbage))
    assert refused(node, "Evaluate", evaluate_request(sp, "a" * 64)).code() == grpc.StatusCode.INVALID_ARGUMENT


def test_non_endorser_header_type_is_invalid(node: InProcessNode, clin: Enrolled) -> None:
    def config_type(p: proposal_pb2.Proposal) -> None:
        header = common_pb2.Header.FromString(p.header)
        ch = common_pb2.ChannelHeader.FromString(header.channel_header)
        ch.type = common_pb2.HeaderType.CONFIG
        header.channel_header = ch.SerializeToString()
        p.header = header.SerializeToString()

    sp, tx_id = signed_proposal(clin, mutate=config_type)
    err = refused(node, "Endorse", endorse_request(sp, tx_id))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "ENDORSER_TRANSACTION" in (err.details() or "")


def test_contract_refusal_carries_its_code_and_error_details(node: InProcessNode, clin: Enrolled) -> None:
    sp, tx_id = signed_proposal(clin, args=["pat-0001", "hospital-a", "BOGUS", "Observation", ""])
    err = refused(node, "Endorse", endorse_request(sp, tx_id))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    (detail,) = error_details(err)
    assert detail.msp_id == "CiphercareNodeMSP" and detail.address == node.target
    assert detail.message.startswith("chaincode response 500, INVALID_ARGUMENT: purpose")


# --------------------------------------------------------------------------- envelopes


async def _endorse(node: InProcessNode, e: Enrolled, fn: str, args: list[str]) -> tuple[common_pb2.Envelope, str]:
    sp, tx_id = signed_proposal(e, fn=fn, args=args)
    response = await _call(node, "Endorse", endorse_request(sp, tx_id))
    env = response.prepared_transaction
    env.signature = new_private_key_signer(_key(e))(env.payload)
    return env, tx_id


def submit_request(env: common_pb2.Envelope, tx_id: str) -> Any:
    return gateway_pb2.SubmitRequest(transaction_id=tx_id, channel_id="ciphercare", prepared_transaction=env)


def test_envelope_with_a_tampered_payload_is_unauthenticated(node: InProcessNode, clin: Enrolled) -> None:
    env, tx_id = run(_endorse(node, clin, "consent:Grant", [_grant("pat-0001")]))
    tampered = common_pb2.Envelope(payload=env.payload[:-1] + bytes([env.payload[-1] ^ 1]), signature=env.signature)
    err = refused(node, "Submit", submit_request(tampered, tx_id))
    assert err.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT)


def test_client_rewriting_the_endorsed_result_breaks_the_endorsement(node: InProcessNode, clin: Enrolled) -> None:
    # The client re-signs an envelope whose write set it changed: the node's endorsement no longer covers it.
    env, tx_id = run(_endorse(node, clin, "consent:Grant", [_grant("pat-0001")]))
    payload = common_pb2.Payload.FromString(env.payload)
    tx = transaction_pb2.Transaction.FromString(payload.data)
    cap = transaction_pb2.ChaincodeActionPayload.FromString(tx.actions[0].payload)
    prp = proposal_response_pb2.ProposalResponsePayload.FromString(cap.action.proposal_response_payload)
    action = proposal_pb2.ChaincodeAction.FromString(prp.extension)
    action.response.payload = b'{"decision":"permit"}'
    prp.extension = action.SerializeToString()
    cap.action.proposal_response_payload = prp.SerializeToString()
    tx.actions[0].payload = cap.SerializeToString()
    payload.data = tx.SerializeToString()
    forged = common_pb2.Envelope(payload=payload.SerializeToString())
    forged.signature = new_private_key_signer(_key(clin))(forged.payload)
    err = refused(node, "Submit", submit_request(forged, tx_id))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "endorsement" in (err.details() or "")


def test_envelope_signed_by_someone_else_is_unauthenticated(
    tmp_path: Path, node: InProcessNode, clin: Enrolled
) -> None:
    other = enrol(tmp_path / "msp", Principal("u-clin-z", "hospital-a", frozenset({"clinician"}), "ehr-a"))
    env, tx_id = run(_endorse(node, clin, "consent:Grant", [_grant("pat-0001")]))
    env.signature = new_private_key_signer(_key(other))(env.payload)
    assert refused(node, "Submit", submit_request(env, tx_id)).code() == grpc.StatusCode.UNAUTHENTICATED


def test_malformed_envelope_is_invalid(node: InProcessNode, clin: Enrolled) -> None:
    env = common_pb2.Envelope(payload=b"\xff\x01", signature=b"")
    assert refused(node, "Submit", submit_request(env, "a" * 64)).code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused(node, "Submit", gateway_pb2.SubmitRequest(channel_id="ciphercare")).code() == (
        grpc.StatusCode.INVALID_ARGUMENT
    )


def test_replayed_transaction_is_refused(node: InProcessNode, clin: Enrolled) -> None:
    env, tx_id = run(_endorse(node, clin, "consent:Grant", [_grant("pat-0001")]))
    run(_call(node, "Submit", submit_request(env, tx_id)))
    assert node.ledger.wait_for_size(1, timeout=10)
    err = refused(node, "Submit", submit_request(env, tx_id))
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    assert node.ledger.size() == 1


# --------------------------------------------------------------------------- MVCC, commit status, deadlines


def test_mvcc_conflict_surfaces_as_commit_error_with_its_code(node: InProcessNode, clin: Enrolled) -> None:
    async def body() -> None:
        async with clin.gateway(node.target) as gw:
            consent = gw.network("ciphercare").contract("ciphercare", "consent")
            granted = json.loads(await consent.submit("Grant", [_grant("pat-0001")]))
            # Two revocations endorsed against the same committed version of the consent ...
            revoke = [granted["id"], "withdrawn-by-organization"]
            first = await consent.new_proposal("Revoke", arguments=revoke).endorse()
            second = await consent.new_proposal("Revoke", arguments=revoke).endorse()
            done = await first.submit()
            status = await done.status()
            assert status.successful and status.block_number == 1
            # ... the second one's read is stale when it is ordered.
            late = await second.submit()
            with pytest.raises(CommitError) as err:
                await late.committed_result()
            assert err.value.code == transaction_pb2.MVCC_READ_CONFLICT
            assert err.value.code_name == "MVCC_READ_CONFLICT" and "MVCC_READ_CONFLICT" in str(err.value)
            assert err.value.tx_id == second.transaction_id
            status = await late.status()  # asked again: the same answer
            assert (status.code, status.successful) == (transaction_pb2.MVCC_READ_CONFLICT, False)

    run(body())
    assert node.ledger.size() == 2  # the grant and one revocation; the conflicting one wrote nothing


def test_phantom_read_conflict_when_a_range_changes(tmp_path: Path, node: InProcessNode, clin: Enrolled) -> None:
    # CheckMany-free way to read a range in an update transaction: Grant reads the patient's index?
    # ListForPatient is evaluate-only, so endorse it as a transaction: its range read must still hold at commit.
    async def body() -> None:
        async with clin.gateway(node.target) as gw:
            consent = gw.network("ciphercare").contract("ciphercare", "consent")
            await consent.submit("Grant", [_grant("pat-0001")])
            listing = await consent.new_proposal("ListForPatient", arguments=["pat-0001"]).endorse()
            await consent.submit("Grant", [_grant("pat-0001", decision="deny")])  # a new key in that range
            late = await listing.submit()
            with pytest.raises(CommitError) as err:
                await late.committed_result()
            assert err.value.code == transaction_pb2.PHANTOM_READ_CONFLICT

    run(body())
    assert node.ledger.size() == 2


def test_commit_status_waits_until_the_deadline_for_an_unknown_transaction(node: InProcessNode, clin: Enrolled) -> None:
    from ciphercare.ledger.fabric.commit import Commit

    async def body() -> None:
        async with clin.gateway(node.target, ConnectOptions(commit_status_timeout=0.3)) as gw:
            with pytest.raises(CommitStatusError) as err:
                await Commit(gw, "ciphercare", "f" * 64).status()
            assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
            assert err.value.tx_id == "f" * 64

    run(body())


def test_every_call_has_a_deadline_even_against_an_unresponsive_endpoint(clin: Enrolled) -> None:
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts TCP, never speaks HTTP/2
    target = f"127.0.0.1:{listener.getsockname()[1]}"

    async def body() -> None:
        gw = clin.gateway(target, ConnectOptions(evaluate_timeout=0.3, endorse_timeout=0.3))
        try:
            contract = gw.network("ciphercare").contract("ciphercare", "consent")
            for call in (contract.evaluate("Check", CHECK_ARGS), contract.submit_async("Grant", ["{}"])):
                with pytest.raises(EndorseError) as err:
                    await call
                assert err.value.code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
                assert len(err.value.tx_id) == 64
        finally:
            await gw.close()
            listener.close()

    run(body())


def test_default_deadlines_are_set_per_stage() -> None:
    o = ConnectOptions()
    assert (
        o.deadline("evaluate", None),
        o.deadline("endorse", None),
        o.deadline("submit", None),
        o.deadline("commit_status", None),
    ) == (5.0, 15.0, 5.0, 60.0)
    assert o.deadline("evaluate", 1.5) == 1.5
    with pytest.raises(ValueError):
        o.deadline("evaluate", 0)


# --------------------------------------------------------------------------- events


def test_chaincode_events_resume_from_a_checkpoint_without_gaps(
    tmp_path: Path, node: InProcessNode, clin: Enrolled
) -> None:
    async def body() -> None:
        async with clin.gateway(node.target) as gw:
            network = gw.network("ciphercare")
            consent = network.contract("ciphercare", "consent")
            tx_ids = []
            for i in range(6):
                submitted = await consent.submit_async("Grant", [_grant(f"pat-{i:04d}")])
                assert (await submitted.status()).successful
                tx_ids.append(submitted.transaction_id)
            checkpoint = FileCheckpointer(tmp_path / "events.json")
            seen: list[tuple[int, str]] = []
            async for ev in network.chaincode_events("ciphercare", start_block=0, checkpoint=checkpoint):
                seen.append((ev.block_number, ev.transaction_id))
                checkpoint.checkpoint_chaincode_event(ev)
                if len(seen) == 2:
                    break
            # a new process resumes from the persisted checkpoint; start_block is ignored then
            resumed = FileCheckpointer(tmp_path / "events.json")
            assert (resumed.block_number, resumed.transaction_id) == seen[-1]
            more = []
            async for ev in network.chaincode_events("ciphercare", start_block=0, checkpoint=resumed):
                more.append((ev.block_number, ev.transaction_id))
                resumed.checkpoint_chaincode_event(ev)
                if len(more) == 4:
                    break
            assert [t for _, t in seen + more] == tx_ids
            assert [b for b, _ in seen + more] == list(range(6))
            # block checkpoint: resume after a whole block
            cp = Checkpointer()
            cp.checkpoint_block(3)
            rest = []
            async for ev in network.chaincode_events("ciphercare", checkpoint=cp):
                rest.append(ev.block_number)
                if len(rest) == 2:
                    break
            assert rest == [4, 5]
            # a live stream from the next commit sees only new transactions
            stream = network.chaincode_events("ciphercare")
            nxt = asyncio.ensure_future(stream.__anext__())
            await asyncio.sleep(0.2)
            submitted = await consent.submit_async("Grant", [_grant("pat-0099")])
            ev = await asyncio.wait_for(nxt, 10)
            assert (ev.block_number, ev.transaction_id, ev.event_name) == (
                6,
                submitted.transaction_id,
                "ConsentGranted",
            )
            assert json.loads(ev.payload)["pid"] == "pat-0099"
            await stream.aclose()

    run(body())


def test_events_request_with_a_bad_signature_is_refused(node: InProcessNode, clin: Enrolled) -> None:
    req = gateway_pb2.ChaincodeEventsRequest(
        channel_id="ciphercare", chaincode_id="ciphercare", identity=_creator(clin)
    ).SerializeToString()
    signed = gateway_pb2.SignedChaincodeEventsRequest(request=req, signature=new_private_key_signer(_key(clin))(b"x"))

    async def body() -> None:
        async with grpc.aio.insecure_channel(node.target) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for _ in gateway_pb2_grpc.GatewayStub(ch).ChaincodeEvents(signed, timeout=5):
                    pass
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED

    run(body())


# --------------------------------------------------------------------------- transparency


def test_transparency_api_serves_verifiable_proofs_to_members_only(node: InProcessNode, clin: Enrolled) -> None:
    async def body() -> None:
        async with clin.gateway(node.target) as gw:
            consent = gw.network("ciphercare").contract("ciphercare", "consent")
            for i in range(3):
                await consent.submit("Grant", [_grant(f"pat-{i:04d}")])
        signer = new_private_key_signer(_key(clin))
        async with grpc.aio.insecure_channel(node.target) as ch:
            stub = access_log_pb2_grpc.AccessLogServiceStub(ch)
            req = access_log_pb2.GetCheckpointRequest()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetCheckpoint(req, timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            bad = sign_transparency_call("GetCheckpoint", req, _creator(clin), lambda m: signer(m + b"!"))
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetCheckpoint(req, timeout=5, metadata=bad)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            cp = await stub.GetCheckpoint(
                req, timeout=5, metadata=sign_transparency_call("GetCheckpoint", req, _creator(clin), signer)
            )
            origin, size, root = rfc9162.verify_note(cp.checkpoint.signed_note, cp.verifier_key)
            assert size == 3
            preq = access_log_pb2.GetInclusionProofRequest(sequence=1)
            proof = await stub.GetInclusionProof(
                preq, timeout=5, metadata=sign_transparency_call("GetInclusionProof", preq, _creator(clin), signer)
            )
            assert rfc9162.verify_inclusion(proof.leaf, 1, 3, list(proof.hashes), root)

    run(body())


def test_envelope_result_matches_the_evaluated_result(node: InProcessNode, clin: Enrolled) -> None:
    env, _ = run(_endorse(node, clin, "consent:Check", CHECK_ARGS))
    assert json.loads(envelope_result(env))["decision"] == "deny"


def test_identity_requires_a_certificate() -> None:
    with pytest.raises(ValueError):
        X509Identity("HospitalAMSP", b"not a certificate")
    with pytest.raises(ValueError):
        X509Identity("", b"")


def test_signer_rejects_other_curves() -> None:
    with pytest.raises(ValueError):
        new_private_key_signer(ec.generate_private_key(ec.SECP384R1()))


_ = connect


@pytest.mark.parametrize("offset_s", [-3600, 3600])
def test_a_client_chosen_transaction_time_far_from_the_node_clock_is_refused(
    node: InProcessNode, clin: Enrolled, offset_s: int
) -> None:
    # The contracts record the transaction time (consent recorded_at, access event time): a hospital must not
    # backdate or postdate them by choosing the proposal's timestamp.
    def shifted(p: proposal_pb2.Proposal) -> None:
        header = common_pb2.Header.FromString(p.header)
        ch = common_pb2.ChannelHeader.FromString(header.channel_header)
        ch.timestamp.seconds += offset_s
        header.channel_header = ch.SerializeToString()
        p.header = header.SerializeToString()

    sp, tx_id = signed_proposal(clin, fn="consent:Grant", args=[_grant("pat-0001")], mutate=shifted)
    err = refused(node, "Endorse", endorse_request(sp, tx_id))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "timestamp" in (err.details() or "")


def test_an_org_ca_minting_a_certificate_for_another_orgs_user_is_refused_by_the_contract(
    tmp_path: Path, node: InProcessNode, clin: Enrolled
) -> None:
    # A misbehaving hospital-a admin uses its own CA (valid for HospitalAMSP, so the node accepts the creator)
    # to mint a certificate whose attributes claim a hospital-b clinician. The actor comes from the verified
    # certificate, and the contract refuses attributes of an org that does not own the creator's MSP.
    from ciphercare.consent import canonical
    from ciphercare.ledger.embedded.msp import ATTR_OID, identity_attrs

    ca_dir = tmp_path / "msp" / "HospitalAMSP"
    ca_key = serialization.load_pem_private_key((ca_dir / "ca-key.pem").read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca-cert.pem").read_bytes())
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    impostor = Principal("u-clin-b", "hospital-b", frozenset({"clinician"}), "ehr-b")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hospital-b"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "u-clin-b"),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.UnrecognizedExtension(
                x509.ObjectIdentifier(ATTR_OID), canonical.dumps({"attrs": identity_attrs(impostor)})
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    forged = Enrolled(
        impostor,
        "HospitalAMSP",
        pem,
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    sp, tx_id = signed_proposal(forged, args=["pat-0001", "hospital-b", "TREAT", "Observation", ""])
    err = refused(node, "Evaluate", evaluate_request(sp, tx_id))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "does not belong to the creator's MSP" in (err.details() or "")
