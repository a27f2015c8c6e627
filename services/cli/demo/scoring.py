"""The demo's encrypted scoring round: one consented and one refused patient (called from run_demo)."""

from __future__ import annotations

import secrets
from collections.abc import Callable

from ciphercare.sdk.client import CiphercareClient
from ciphercare.services.identity.devissuer import DevIssuer
from ciphercare.v1 import common_pb2, consent_pb2


def scoring_round(target: str, issuer: DevIssuer, step: Callable[[str, str], None], *, deadline_s: float,
                  vkey: str | None = None) -> None:
    """Patient A consents, patient B does not; hospital-a scores both under encryption."""
    from ciphercare.analytics.client.keys import KeyOwner
    from ciphercare.analytics.model.datasets import load_whas500
    from ciphercare.sdk.scoring import ScoringClient

    tag = secrets.token_hex(3)
    consenting, refusing = f"pt-demo-{tag}-1", f"pt-demo-{tag}-2"
    patient = CiphercareClient.connect(target, issuer.issue(subject=f"patient-{consenting}", roles=["patient"], org="",
                                                            pid=consenting), deadline_s=deadline_s, vkey=vkey)
    hospital = ScoringClient.connect(target, issuer.issue(subject="svc-hospital-a-ehr", roles=["hospital"],
                                                          org="hospital-a", client_id="hospital-a"), deadline_s=120)
    try:
        patient.grant(consent_pb2.GrantRequest(
            pid=consenting, grantee_organization="hospital-a", decision=consent_pb2.CONSENT_DECISION_PERMIT,
            purposes=["TREAT"], data_classes=["Observation"], period=common_pb2.Period()))
        step(f"{consenting} consents to risk scoring by hospital-a", "permit recorded")
        info = hospital.model_info()
        step("hospital-a fetches the model's public grid (no trees)",
             f"{len(info.features)} features, {info.edge_count} edges, model {info.sha256[:12]}…")
        keys = KeyOwner.generate()
        registered = hospital.register(keys.public_context)
        step("hospital-a registers its public CKKS context (no secret key)",
             f"{registered.size_bytes / 1e6:.1f} MB, id {registered.context_id[:12]}…")
        rows = load_whas500().x[:2]
        run = hospital.score(keys, [consenting, refusing], rows, purpose="TREAT", data_class="Observation", info=info)
        for result in run.results:
            if result.status == "scored":
                step(f"encrypted 1-year mortality risk of {result.pid}",
                     f"{result.probability:.3f} (event {result.access_event_id[:11]}…)")
            else:
                step(f"encrypted scoring of {result.pid} (no consent)",
                     f"{result.status}: {result.reason_code} (event {result.access_event_id[:11]}…)")
    finally:
        patient.close()
        hospital.close()
