"""The consent decision table as one scripted sequence of transactions, playable on any backend.

Every row of tests/consent/test_consent_decision.py (permit, deny, deny wins, default deny, other org,
data class and purpose not covered, expired, not yet valid, inclusive start, open-ended period, revoked,
revoked old consent beside a new permit, revoked deny, nested deny/permit, deepest provision, nested
constraints, actor mismatch, sibling deny, nested period) becomes a consent on the ledger for its own
pid, and Check / CheckMany then ask about every pid for every (purpose, data class, org, time) of
the table, as every kind of caller. Around it: the contracts' authorization and validation refusals,
reads and their scoping (Get, ListForPatient, History), the access log (Record, Get, ListForPatient,
the erasure event) and the model registry. :func:`play` drives it through a ``Backend`` callback; a
step's tx id and timestamp depend only on its index, so two backends see the very same transactions.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ciphercare.consent import canonical
from ciphercare.ledger.api import Principal

BASE_MS = 1_750_000_000_000  # 2025-06-15T15:06:40Z; step i runs at BASE_MS + i seconds

CLINICIAN_A = Principal("u-clin-a", "hospital-a", frozenset({"clinician"}), "ehr-a")
HOSPITAL_A = Principal("svc-hosp-a", "hospital-a", frozenset({"hospital"}), "sdk-a")
CLINICIAN_B = Principal("u-clin-b", "hospital-b", frozenset({"clinician"}), "ehr-b")
PATIENT_1 = Principal("u-pat-1", "patients", frozenset({"patient"}), "portal", "pat-0001")
PATIENT_2 = Principal("u-pat-2", "patients", frozenset({"patient"}), "portal", "pat-0002")
OFFICER = Principal("u-officer", "regulator", frozenset({"compliance-officer"}), "console")
ADMIN = Principal("u-admin", "ciphercare", frozenset({"admin"}), "console")
NOBODY = Principal("service:ciphercare-gateway", "ciphercare", frozenset(), "ciphercare-server")
PRINCIPALS = (CLINICIAN_A, HOSPITAL_A, CLINICIAN_B, PATIENT_1, PATIENT_2, OFFICER, ADMIN, NOBODY)


@dataclass(frozen=True)
class Step:
    """One transaction of the sequence."""

    index: int
    who: Principal
    submit: bool
    contract: str
    function: str
    args: tuple[str, ...]

    @property
    def nonce(self) -> bytes:
        return hashlib.sha256(f"ciphercare-table-step-{self.index}".encode()).digest()[:24]

    @property
    def ts_ms(self) -> int:
        return BASE_MS + 1000 * self.index


@dataclass(frozen=True)
class Outcome:
    """What a backend answered, in comparable form."""

    tx_id: str
    status: int
    payload: bytes
    message: str
    writes: tuple[tuple[str, bytes | None], ...]
    event: tuple[str, bytes] | None

    @property
    def ok(self) -> bool:
        return 0 < self.status < 400


Backend = Callable[[Step], Outcome]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def as_json(value: Any) -> str:
    return canonical.dumps(value).decode()


def grant_input(pid: str, **overrides: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "pid": pid,
        "grantee_org": "hospital-a",
        "decision": "permit",
        "purposes": ["TREAT"],
        "data_classes": ["Observation", "Condition"],
        "period": {"start": "2025-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
        "provisions": [],
        "document_sha256": sha("consent document " + pid),
        "evidence_sha256": sha("signed form " + pid),
    }
    d.update(overrides)
    return d


def event_input(pid: str | None = "pat-0001", **overrides: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "type": "risk-scoring",
        "subtype": "score",
        "action": "E",
        "outcome": "success",
        "outcome_desc": "",
        "purpose_of_use": "TREAT",
        "source": {"observer": "scoring-service"},
        "entity": {
            "pid": pid,
            "consent_id": None,
            "model_sha256": sha("model"),
            "data_classes": ["Observation"],
            "detail_sha256": None,
        },
    }
    d.update(overrides)
    return d


#: The decision table's consents: pid -> (grant overrides, revoke after granting?).
TABLE: dict[str, tuple[dict[str, Any], bool]] = {
    "t-permit": ({}, False),
    "t-deny": ({"decision": "deny"}, False),
    "t-open-ended": ({"period": {"start": "2025-01-01T00:00:00Z", "end": None}}, False),
    "t-revoked": ({}, True),
    "t-other-org": ({"grantee_org": "hospital-b"}, False),
    "t-nested-deny": ({"provisions": [{"type": "deny", "data_classes": ["Condition"]}]}, False),
    "t-nested-permit": (
        {
            "decision": "deny",
            "purposes": ["TREAT", "HRESCH"],
            "provisions": [{"type": "permit", "purposes": ["TREAT"]}],
        },
        False,
    ),
    "t-deepest": (
        {
            "provisions": [
                {
                    "type": "deny",
                    "data_classes": ["Observation"],
                    "provisions": [
                        {
                            "type": "permit",
                            "purposes": ["TREAT"],
                            "provisions": [
                                {"type": "deny", "actors": ["hospital-a"], "period": {"start": "2025-06-01T00:00:00Z"}}
                            ],
                        }
                    ],
                }
            ]
        },
        False,
    ),
    "t-all-constraints": (
        {"provisions": [{"type": "deny", "purposes": ["TREAT"], "data_classes": ["Condition"]}]},
        False,
    ),
    "t-actor-mismatch": ({"provisions": [{"type": "deny", "actors": ["hospital-b"]}]}, False),
    "t-siblings": (
        {
            "decision": "deny",
            "provisions": [
                {"type": "permit", "purposes": ["TREAT"]},
                {"type": "deny", "data_classes": ["Observation"]},
            ],
        },
        False,
    ),
    "t-nested-period": ({"provisions": [{"type": "deny", "period": {"end": "2025-02-01T00:00:00Z"}}]}, False),
}
#: Pids with several consents: (overrides, revoke?) each, in grant order.
MULTI: dict[str, list[tuple[dict[str, Any], bool]]] = {
    "t-deny-wins": [({}, False), ({"decision": "deny"}, False), ({}, False)],
    "t-revoked-old-new-permit": [({}, True), ({}, False)],
    "t-revoked-deny": [({}, False), ({"decision": "deny"}, True)],
}
NO_CONSENT = "t-none"
TIMES = ("", "2024-12-31T23:59:59Z", "2025-01-01T00:00:00Z", "2025-01-15T00:00:00Z", "2025-05-01T00:00:00Z",
         "2025-12-31T23:59:59Z", "2026-01-01T00:00:00Z", "2099-01-01T00:00:00Z")
QUESTIONS = (("TREAT", "Observation"), ("TREAT", "Condition"), ("HRESCH", "Observation"), ("TREAT", "ImagingStudy"))


class Player:
    """Numbers the steps and records every outcome."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.transcript: list[tuple[Step, Outcome]] = []

    def _run(self, who: Principal, submit: bool, contract: str, fn: str, args: Sequence[str]) -> Outcome:
        step = Step(len(self.transcript), who, submit, contract, fn, tuple(args))
        outcome = self.backend(step)
        self.transcript.append((step, outcome))
        return outcome

    def submit(self, who: Principal, contract: str, fn: str, *args: str) -> Outcome:
        return self._run(who, True, contract, fn, args)

    def evaluate(self, who: Principal, contract: str, fn: str, *args: str) -> Outcome:
        return self._run(who, False, contract, fn, args)

    def grant(self, who: Principal, pid: str, **overrides: Any) -> str:
        """Grant and return the consent id (raises if the grant was refused: the table needs it)."""
        out = self.submit(who, "consent", "Grant", as_json(grant_input(pid, **overrides)))
        if not out.ok:
            raise AssertionError(f"grant for {pid} refused: {out.message}")
        return str(json.loads(out.payload)["id"])


