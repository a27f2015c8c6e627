"""The consent decision table as a client-neutral plan, run by the Python client and by the official Node client.

A plan is JSON: ``principals`` (name -> MSP id, certificate and key PEM, enrolled by the org's CA as a
ciphercare node does) and ``steps``: ``{"op": "submit"|"evaluate", "who", "contract", "fn", "args"}``
where an argument may be ``{"$ref": [step_index, field]}``: that field of an earlier step's JSON
result (a consent id). Outcomes are ``{"ok": true, "result": text}`` or ``{"ok": false, "code":
<gRPC status number>, "details": [per-peer messages]}``; :func:`normalise` replaces what differs from
run to run by nature (consent ids derive from tx ids; record times are tx times) with placeholders.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from ciphercare.consent import canonical
from ciphercare.ledger.api import Principal

PRINCIPALS: dict[str, Principal] = {
    "clinician_a": Principal("u-clin-a", "hospital-a", frozenset({"clinician"}), "ehr-a"),
    "hospital_a": Principal("svc-hosp-a", "hospital-a", frozenset({"hospital"}), "sdk-a"),
    "clinician_b": Principal("u-clin-b", "hospital-b", frozenset({"clinician"}), "ehr-b"),
    "patient_1": Principal("u-pat-1", "patients", frozenset({"patient"}), "portal", "pat-1001"),
    "officer": Principal("u-officer", "regulator", frozenset({"compliance-officer"}), "console"),
}

AT = "2025-06-01T12:00:00Z"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _grant(pid: str, **overrides: Any) -> str:
    d: dict[str, Any] = {
        "pid": pid,
        "grantee_org": "hospital-a",
        "decision": "permit",
        "purposes": ["TREAT"],
        "data_classes": ["Observation", "Condition"],
        "period": {"start": "2025-01-01T00:00:00Z", "end": "2030-01-01T00:00:00Z"},
        "provisions": [],
        "document_sha256": _sha("doc"),
        "evidence_sha256": _sha("signed form"),
    }
    d.update(overrides)
    return canonical.dumps(d).decode()


class _Plan:
    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []

    def submit(self, who: str, contract: str, fn: str, *args: Any) -> int:
        self.steps.append({"op": "submit", "who": who, "contract": contract, "fn": fn, "args": list(args)})
        return len(self.steps) - 1

    def evaluate(self, who: str, contract: str, fn: str, *args: Any) -> int:
        self.steps.append({"op": "evaluate", "who": who, "contract": contract, "fn": fn, "args": list(args)})
        return len(self.steps) - 1

    def grant(self, pid: str, who: str = "clinician_a", **overrides: Any) -> int:
        return self.submit(who, "consent", "Grant", _grant(pid, **overrides))

    def check(
        self,
        pid: str,
        who: str = "clinician_a",
        purpose: str = "TREAT",
        data_class: str = "Observation",
        org: str = "hospital-a",
        at: str = AT,
    ) -> int:
        return self.evaluate(who, "consent", "Check", pid, org, purpose, data_class, at)


def build_steps() -> list[dict[str, Any]]:
    """Every row of the decision table (consent/decision.py), plus the refusals around it."""
    p = _Plan()
    # permit / default deny / not covered
    p.grant("pat-0001")
    p.check("pat-0001")
    p.check("pat-0001", purpose="HRESCH")  # purpose not covered
    p.check("pat-0001", data_class="MedicationRequest")  # data class not covered
    p.check("pat-0001", who="clinician_b", org="hospital-b")  # other org not covered
    p.check("pat-0002")  # no consents: default deny
    # deny, and deny overrides permit regardless of order
    p.grant("pat-0003", decision="deny")
    p.check("pat-0003")
    p.grant("pat-0004")
    p.grant("pat-0004", decision="deny")
    p.check("pat-0004")
    # periods: expired, not yet valid, start inclusive, open-ended
    p.grant("pat-0005", period={"start": "2024-01-01T00:00:00Z", "end": "2025-01-01T00:00:00Z"})
    p.check("pat-0005")
    p.grant("pat-0006", period={"start": "2026-01-01T00:00:00Z"})
    p.check("pat-0006")
    p.check("pat-0006", at="2026-01-01T00:00:00Z")
    # revocation: revoked says revoked; a revoked deny no longer denies; revoke twice is refused
    g = p.grant("pat-0007")
    p.submit("clinician_a", "consent", "Revoke", {"$ref": [g, "id"]}, "withdrawn-by-organization")
    p.check("pat-0007")
    p.grant("pat-0008")
    d = p.grant("pat-0008", decision="deny")
    p.check("pat-0008")
    p.submit("clinician_a", "consent", "Revoke", {"$ref": [d, "id"]}, "withdrawn-by-organization")
    p.check("pat-0008")
    p.submit("clinician_a", "consent", "Revoke", {"$ref": [d, "id"]}, "withdrawn-by-organization")
    # nested provisions: deny inside permit, permit inside deny, deepest applying decides, siblings
    p.grant("pat-0009", provisions=[{"type": "deny", "data_classes": ["Condition"]}])
    p.check("pat-0009", data_class="Condition")
    p.check("pat-0009", data_class="Observation")
    p.grant(
        "pat-0010",
        decision="deny",
        purposes=["TREAT", "HRESCH"],
        provisions=[{"type": "permit", "purposes": ["TREAT"]}],
    )
    p.check("pat-0010", purpose="TREAT")
    p.check("pat-0010", purpose="HRESCH")
    p.grant(
        "pat-0011",
        provisions=[
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
        ],
    )
    p.check("pat-0011", at="2025-05-01T00:00:00Z")
    p.check("pat-0011")
    p.grant(
        "pat-0012",
        decision="deny",
        provisions=[{"type": "permit", "purposes": ["TREAT"]}, {"type": "deny", "data_classes": ["Observation"]}],
    )
    p.check("pat-0012")
    p.grant("pat-0013", provisions=[{"type": "deny", "actors": ["hospital-b"]}])
    p.check("pat-0013")
    # CheckMany, oversight, patient for themselves
    p.evaluate(
        "clinician_a",
        "consent",
        "CheckMany",
        json.dumps(["pat-0001", "pat-0003", "pat-0009"]),
        "hospital-a",
        "TREAT",
        "Condition",
        AT,
    )
    p.check("pat-0001", who="officer")
    p.grant("pat-1001", who="patient_1", evidence_sha256=None)
    p.check("pat-1001", who="patient_1")
    p.evaluate("clinician_a", "consent", "Get", {"$ref": [g, "id"]})
    # refusals: bad purpose, bad data class, a patient for someone else, other org's check,
    # staff without evidence, unknown consent, unknown function
    p.check("pat-0001", purpose="BOGUS")
    p.check("pat-0001", data_class="Nope")
    p.grant("pat-0001", who="patient_1", evidence_sha256=None)
    p.check("pat-0001", who="clinician_b")
    p.grant("pat-0014", evidence_sha256=None)
    p.evaluate("clinician_a", "consent", "Get", "cns-" + "0" * 32)
    p.evaluate("clinician_a", "consent", "NoSuchFunction")
    return p.steps


_CONSENT_ID = re.compile(r"cns-[0-9a-f]{32}")
_TIMES = re.compile(r'"(recorded_at|revoked_at)":"[^"]*"')
_REVOKED_AT = re.compile(r"was revoked at [0-9T:.Z-]+")


def normalise(outcomes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Replace consent ids (in order of first appearance) and record times with placeholders."""
    ids: dict[str, str] = {}

    def sub(text: str) -> str:
        text = _CONSENT_ID.sub(lambda m: ids.setdefault(m.group(0), f"<consent-{len(ids)}>"), text)
        text = _TIMES.sub(lambda m: f'"{m.group(1)}":"<time>"', text)
        return _REVOKED_AT.sub("was revoked at <time>", text)

    out = []
    for o in outcomes:
        if o["ok"]:
            out.append({"ok": True, "result": sub(o["result"])})
        else:
            out.append({"ok": False, "code": o["code"], "details": [sub(d) for d in o["details"]]})
    return out
