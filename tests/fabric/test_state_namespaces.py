"""The chaincode definitions of fabric-network/ against the state the contracts read of each other.

On a Fabric peer every chaincode definition is its own state namespace: a contract served through
definition X reads and writes X's keys only. The embedded ledger and ``ciphercare ledger serve`` run every
contract in one chaincode, ``ciphercare``, so a read of another contract's keys works there and would find
nothing on a peer if the two contracts were served through different definitions.

A realistic sequence (consent policy, a staff grant the patient confirms, Check and CheckMany, an access
event citing the consent, break-glass declared, checked and reviewed, a batch of access events, a model
deployment, and the reads of each) runs twice on the contracts with the embedded runtime's stub:

* in one namespace, recording which contract wrote each key and which contract read it: every key a
  contract reads must have been written by a contract of the same definition of
  ``chaincode/definitions.env``;
* with each contract in the namespace of the definition that serves it (as a peer would run them): the
  sequence must behave as it does in one namespace (the access event's consent is found, break-glass
  permits).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from testkit.ledger import ClockedReceipt, ClockedWorldState

from ciphercare.consent import canonical
from ciphercare.consent.contracts import new_chaincode
from ciphercare.ledger.api import EndorseError, Principal
from ciphercare.ledger.embedded.log import HistoryRecord

ROOT = Path(__file__).resolve().parents[2]
DEFINITIONS = ROOT / "fabric-network/chaincode/definitions.env"
CONTRACTS = frozenset(new_chaincode()._contracts) - {"org.hyperledger.fabric"}

HOSPITAL_A = Principal("svc-hosp-a", "hospital-a", frozenset({"hospital"}), "sdk-a")
CLINICIAN_A = Principal("u-clin-a", "hospital-a", frozenset({"clinician"}), "ehr-a")
PATIENT_1 = Principal("u-pat-1", "patients", frozenset({"patient"}), "portal", "pat-0001")
OFFICER = Principal("u-officer", "regulator", frozenset({"compliance-officer"}), "console")
ADMIN = Principal("u-admin", "ciphercare", frozenset({"admin"}), "console")
SHA = {name: format(i, "x") * 64 for i, name in enumerate(("document", "evidence", "model", "root", "text"), 1)}


def network_definitions() -> dict[str, list[str]]:
    """definition -> the contracts it serves (CC_DEFINITIONS, CC_CONTRACTS_<definition>), read by bash itself."""
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    script = (f'set -euo pipefail; source {DEFINITIONS!s}; for d in $CC_DEFINITIONS; do v="CC_CONTRACTS_$d"; '
              'printf "%s=%s\\n" "$d" "${!v:-}"; done')
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True, env=env).stdout
    found = {name: contracts.split() for name, _, contracts in (line.partition("=") for line in out.splitlines())}
    # without CC_CONTRACTS_<definition>, a definition named after a contract serves that contract
    return {name: contracts or ([name] if name in CONTRACTS else []) for name, contracts in found.items()}


def serving(definitions: dict[str, list[str]]) -> dict[str, str]:
    """contract -> the definition serving it; every contract exactly once."""
    layout: dict[str, str] = {}
    for name, contracts in definitions.items():
        for contract in contracts:
            assert contract not in layout, f"{contract} is served by {layout[contract]} and {name}"
            layout[contract] = name
    assert set(layout) == CONTRACTS, f"served: {sorted(layout)}; the contracts: {sorted(CONTRACTS)}"
    return layout


def object_type(key: str) -> str:
    return key.split("\x00")[1] if key.startswith("\x00") else key


class NamespacedWorld(ClockedWorldState):
    """The embedded runtime's stub over one state namespace per chaincode definition; reads and writes recorded."""

    def __init__(self, layout: dict[str, str]) -> None:
        super().__init__()
        self.layout = layout
        self.spaces: dict[str, dict[str, bytes]] = {}
        self.histories: dict[str, dict[str, list[HistoryRecord]]] = {}
        self.writer: dict[str, str] = {}  # key -> the contract that wrote it
        self.reads: set[tuple[str, str]] = set()  # (contract:function, key)
        self._running = ""

    def get(self, key: str) -> bytes | None:
        self.reads.add((self._running, key))
        return super().get(key)

    def range(self, start: str, end: str) -> list[tuple[str, bytes]]:
        rows = super().range(start, end)
        self.reads.update((self._running, k) for k, _ in rows)
        return rows

    def history(self, key: str) -> list[HistoryRecord]:
        self.reads.add((self._running, key))
        return super().history(key)

    def _run(self, principal: Principal, contract: str, function: str, args: Sequence[str],
             read_only: bool) -> ClockedReceipt:
        namespace = self.layout[contract]
        self.state = self.spaces.setdefault(namespace, {})
        self._history = self.histories.setdefault(namespace, {})
        self._running = f"{contract}:{function}"
        receipt = super()._run(principal, contract, function, args, read_only)
        if not read_only:
            self.writer.update((key, contract) for key, _ in self.attempted_writes)
        return receipt


