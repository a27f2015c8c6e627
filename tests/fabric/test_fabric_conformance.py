"""The official clients against ``ciphercare ledger serve``: Node (``@hyperledger/fabric-gateway`` 1.12 from
npm) and Go (``github.com/hyperledger/fabric-gateway`` v1.7.0), two independent implementations.

* The whole consent decision table gives identical outcomes through each official client and through
  ciphercare's Python client (each against its own fresh node process).
* Transactions built by the clients, captured at the node, decode to identical protos field by
  field except nonce, timestamp and signatures (and what derives from them: tx id, creator
  certificate, proposal hash), and every signature verifies.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from fabric_protos.common import common_pb2
from fabric_protos.gateway import gateway_pb2
from fabric_protos.msp import identities_pb2
from fabric_protos.peer import chaincode_pb2, proposal_pb2, proposal_response_pb2, transaction_pb2
from google.protobuf.json_format import MessageToDict
from testkit.fabric.gateway import (
    in_process_node,
    make_plan,
    require_go_client,
    require_node,
    run_plan_go,
    run_plan_node,
    run_plan_python,
    serve_process,
)
from testkit.fabric.gateway_plan import AT, PRINCIPALS, build_steps, normalise

from ciphercare.ledger.fabric.proposal import transaction_id
from ciphercare.ledger.fabric.signer import verify


def _strip(outcomes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in o.items() if k != "error"} for o in outcomes]


def test_decision_table_identical_through_node_and_python_clients(tmp_path: Path) -> None:
    require_node()
    steps = build_steps()
    with serve_process(tmp_path / "py") as target:
        plan = make_plan(tmp_path / "py" / "msp", steps, PRINCIPALS)
        python = asyncio.run(run_plan_python(plan, target))
        committed = sum(1 for st, o in zip(steps, python, strict=True) if st["op"] == "submit" and o["ok"])
        py_events = asyncio.run(_python_events(plan, target, committed))
    with serve_process(tmp_path / "node") as target:
        plan = make_plan(tmp_path / "node" / "msp", steps, PRINCIPALS)
        plan["events"] = {"start_block": 0, "count": committed}
        report = run_plan_node(plan, target, tmp_path)
        node = report["outcomes"]
    assert len(python) == len(node) == len(steps)
    # Chaincode events from block 0 through both clients' checkpointing readers: same blocks, same names.
    assert [(e["block"], e["name"]) for e in report["events"]] == [(b, n) for b, _, n in py_events]
    assert [b for b, _, _ in py_events] == list(range(committed))
    a, b = normalise(python), normalise(_strip(node))
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        assert x == y, f"step {i} {steps[i]['fn']}: python {x} != node {y}"
    # The table really was exercised: permits, denies and refusals all occur.
    decisions = [json.loads(o["result"]).get("decision") for o in python if o["ok"] and o["result"].startswith("{")]
    assert {"permit", "deny"} <= set(decisions)
    assert {o["code"] for o in python if not o["ok"]} == {3, 5, 7, 9}  # INVALID_ARGUMENT NOT_FOUND PERM.. FAILED_PREC..


def test_decision_table_identical_through_go_and_python_clients(tmp_path: Path) -> None:
    require_go_client()
    steps = build_steps()
    with serve_process(tmp_path / "py") as target:
        python = asyncio.run(run_plan_python(make_plan(tmp_path / "py" / "msp", steps, PRINCIPALS), target))
    with serve_process(tmp_path / "go") as target:
        go = run_plan_go(make_plan(tmp_path / "go" / "msp", steps, PRINCIPALS), target, tmp_path)["outcomes"]
    assert len(python) == len(go) == len(steps)
    for i, (x, y) in enumerate(zip(normalise(python), normalise(go), strict=True)):
        assert x == y, f"step {i} {steps[i]['fn']}: python {x} != go {y}"


async def _python_events(plan: dict[str, Any], target: str, count: int) -> list[tuple[int, str, str]]:
    from cryptography.hazmat.primitives import serialization

    from ciphercare.ledger.fabric import X509Identity, connect, new_private_key_signer
    from ciphercare.ledger.fabric.network import Checkpointer

    p = plan["principals"]["officer"]
    key = serialization.load_pem_private_key(p["key_pem"].encode(), None)
    gw = connect(X509Identity(p["msp_id"], p["cert_pem"].encode()), new_private_key_signer(key), target=target)  # type: ignore[arg-type]
    checkpoint = Checkpointer()
    out: list[tuple[int, str, str]] = []
    try:
        async for ev in gw.network(plan["channel"]).chaincode_events(
            plan["chaincode"], start_block=0, checkpoint=checkpoint
        ):
            out.append((ev.block_number, ev.transaction_id, ev.event_name))
            checkpoint.checkpoint_chaincode_event(ev)
            if len(out) == count:
                break
    finally:
        await gw.close()
    return out


def _decode_proposal(signed: proposal_pb2.SignedProposal) -> dict[str, Any]:
    prop = proposal_pb2.Proposal.FromString(signed.proposal_bytes)
    header = common_pb2.Header.FromString(prop.header)
    ch = common_pb2.ChannelHeader.FromString(header.channel_header)
    sh = common_pb2.SignatureHeader.FromString(header.signature_header)
    ext = proposal_pb2.ChaincodeHeaderExtension.FromString(ch.extension)
    cpp = proposal_pb2.ChaincodeProposalPayload.FromString(prop.payload)
    spec = chaincode_pb2.ChaincodeInvocationSpec.FromString(cpp.input)
    creator = identities_pb2.SerializedIdentity.FromString(sh.creator)
    assert ch.tx_id == transaction_id(sh.nonce, sh.creator)
    assert len(sh.nonce) == 24
    cert = x509.load_pem_x509_certificate(creator.id_bytes)
    verify(cert.public_key(), signed.proposal_bytes, signed.signature)  # type: ignore[arg-type]
    ch_d = MessageToDict(ch, preserving_proto_field_name=True)
    for varying in ("tx_id", "timestamp", "extension"):
        ch_d.pop(varying, None)
    return {
        "proposal_fields": sorted(f.name for f, _ in prop.ListFields()),
        "header_fields": sorted(f.name for f, _ in header.ListFields()),
        "channel_header": ch_d,
        "channel_header_fields": sorted(f.name for f, _ in ch.ListFields()),
        "chaincode_header_extension": MessageToDict(ext),
        "signature_header_fields": sorted(f.name for f, _ in sh.ListFields()),
        "creator_msp": creator.mspid,
        "creator_fields": sorted(f.name for f, _ in creator.ListFields()),
        "payload": {
            "input": MessageToDict(spec),
            "transient": dict(cpp.TransientMap),
            "fields": sorted(f.name for f, _ in cpp.ListFields()),
        },
    }


def _decode_envelope(env: common_pb2.Envelope) -> dict[str, Any]:
    payload = common_pb2.Payload.FromString(env.payload)
    ch = common_pb2.ChannelHeader.FromString(payload.header.channel_header)
    sh = common_pb2.SignatureHeader.FromString(payload.header.signature_header)
    creator = identities_pb2.SerializedIdentity.FromString(sh.creator)
    cert = x509.load_pem_x509_certificate(creator.id_bytes)
    verify(cert.public_key(), env.payload, env.signature)  # type: ignore[arg-type]
    tx = transaction_pb2.Transaction.FromString(payload.data)
    cap = transaction_pb2.ChaincodeActionPayload.FromString(tx.actions[0].payload)
    prp = proposal_response_pb2.ProposalResponsePayload.FromString(cap.action.proposal_response_payload)
    action = proposal_pb2.ChaincodeAction.FromString(prp.extension)
    for e in cap.action.endorsements:
        endorser = identities_pb2.SerializedIdentity.FromString(e.endorser)
        ecert = x509.load_pem_x509_certificate(endorser.id_bytes)
        verify(ecert.public_key(), cap.action.proposal_response_payload + e.endorser, e.signature)  # type: ignore[arg-type]
    spec = chaincode_pb2.ChaincodeInvocationSpec.FromString(
        proposal_pb2.ChaincodeProposalPayload.FromString(cap.chaincode_proposal_payload).input
    )
    ch_d = MessageToDict(ch, preserving_proto_field_name=True)
    for varying in ("tx_id", "timestamp", "extension"):
        ch_d.pop(varying, None)
    response = MessageToDict(action.response)
    response.pop("payload", None)  # holds the consent id, derived from the tx id
    return {
        "envelope_fields": sorted(f.name for f, _ in env.ListFields()),
        "channel_header": ch_d,
        "creator_msp": creator.mspid,
        "actions": len(tx.actions),
        "action_header_is_signature_header": tx.actions[0].header == payload.header.signature_header,
        "invocation": MessageToDict(spec),
        "endorsements": len(cap.action.endorsements),
        "response": response,
        "chaincode_id": MessageToDict(action.chaincode_id),
    }


def _captures(captured: list[tuple[str, Any]], method: str) -> list[Any]:
    return [r for m, r in captured if m == method]


@pytest.mark.parametrize("official", ["node", "go"])
def test_transactions_from_the_official_and_python_clients_decode_identically(tmp_path: Path, official: str) -> None:
    run_official = run_plan_node if official == "node" else run_plan_go
    require_node() if official == "node" else require_go_client()
    grant_args = [json.loads(build_steps()[0]["args"][0])]
    steps = [
        {
            "op": "evaluate",
            "who": "clinician_a",
            "contract": "consent",
            "fn": "Check",
            "args": ["pat-0001", "hospital-a", "TREAT", "Observation", AT],
        },
        {
            "op": "submit",
            "who": "clinician_a",
            "contract": "consent",
            "fn": "Grant",
            "args": [json.dumps(grant_args[0], separators=(",", ":"), sort_keys=True)],
        },
    ]
    with in_process_node(tmp_path) as node:
        plan = make_plan(tmp_path / "msp", steps, {"clinician_a": PRINCIPALS["clinician_a"]})
        python = asyncio.run(run_plan_python(plan, node.target))
        py_captured = list(node.captured)
        node.captured.clear()
        js = run_official(plan, node.target, tmp_path)["outcomes"]
        js_captured = list(node.captured)
    assert all(o["ok"] for o in python) and all(o["ok"] for o in js), (python, js)

    for method in ("Evaluate", "Endorse"):
        (py_req,), (js_req,) = _captures(py_captured, method), _captures(js_captured, method)
        assert py_req.channel_id == js_req.channel_id == "ciphercare"
        assert len(py_req.transaction_id) == len(js_req.transaction_id) == 64
        ours, theirs = _decode_proposal(py_req.proposed_transaction), _decode_proposal(js_req.proposed_transaction)
        assert ours["payload"]["input"]["chaincodeSpec"]["type"] == "NODE"  # as the Node client sets it
        if official == "go":
            # The two official clients differ here: Go leaves ChaincodeSpec.type unset (UNDEFINED), Node
            # says NODE; peers ignore it for invocations. Everything else must match.
            assert "type" not in theirs["payload"]["input"]["chaincodeSpec"]
            theirs["payload"]["input"]["chaincodeSpec"]["type"] = "NODE"
        assert ours == theirs
        req_fields = {f.name for f, _ in py_req.ListFields()}
        assert req_fields == {f.name for f, _ in js_req.ListFields()}

    (py_sub,), (js_sub,) = _captures(py_captured, "Submit"), _captures(js_captured, "Submit")
    ours_env, theirs_env = _decode_envelope(py_sub.prepared_transaction), _decode_envelope(js_sub.prepared_transaction)
    if official == "go":  # the same ChaincodeSpec.type difference, carried into the transaction
        assert "type" not in theirs_env["invocation"]["chaincodeSpec"]
        theirs_env["invocation"]["chaincodeSpec"]["type"] = "NODE"
    assert ours_env == theirs_env

    py_cs, js_cs = _captures(py_captured, "CommitStatus"), _captures(js_captured, "CommitStatus")
    assert py_cs and js_cs
    for signed, sub in ((py_cs[0], py_sub), (js_cs[0], js_sub)):
        req = gateway_pb2.CommitStatusRequest.FromString(signed.request)
        assert req.transaction_id == sub.transaction_id and req.channel_id == "ciphercare"
        creator = identities_pb2.SerializedIdentity.FromString(req.identity)
        cert = x509.load_pem_x509_certificate(creator.id_bytes)
        verify(cert.public_key(), signed.request, signed.signature)  # type: ignore[arg-type]
