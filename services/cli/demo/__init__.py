"""``ciphercare demo``: a scripted scenario against running services, printed as a readable story.

grant -> check (permit) -> record accesses -> check for another organisation
(deny) -> revoke -> check (deny) -> a refused access logged -> compliance
search -> every proof verified on the client against signed checkpoints.
"""

from __future__ import annotations

import secrets
import sys
from datetime import UTC, datetime, timedelta

import grpc

from ciphercare.sdk.client import CiphercareClient, ProofError
from ciphercare.services.identity.devissuer import DevIssuer
from ciphercare.services.platform.settings import Settings
from ciphercare.v1 import access_log_pb2, common_pb2, consent_pb2

DECISION = {consent_pb2.CONSENT_DECISION_PERMIT: "PERMIT", consent_pb2.CONSENT_DECISION_DENY: "DENY"}
OUTCOME = {1: "success", 2: "denied", 3: "error"}


def _ts(moment: datetime):  # type: ignore[no-untyped-def]
    from google.protobuf.timestamp_pb2 import Timestamp

    ts = Timestamp()
    ts.FromDatetime(moment)
    return ts


def _encrypted_scoring_round(target: str, issuer: DevIssuer, step, settings: Settings,  # type: ignore[no-untyped-def]
                             vkey: str | None = None) -> bool:
    """One consented and one refused patient through encrypted risk scoring (services/cli/demo/scoring.py)."""
    from ciphercare.sdk.scoring import ScoringError
    from ciphercare.services.cli.demo.scoring import scoring_round

    try:
        scoring_round(target, issuer, step, deadline_s=settings.client_deadline_s, vkey=vkey)
    except ScoringError as exc:
        print(f"ciphercare demo: encrypted scoring failed: {exc}", file=sys.stderr)
        return False
    return True