def arg(value: Any) -> str:
    return canonical.dumps(value).decode()


def play(world: NamespacedWorld) -> None:
    """The sequence; every step asserts what it does in the one-namespace ledger the tests run."""
    def submit(who: Principal, contract: str, function: str, *args: str) -> dict[str, Any]:
        return dict(json.loads(world.submit(who, contract, function, list(args)).result))

    def evaluate(who: Principal, contract: str, function: str, *args: str) -> Any:
        return json.loads(world.evaluate(who, contract, function, list(args)))

    assert submit(ADMIN, "consent", "SetPolicy", arg({"staff_permit": "confirm"})) == {"staff_permit": "confirm"}
    grant = {"pid": "pat-0001", "grantee_org": "hospital-a", "decision": "permit", "purposes": ["TREAT"],
             "data_classes": ["Observation"], "period": {"start": "2025-01-01T00:00:00Z", "end": None},
             "provisions": [], "document_sha256": SHA["document"], "evidence_sha256": SHA["evidence"]}
    proposed = submit(HOSPITAL_A, "consent", "Grant", arg(grant))
    assert proposed["status"] == "proposed"
    cid = proposed["id"]
    assert submit(PATIENT_1, "consent", "Confirm", cid)["status"] == "active"
    check = evaluate(HOSPITAL_A, "consent", "Check", "pat-0001", "hospital-a", "TREAT", "Observation", "")
    assert check["decision"] == "permit" and check["consent_id"] == cid
    many = evaluate(HOSPITAL_A, "consent", "CheckMany", arg(["pat-0001", "pat-0002"]), "hospital-a", "TREAT",
                    "Observation", "")
    assert [d["decision"] for d in many] == ["permit", "deny"]

    # an access event citing the consent: the access-log contract reads the consent
    event = {"type": "110110", "subtype": "read", "action": "R", "outcome": "success", "outcome_desc": "",
             "purpose_of_use": "TREAT", "source": {"observer": "hospital-a/ehr"},
             "entity": {"pid": "pat-0001", "consent_id": cid, "model_sha256": None,
                        "data_classes": ["Observation"], "detail_sha256": None}}
    recorded = submit(HOSPITAL_A, "accesslog", "Record", arg(event))
    assert recorded["entity"]["consent_id"] == cid, recorded

    # break-glass: consent:Check reads the declaration
    declaration = submit(CLINICIAN_A, "breakglass", "Declare", arg({
        "pid": "pat-0002", "purpose": "ETREAT", "reason_code": "unconscious-patient", "text_sha256": SHA["text"],
        "duration_s": 3600}))
    glass = evaluate(CLINICIAN_A, "consent", "Check", "pat-0002", "hospital-a", "ETREAT", "Observation", "")
    assert (glass["decision"], glass["reason_code"], glass.get("breakglass_id")) == ("permit", "break-glass",
                                                                                 declaration["id"])
    many = evaluate(CLINICIAN_A, "consent", "CheckMany", arg(["pat-0002"]), "hospital-a", "ETREAT", "Observation", "")
    assert many[0]["breakglass_id"] == declaration["id"]
    assert submit(OFFICER, "breakglass", "Review", declaration["id"], "acknowledged", "")["review_status"] == \
        "acknowledged"

    batch = submit(HOSPITAL_A, "accessbatch", "RecordBatch", arg({
        "root": SHA["root"], "count": 2, "outcomes": {"success": 1, "denied": 1}, "observer": "hospital-a/scoring"}))
    deployed = submit(HOSPITAL_A, "model", "Deploy", arg({
        "model_sha256": SHA["model"], "name": "whas500-xgb", "version": "1.0.0", "n_trees": 100, "max_depth": 3,
        "edge_count": 700}))

    # the reads
    assert evaluate(OFFICER, "consent", "Get", cid)["version"] == 2
    assert len(evaluate(PATIENT_1, "consent", "History", cid)) == 2
    assert [c["id"] for c in evaluate(PATIENT_1, "consent", "ListForPatient", "pat-0001")] == [cid]
    assert evaluate(OFFICER, "consent", "GetPolicy") == {"staff_permit": "confirm"}
    assert evaluate(OFFICER, "accesslog", "Get", recorded["id"]) == recorded
    assert [e["id"] for e in evaluate(PATIENT_1, "accesslog", "ListForPatient", "pat-0001")] == [recorded["id"]]
    assert evaluate(OFFICER, "breakglass", "Get", declaration["id"])["version"] == 2
    assert len(evaluate(OFFICER, "breakglass", "ListForReview")) == 1
    assert len(evaluate(OFFICER, "breakglass", "ListActive")) == 1
    assert evaluate(OFFICER, "accessbatch", "Get", batch["id"]) == batch
    assert evaluate(OFFICER, "model", "Get", SHA["model"]) == deployed
    with pytest.raises(EndorseError) as refused:  # a refused write reads, but writes nothing
        world.submit(HOSPITAL_A, "model", "Deploy", [arg({**{k: deployed[k] for k in (
            "model_sha256", "name", "version", "n_trees", "max_depth", "edge_count")}})])
    assert refused.value.code == "ALREADY_EXISTS"


