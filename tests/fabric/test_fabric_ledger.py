"""``FabricLedger``: the ledger interface over the Gateway client, against a gateway node on loopback.

Services depend on the interface only; these tests drive it the way the servicers do and check
that reads coming back from the node are verified (signed checkpoints, inclusion proofs).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from testkit import rfc9162
from testkit.fabric.gateway import InProcessNode, in_process_node
from testkit.fabric.gateway_plan import _grant

from ciphercare.ledger.api import EndorseError, LedgerError, Principal, Receipt
from ciphercare.ledger.embedded.msp import EmbeddedMSP
from ciphercare.ledger.fabric.ledger import FabricLedger

CLIN = Principal("u-clin-a", "hospital-a", frozenset({"clinician"}), "ehr-a")
CLIN_B = Principal("u-clin-b", "hospital-b", frozenset({"clinician"}), "ehr-b")
PATIENT = Principal("u-pat-1", "patients", frozenset({"patient"}), "portal", "pat-0001")
SERVICE = Principal("service:ciphercare-gateway", "hospital-a", frozenset(), "ciphercare-server")


@pytest.fixture
def node(tmp_path: Path) -> Any:
    with in_process_node(tmp_path) as n:
        yield n


@pytest.fixture
def ledger(tmp_path: Path, node: InProcessNode) -> Any:
    led = FabricLedger(node.target, EmbeddedMSP(tmp_path / "msp"), service_principal=SERVICE)
    try:
        yield led
    finally:
        led.close()


def test_submit_returns_a_receipt_whose_proof_verifies(ledger: FabricLedger, node: InProcessNode) -> None:
    receipt = ledger.submit(CLIN, "consent", "Grant", [_grant("pat-0001")])
    assert isinstance(receipt, Receipt) and receipt.seq == 0 and len(receipt.tx_id) == 64
    assert json.loads(receipt.result)["pid"] == "pat-0001"
    assert [e.name for e in receipt.events] == ["ConsentGranted"]
    assert receipt.checkpoint.size == 1
    entry = ledger.entry(0)
    assert (entry.tx_id, entry.contract, entry.function, entry.creator_msp) == (
        receipt.tx_id,
        "consent",
        "Grant",
        "HospitalAMSP",
    )
    proof = ledger.inclusion_proof(0, 1)
    assert rfc9162.verify_inclusion(entry.leaf, 0, 1, list(proof.hashes), receipt.checkpoint.root_hash)
    assert node.ledger.entry(0).leaf == entry.leaf


def test_evaluate_and_contract_refusals_keep_their_codes(ledger: FabricLedger) -> None:
    proposed = json.loads(ledger.submit(CLIN, "consent", "Grant", [_grant("pat-0001")]).result)
    ledger.submit(PATIENT, "consent", "Confirm", [proposed["id"]])  # a staff PERMIT is in force once confirmed
    decision = json.loads(
        ledger.evaluate(
            CLIN, "consent", "Check", ["pat-0001", "hospital-a", "TREAT", "Observation", "2025-06-01T00:00:00Z"]
        )
    )
    assert decision["decision"] == "permit"
    with pytest.raises(EndorseError) as err:
        ledger.evaluate(CLIN_B, "consent", "Check", ["pat-0001", "hospital-a", "TREAT", "Observation", ""])
    assert err.value.code == "PERMISSION_DENIED" and "own org" in err.value.message
    with pytest.raises(EndorseError) as err:
        ledger.submit(CLIN, "consent", "Revoke", ["cns-" + "0" * 32, "patient-request"])
    assert err.value.code == "NOT_FOUND" and len(err.value.tx_id) == 64
    assert ledger.size() == 2


def test_events_replay_then_follow(ledger: FabricLedger) -> None:
    receipts = [ledger.submit(CLIN, "consent", "Grant", [_grant(f"pat-{i:04d}")]) for i in range(3)]
    stream = ledger.events(1, frozenset({"ConsentGranted"}))
    try:
        got = [next(stream), next(stream)]
        assert [(e.seq, e.tx_id) for e in got] == [(r.seq, r.tx_id) for r in receipts[1:]]
        later = ledger.submit(CLIN, "consent", "Grant", [_grant("pat-0099")])
        ev = next(stream)
        assert (ev.seq, ev.tx_id, ev.name) == (3, later.tx_id, "ConsentGranted")
        assert ev.timestamp_ms == ledger.entry(3).timestamp_ms
    finally:
        stream.close()


def test_a_node_enrols_only_its_own_organisation(tmp_path: Path, node: InProcessNode) -> None:
    EmbeddedMSP(tmp_path / "msp").enrol(CLIN)  # HospitalAMSP's CA exists
    led = FabricLedger(
        node.target,
        EmbeddedMSP(tmp_path / "msp", create_missing=False),
        service_principal=SERVICE,
        msp_id="HospitalAMSP",
    )
    try:
        with pytest.raises(EndorseError) as err:
            led.evaluate(CLIN_B, "consent", "Check", ["pat-0001", "hospital-b", "TREAT", "Observation", ""])
        assert err.value.code == "PERMISSION_DENIED" and "HospitalAMSP" in err.value.message
        assert led.size() == 0
    finally:
        led.close()


def test_a_pinned_checkpoint_key_refuses_a_node_signing_with_another(tmp_path: Path, node: InProcessNode) -> None:
    other_vkey = "other+00000000+" + "A" * 43 + "="
    with pytest.raises(ValueError):
        FabricLedger(node.target, EmbeddedMSP(tmp_path / "msp"), service_principal=SERVICE, checkpoint_vkey=other_vkey)
    from ciphercare.ledger.transparency.checkpoint import CheckpointError, CheckpointSigner

    foreign = CheckpointSigner(tmp_path / "foreign.pem", "ciphercare.test/ledger").vkey
    led = FabricLedger(node.target, EmbeddedMSP(tmp_path / "msp"), service_principal=SERVICE, checkpoint_vkey=foreign)
    try:
        with pytest.raises(CheckpointError):
            led.checkpoint()
        with pytest.raises(CheckpointError):  # a receipt is never built on a checkpoint that does not verify
            led.submit(CLIN, "consent", "Grant", [_grant("pat-0001")])
    finally:
        led.close()


def test_closed_ledger_refuses_calls(ledger: FabricLedger) -> None:
    ledger.close()
    with pytest.raises(LedgerError):
        ledger.evaluate(CLIN, "consent", "Check", [])


def test_contract_handles_over_the_fabric_transport(ledger: FabricLedger) -> None:
    import asyncio

    from ciphercare.ledger.fabric.transport import FabricTransport
    from ciphercare.ledger.gateway import GatewayOptions
    from ciphercare.services.platform.gateway import ContractHandles, evaluate_json

    handles = ContractHandles(FabricTransport(ledger), GatewayOptions())

    async def body() -> None:
        receipt = await handles.consent(CLIN).submit("Grant", _grant("pat-0001"))
        assert receipt.seq == 0 and receipt.checkpoint.size == 1
        proposed = json.loads(receipt.result)
        await handles.consent(PATIENT).submit("Confirm", proposed["id"])  # staff PERMITs need the patient
        decision = await evaluate_json(
            handles.consent(CLIN), "Check", "pat-0001", "hospital-a", "TREAT", "Observation", "2025-06-01T00:00:00Z"
        )
        assert decision["decision"] == "permit"
        with pytest.raises(EndorseError) as err:  # refused at the endorse stage, with its code and tx id
            await handles.consent(CLIN).submit_async("Revoke", "cns-" + "0" * 32, "patient-request")
        assert err.value.code == "NOT_FOUND" and len(err.value.tx_id) == 64
        with pytest.raises(EndorseError) as err:  # a channel the node has not joined
            await (
                handles.contract(CLIN, "consent")
                .network.gateway.network("elsewhere")
                .contract("consent")
                .evaluate("Check", "pat-0001", "hospital-a", "TREAT", "Observation", "")
            )
        assert err.value.code == "NOT_FOUND"

    asyncio.run(body())
    log = handles.transparency
    assert log.size() == 2 and [e.function for e in log.entries(0, 5)] == ["Grant", "Confirm"]
    assert log.verifier_key() == ledger.public_key_vkey()


def test_an_org_node_from_settings_enrols_its_users_and_reads_the_log_as_its_org(
    tmp_path: Path, node: InProcessNode
) -> None:
    from ciphercare.ledger.fabric.ledger import open_fabric_ledger
    from ciphercare.services.platform.settings import load_settings

    EmbeddedMSP(tmp_path / "msp").enrol(CLIN)  # the consortium set up HospitalAMSP's CA; this node holds it
    settings = load_settings(
        data_dir=tmp_path / "svc",
        ledger_backend="fabric",
        ledger_endpoint=node.target,
        ledger_msp_dir=tmp_path / "msp",
        ledger_org="hospital-a",
    )
    service = Principal("service:ciphercare-gateway", "ciphercare", frozenset(), "ciphercare-server")
    led = open_fabric_ledger(settings, service)
    try:
        receipt = led.submit(CLIN, "consent", "Grant", [_grant("pat-0001")])
        assert led.entry(receipt.seq).creator_msp == "HospitalAMSP"
        with pytest.raises(EndorseError):  # a patient does not transact through a hospital's node
            led.evaluate(
                Principal("u-pat", "patients", frozenset({"patient"}), "portal", "pat-0001"),
                "consent",
                "ListForPatient",
                ["pat-0001"],
            )
        assert not (tmp_path / "msp" / "PatientsMSP").exists()  # and no CA was invented for it
    finally:
        led.close()