def play(backend: Backend) -> list[tuple[Step, Outcome]]:
    """Run the whole sequence on ``backend``; returns the transcript."""
    p = Player(backend)
    ids: dict[str, list[str]] = {}

    # -- the table's consents (staff with evidence; patients for themselves) --
    for pid, (overrides, revoke) in TABLE.items():
        cid = p.grant(CLINICIAN_A, pid, **overrides)
        ids.setdefault(pid, []).append(cid)
        if revoke:
            p.submit(CLINICIAN_A, "consent", "Revoke", cid, "patient-request")
    for pid, grants in MULTI.items():
        for overrides, revoke in grants:
            cid = p.grant(HOSPITAL_A, pid, **overrides)
            ids.setdefault(pid, []).append(cid)
            if revoke:
                p.submit(HOSPITAL_A, "consent", "Revoke", cid, "superseded")
    own = p.grant(PATIENT_1, "pat-0001", evidence_sha256=None)
    p.grant(PATIENT_1, "pat-0001", grantee_org="hospital-b", purposes=["HRESCH"])
    pids = [*TABLE, *MULTI, NO_CONSENT, "pat-0001"]

    # -- every question of the table, for every pid, at every time --
    for pid in pids:
        for purpose, data_class in QUESTIONS:
            for at in TIMES:
                p.evaluate(OFFICER, "consent", "Check", pid, "hospital-a", purpose, data_class, at)
        p.evaluate(CLINICIAN_B, "consent", "Check", pid, "hospital-b", "TREAT", "Observation", "")
        p.evaluate(CLINICIAN_A, "consent", "Check", pid, "hospital-a", "TREAT", "Observation", "")
    for who, org in ((CLINICIAN_A, "hospital-a"), (OFFICER, "hospital-a"), (CLINICIAN_B, "hospital-b")):
        for at in ("", "2025-01-15T00:00:00Z"):
            p.evaluate(who, "consent", "CheckMany", as_json(pids), org, "TREAT", "Observation", at)
            p.evaluate(who, "consent", "CheckMany", as_json(list(reversed(pids))), org, "TREAT", "Condition", at)
    p.evaluate(PATIENT_1, "consent", "Check", "pat-0001", "hospital-a", "TREAT", "Observation", "")
    p.evaluate(PATIENT_1, "consent", "CheckMany", as_json(["pat-0001"]), "hospital-b", "HRESCH", "Observation", "")

    # -- check refusals: who may ask, what may be asked --
    p.evaluate(CLINICIAN_B, "consent", "Check", "t-permit", "hospital-a", "TREAT", "Observation", "")
    p.evaluate(PATIENT_2, "consent", "Check", "pat-0001", "hospital-a", "TREAT", "Observation", "")
    p.evaluate(NOBODY, "consent", "Check", "pat-0001", "hospital-a", "TREAT", "Observation", "")
    p.evaluate(OFFICER, "consent", "Check", "t-permit", "hospital-a", "FOO", "Observation", "")
    p.evaluate(OFFICER, "consent", "Check", "t-permit", "hospital-a", "John Smith has HIV", "Observation", "")
    p.evaluate(OFFICER, "consent", "Check", "t-permit", "hospital-a", "TREAT", "Blood", "")
    p.evaluate(OFFICER, "consent", "Check", "t-permit", "Hospital A", "TREAT", "Observation", "")
    p.evaluate(OFFICER, "consent", "Check", "x", "hospital-a", "TREAT", "Observation", "")
    p.evaluate(OFFICER, "consent", "Check", "t-permit", "hospital-a", "TREAT", "Observation", "yesterday")
    p.evaluate(OFFICER, "consent", "Check", "t-permit", "hospital-a", "TREAT", "Observation", "2025-01-01T00:00:00")
    for bad in ("not json", "[]", '["t-permit", "t-permit"]', '["t-permit", 7]', '{"pid": "t-permit"}'):
        p.evaluate(OFFICER, "consent", "CheckMany", bad, "hospital-a", "TREAT", "Observation", "")
    p.evaluate(PATIENT_1, "consent", "CheckMany", as_json(["pat-0001", "pat-0002"]), "hospital-a", "TREAT",
               "Observation", "")

    # -- grant refusals: nothing written --
    p.submit(PATIENT_2, "consent", "Grant", as_json(grant_input("pat-0001")))
    p.submit(OFFICER, "consent", "Grant", as_json(grant_input("pat-0001")))
    p.submit(ADMIN, "consent", "Grant", as_json(grant_input("pat-0001")))
    p.submit(NOBODY, "consent", "Grant", as_json(grant_input("pat-0001")))
    p.submit(CLINICIAN_A, "consent", "Grant", as_json(grant_input("pat-0001", evidence_sha256=None)))
    p.submit(CLINICIAN_A, "consent", "Grant", as_json(grant_input("pat-0001", purposes=["FOO"])))
    p.submit(CLINICIAN_A, "consent", "Grant", as_json(grant_input("pat-0001", note="free text")))
    p.submit(CLINICIAN_A, "consent", "Grant", "not json")
    p.submit(CLINICIAN_A, "consent", "Grant", '{"pid": "pat-0001", "pid": "pat-0002"}')
    p.submit(CLINICIAN_A, "consent", "Grant", as_json(grant_input("pat-0001", period={"start": "2026-01-01T00:00:00Z",
                                                                                     "end": "2025-01-01T00:00:00Z"})))

    # -- revoke: authorization, reasons, twice --
    theirs = p.grant(PATIENT_1, "pat-0001", grantee_org="hospital-b", evidence_sha256=None)
    p.submit(PATIENT_2, "consent", "Revoke", theirs, "patient-request")
    p.submit(CLINICIAN_A, "consent", "Revoke", theirs, "care-ended")
    p.submit(OFFICER, "consent", "Revoke", theirs, "legal")
    p.submit(PATIENT_1, "consent", "Revoke", theirs, "I changed my mind")
    p.submit(PATIENT_1, "consent", "Revoke", "cns-" + "0" * 32, "patient-request")
    p.submit(CLINICIAN_B, "consent", "Revoke", theirs, "withdrawn-by-organization")
    p.submit(PATIENT_1, "consent", "Revoke", theirs, "patient-request")

    # -- reads and their scoping --
    revoked = ids["t-revoked"][0]
    for who in PRINCIPALS:
        for cid in (own, theirs, revoked, "cns-" + "f" * 32, "nope"):
            p.evaluate(who, "consent", "Get", cid)
        p.evaluate(who, "consent", "History", revoked)
        p.evaluate(who, "consent", "History", theirs)
        for pid in ("pat-0001", "t-deny-wins", "pat-0002"):
            p.evaluate(who, "consent", "ListForPatient", pid)

    # -- access log --
    scored = p.submit(HOSPITAL_A, "accesslog", "Record", as_json(event_input("pat-0001")))
    p.submit(CLINICIAN_B, "accesslog", "Record", as_json(event_input("pat-0001", purpose_of_use="ETREAT")))
    p.submit(PATIENT_2, "accesslog", "Record",
             as_json(event_input("pat-0001", outcome="denied", outcome_desc="permission-denied")))
    p.submit(NOBODY, "accesslog", "Record", as_json(event_input("pat-0002", outcome="error", outcome_desc="internal")))
    p.submit(PATIENT_1, "accesslog", "Record", as_json(event_input("pat-0001")))
    p.submit(OFFICER, "accesslog", "Record", as_json(event_input("pat-0001")))
    p.submit(HOSPITAL_A, "accesslog", "Record",
             as_json(event_input("pat-0001", agent={"subject": "x", "org": "hospital-b", "roles": [], "client": ""})))
    p.submit(HOSPITAL_A, "accesslog", "Record",
             as_json(event_input("pat-0001", outcome_desc="patient refused, has HIV")))
    erasure: dict[str, Any] = {"type": "110110", "subtype": "delete", "action": "D", "outcome": "success",
               "outcome_desc": "patient-erasure", "purpose_of_use": "PATRQT"}
    erase_entity: dict[str, Any] = {"pid": "pat-0002", "consent_id": None, "model_sha256": None, "data_classes": [],
                    "detail_sha256": None}
    p.submit(CLINICIAN_A, "accesslog", "Record", as_json(event_input(**erasure, entity=erase_entity)))
    p.submit(ADMIN, "accesslog", "Record", as_json(event_input(**erasure, entity=erase_entity)))
    event_id = json.loads(scored.payload)["id"] if scored.ok else "ae-" + "0" * 32
    for who in PRINCIPALS:
        p.evaluate(who, "accesslog", "Get", event_id)
        p.evaluate(who, "accesslog", "ListForPatient", "pat-0001")
        p.evaluate(who, "accesslog", "ListForPatient", "pat-0002")

    # -- model registry --
    model = {"model_sha256": sha("model"), "name": "whas500-xgb", "version": "1.0.0", "n_trees": 100,
             "max_depth": 3, "edge_count": 700}
    p.submit(PATIENT_1, "model", "Deploy", as_json(model))
    p.submit(HOSPITAL_A, "model", "Deploy", as_json(model))
    p.submit(HOSPITAL_A, "model", "Deploy", as_json(model))
    p.submit(HOSPITAL_A, "model", "Deploy", as_json({**model, "n_trees": 0}))
    p.evaluate(OFFICER, "model", "Get", sha("model"))
    p.evaluate(OFFICER, "model", "Get", sha("other model"))

    # -- calls that do not fit the contracts (the dispatcher's own answers) --
    p.evaluate(OFFICER, "consent", "NoSuchFunction")
    p.evaluate(OFFICER, "nosuchcontract", "Get", "x")
    p.evaluate(OFFICER, "consent", "Check", "t-permit")
    p.submit(OFFICER, "consent", "Get", own)  # a read submitted as a transaction still runs
    return p.transcript