def cross_reads(world: NamespacedWorld) -> set[tuple[str, str, str]]:
    """(writer contract, object type, reader contract:function) for every read of another contract's key."""
    found = set()
    for reader, key in world.reads:
        writer = world.writer.get(key)
        if writer is not None and writer != reader.split(":")[0]:
            found.add((writer, object_type(key), reader))
    return found


def test_the_sequence_runs_in_one_namespace_and_these_are_its_cross_contract_reads() -> None:
    """The state the contracts read of each other (what a definition must keep together)."""
    world = NamespacedWorld(dict.fromkeys(CONTRACTS, "ciphercare"))
    play(world)
    assert {c for _, c in world.reads} and set(world.writer.values()) == CONTRACTS  # every contract wrote
    assert cross_reads(world) == {
        ("consent", "consent", "accesslog:Record"),  # the consent an access event cites
        ("breakglass", "breakglass~pid", "consent:Check"),  # the caller's active declarations for the patient
        ("breakglass", "breakglass", "consent:Check"),
        ("breakglass", "breakglass~pid", "consent:CheckMany"),
        ("breakglass", "breakglass", "consent:CheckMany"),
    }


def test_every_key_a_contract_reads_is_in_the_namespace_of_its_definition() -> None:
    layout = serving(network_definitions())
    world = NamespacedWorld(dict.fromkeys(CONTRACTS, "ciphercare"))
    play(world)
    apart = sorted((w, t, r, layout[w], layout[r.split(":")[0]]) for w, t, r in cross_reads(world)
                   if layout[w] != layout[r.split(":")[0]])
    assert not apart, "\n".join(f"{r} (definition {rd!r}) reads {t!r} keys that {w} writes in definition {wd!r}"
                                for w, t, r, wd, rd in apart)


def test_the_sequence_behaves_the_same_with_the_networks_namespaces() -> None:
    """Each contract in the namespace of the definition serving it, as on a peer: nothing changes."""
    play(NamespacedWorld(serving(network_definitions())))


def test_per_contract_namespaces_break_the_sequence() -> None:
    """The check above can fail: one definition per contract (the network's earlier layout) does."""
    with pytest.raises(EndorseError) as refused:
        play(NamespacedWorld(serving({c: [c] for c in CONTRACTS})))
    assert refused.value.code == "FAILED_PRECONDITION" and "does not exist" in refused.value.message
    # consent and access log together, break-glass apart: its declaration never permits
    apart = {"ciphercare": ["consent", "accesslog", "model", "accessbatch"], "breakglass": ["breakglass"]}
    with pytest.raises(AssertionError, match="'deny'"):
        play(NamespacedWorld(serving(apart)))