def run_demo(settings: Settings, target: str) -> int:
    issuer = DevIssuer.from_settings(settings)
    pid = f"pt-demo-{secrets.randbelow(10**8):08d}"
    tokens = {
        "patient": issuer.issue(subject=f"patient-{pid}", roles=["patient"], org="", pid=pid),
        "hospital-a": issuer.issue(subject="svc-hospital-a-ehr", roles=["hospital"], org="hospital-a",
                                   client_id="hospital-a"),
        "hospital-b": issuer.issue(subject="svc-hospital-b-ehr", roles=["hospital"], org="hospital-b",
                                   client_id="hospital-b"),
        "compliance": issuer.issue(subject="officer-1", roles=["compliance-officer"], org="regulator"),
    }
    clients = {name: CiphercareClient.connect(target, token, deadline_s=settings.client_deadline_s)
               for name, token in tokens.items()}
    steps: list[tuple[str, str]] = []

    def step(label: str, outcome: str) -> None:
        steps.append((label, outcome))
        print(f"  {len(steps):>2}. {label:<62} {outcome}")

    try:
        print(f"ciphercare demo against {target} — patient pseudonym {pid}")
        # Every write receipt is verified against one key. A hospital pins the key its operator gives it
        # (`ciphercare receipt vkey`); the demo, which may run against any target, trusts the service's key
        # once, says so once, and pins it for every client it makes.
        vkey = clients["compliance"].call(clients["compliance"].access_log.GetCheckpoint,
                                          access_log_pb2.GetCheckpointRequest()).verifier_key
        for c in clients.values():
            c.vkey = vkey
        print(f"checkpoint key trusted on first use: {vkey} (pin the operator's key in production)\n")
        compliance = clients["compliance"]
        # issue 15: the demo patients' portal comes alive (consents, history, an emergency access)
        from ciphercare.services.cli.demo.patients import seed_demo_patients

        seed_demo_patients(target, issuer, settings.client_deadline_s, step, vkey=vkey)
        verifier, start = compliance.verifier()
        start_size = start.checkpoint.tree_size
        step("compliance officer reads the signed checkpoint", f"tree size {start_size}, signature OK")

        now = datetime.now(UTC)
        grant = clients["patient"].grant(consent_pb2.GrantRequest(
            pid=pid, grantee_organization="hospital-a", decision=consent_pb2.CONSENT_DECISION_PERMIT,
            purposes=["TREAT", "ETREAT"], data_classes=["Observation", "Condition"],
            period=common_pb2.Period(start=_ts(now - timedelta(minutes=1)), end=_ts(now + timedelta(days=365))),
            provisions=[consent_pb2.ConsentProvision(type=consent_pb2.CONSENT_DECISION_DENY,
                                                     data_classes=["Condition"], purposes=["ETREAT"])],
        ))
        consent_id = grant.consent.id
        step("patient grants hospital-a TREAT/ETREAT on Observation, Condition",
             f"{consent_id} at seq {grant.receipt.sequence}")
        mid_size = grant.receipt.checkpoint.tree_size

        for who, purpose, data_class in (("hospital-a", "TREAT", "Observation"),
                                         ("hospital-a", "ETREAT", "Condition"),
                                         ("hospital-a", "HRESCH", "Observation"),
                                         ("hospital-b", "TREAT", "Observation")):
            org = who
            result = clients[who].check(pid, org, purpose, data_class)
            step(f"{who} checks {purpose} of {data_class}", DECISION.get(result.decision, "?"))

        events: list[str] = []
        for subtype, data_class in (("read", "Observation"), ("search-type", "Condition")):
            recorded = clients["hospital-a"].record(access_log_pb2.RecordRequest(
                type="110110", subtype=subtype, action="R", outcome=access_log_pb2.ACCESS_OUTCOME_SUCCESS,
                purpose_of_use="TREAT", pid=pid, consent_id=consent_id, data_classes=[data_class],
                source_observer="hospital-a/ehr", detail_json='{"view": "chart"}',
            ))
            events.append(recorded.event.id)
            step(f"hospital-a logs its EHR {subtype} of {data_class}",
                 f"{recorded.event.id} seq {recorded.event.sequence}")

        revoked = clients["patient"].revoke(consent_id, "patient-request")
        step("patient revokes the consent", f"version {revoked.consent.version}, status inactive")
        after = clients["hospital-a"].check(pid, "hospital-a", "TREAT", "Observation")
        step("hospital-a checks TREAT of Observation again", f"{DECISION.get(after.decision)} ({after.reason})")

        refused = clients["hospital-a"].record(access_log_pb2.RecordRequest(
            type="110110", subtype="read", action="R", outcome=access_log_pb2.ACCESS_OUTCOME_DENIED,
            outcome_description="consent-revoked", purpose_of_use="TREAT", pid=pid, consent_id=consent_id,
            data_classes=["Observation"], source_observer="hospital-a/ehr",
        ))
        events.append(refused.event.id)
        step("hospital-a logs the refused access", f"{refused.event.id} denied")

        visible = clients["hospital-b"].list_for_patient(pid, include_inactive=True)
        step("hospital-b lists the patient's consents", f"{len(visible)} visible (none name hospital-b)")
        try:
            clients["patient"].list_for_patient(f"{pid}-someone-else")
            step("the patient lists another patient's consents", "returned (unexpected)")
        except grpc.RpcError as exc:
            step("the patient lists another patient's consents", f"refused: {exc.code().name}")

        found = list(compliance.search_all(access_log_pb2.SearchRequest(pid=pid, page_size=2)))
        summary = ", ".join(f"{OUTCOME[e.outcome]}" for e in found)
        step("compliance officer searches the patient's access log", f"{len(found)} events ({summary})")

        verifier, _ = compliance.verifier()
        for event_id in events:
            proof = compliance.verify_event_inclusion(event_id, verifier)
            step(f"inclusion proof of {event_id[:14]}…", f"verified in tree of {proof.tree_size}")
        first, second = compliance.verify_consistency(mid_size, verifier)
        step("consistency proof: the log only grew since the grant's receipt", f"{first} -> {second} verified")
        if not _encrypted_scoring_round(target, issuer, step, settings, vkey):
            return 1
        # --- ledger integrity (issue 11): witness cosignature and a client rejecting a rolled-back log ---
        from ciphercare.services.cli.integrity import demo_transparency

        if not demo_transparency(settings, compliance, step):
            return 1
        print(f"\nAll {len(steps)} steps done; every proof verified against Ed25519-signed checkpoints.")
        return 0
    except ProofError as exc:
        print(f"ciphercare demo: PROOF FAILED: {exc}", file=sys.stderr)
        return 1
    except grpc.RpcError as exc:
        print(f"ciphercare demo: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    finally:
        for client in clients.values():
            client.close()
