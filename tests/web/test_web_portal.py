"""The patient portal in a real browser: sign in, grant, see it, revoke, see a hospital's access, receipts."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from playwright.sync_api import expect
from testkit.web import access, check_receipt_independently, download_json, screenshot, sign_in

import ciphercare.services.cli.main as cli
from ciphercare.sdk.receipts import verify_receipt


def test_patient_grants_sees_revokes_and_sees_a_hospital_access(web_env: Any, page: Any, tmp_path: Path) -> None:
    base = web_env.base
    page.goto(base + "/")
    screenshot(page, "01-home")
    sign_in(page, base, "patient-1001")
    expect(page).to_have_url(base + "/patients/pt-1001")
    expect(page.get_by_role("heading", level=1)).to_have_text("My consents")
    expect(page.locator(".who-name")).to_contain_text("Alex Patient")
    screenshot(page, "02-patient-empty")

    # Grant: an empty form is refused with an error next to each field.
    page.get_by_role("link", name="Grant a new consent").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Grant a consent")
    screenshot(page, "03-grant-form")
    page.get_by_role("button", name="Grant consent").click()
    expect(page.locator("#organization-error")).to_contain_text("Choose the organisation")
    expect(page.locator("#purposes-error")).to_contain_text("Choose at least one purpose")
    expect(page.locator("#data_classes-error")).to_contain_text("Choose at least one kind of data")
    expect(page.get_by_label("Organisation that may use the data")).to_have_attribute("aria-invalid", "true")
    expect(page.locator(".error-summary")).to_be_focused()
    screenshot(page, "04-grant-errors")

    until = (datetime.now(UTC) + timedelta(days=90)).date()
    page.get_by_label("Organisation that may use the data").select_option("hospital-b")
    page.get_by_label("Treatment", exact=True).check()
    page.get_by_label("Your test results and measurements (lab, vital signs) (Observation)").check()
    page.get_by_label("Until (optional)").fill(until.isoformat())
    page.get_by_role("button", name="Grant consent").click()

    expect(page).to_have_url(re.compile(re.escape(base) + r"/patients/pt-1001#consent-cns-[0-9a-f]{32}"))
    flash = page.locator(".flash")
    expect(flash).to_contain_text("Consent granted: Hospital B may use your test results")
    card = page.locator("li.consent").first
    expect(card.locator(".badge")).to_have_text("Active")
    expect(card.locator(".sentence")).to_have_text(
        f"Hospital B may use your test results and measurements (lab, vital signs) for treatment, "
        f"until {until.strftime('%d %B %Y')}.")
    consent_id = str(card.get_attribute("data-consent-id"))
    screenshot(page, "05-patient-consent-granted")

    # The grant's receipt: the signed checkpoint of its commit, verifiable offline.
    grant_receipt = download_json(page, flash.get_by_role("link", name="Download the receipt"))
    assert grant_receipt["kind"] == "consent-grant"
    assert grant_receipt["consent"]["id"] == consent_id
    assert grant_receipt["checkpoint"]["signed_note"].startswith("ciphercare.local/ledger\n")
    # Every write returns its own proof: the receipt carries it, with no self-asserted verification flag.
    assert grant_receipt["inclusion_proof"] is not None and "verified_by_portal" not in grant_receipt
    check_receipt_independently(grant_receipt)
    assert verify_receipt(grant_receipt, web_env.app.ledger.public_key_vkey()).ok

    # Revoke, with a confirmation step.
    card.get_by_role("link", name="Revoke the consent for Hospital B").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Revoke this consent?")
    page.get_by_role("button", name="Revoke consent").click()
    expect(page.locator("#revoke-error")).to_contain_text("Tick the box to confirm")
    page.get_by_label("Yes, Hospital B may no longer use this data").check()
    screenshot(page, "06-revoke-confirm")
    page.get_by_role("button", name="Revoke consent").click()
    expect(page.locator(".flash")).to_contain_text("Consent revoked")
    revoked = page.locator(f'li.consent[data-consent-id="{consent_id}"]')
    expect(revoked.locator(".badge")).to_have_text("Revoked")
    expect(revoked).to_contain_text("Revoked at the patient's request")
    expect(revoked.get_by_role("link", name=re.compile("Revoke"))).to_have_count(0)
    expect(page.get_by_role("heading", name="Receipts from this session")).to_be_visible()

    # A hospital accesses the patient's data (recorded through the SDK as the hospital).
    hospital = web_env.hospital("hospital-b")
    try:
        recorded = hospital.record(access("pt-1001", observer="hospital-b/ehr")).event
    finally:
        hospital.close()
    page.reload()
    row = page.locator(f'#access-history tr[data-event-id="{recorded.id}"]')
    expect(row).to_contain_text("Hospital B (hospital)")
    expect(row).to_contain_text("your test results and measurements")
    expect(row).to_contain_text("treatment")
    expect(row.locator(".badge")).to_have_text("Allowed")
    screenshot(page, "07-patient-history")

    receipt = download_json(page, row.get_by_role("link", name=re.compile("Receipt")))
    assert receipt["kind"] == "access-event"
    assert receipt["event"]["id"] == recorded.id
    assert check_receipt_independently(receipt) == recorded.sequence
    assert verify_receipt(receipt).ok
    # ... and with `ciphercare receipt verify`, which fails on a tampered leaf.
    good = tmp_path / "receipt.json"
    good.write_text(json.dumps(receipt))
    assert cli.main(["receipt", "verify", str(good)]) == 0
    forged = dict(receipt, inclusion_proof={**receipt["inclusion_proof"], "leaf": base64.b64encode(
        base64.b64decode(receipt["inclusion_proof"]["leaf"]).replace(b"hospital-b", b"hospital-x")).decode()})
    bad = tmp_path / "forged.json"
    bad.write_text(json.dumps(forged))
    assert cli.main(["receipt", "verify", str(bad)]) == 1

    # Phone width: no sideways scrolling, the table becomes stacked rows.
    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    expect(page.locator("#access-history thead")).not_to_be_in_viewport()
    screenshot(page, "08-patient-phone")


def test_patient_cannot_open_another_patients_page(web_env: Any, page: Any) -> None:
    hospital = web_env.hospital("hospital-a")
    try:
        other = hospital.record(access("pt-1001", observer="hospital-a/ehr")).event
    finally:
        hospital.close()
    base = web_env.base
    sign_in(page, base, "patient-1002")
    expect(page).to_have_url(base + "/patients/pt-1002")

    response = page.goto(base + "/patients/pt-1001")
    assert response is not None and response.status == 403
    expect(page.get_by_role("heading", level=1)).to_have_text("Not allowed")
    expect(page.locator(".error-message")).to_contain_text("The ciphercare service refused this request")
    expect(page.locator(".error-message")).to_contain_text("may not list this patient's consents")
    expect(page.locator("body")).not_to_contain_text("Grant a new consent")
    screenshot(page, "09-patient-forbidden")

    # Another patient's access event and its receipt are not found for this patient (scoped by the service).
    response = page.goto(base + f"/patients/pt-1001/access/{other.id}/receipt.json")
    assert response is not None and response.status == 404
    # Their own page still works.
    page.goto(base + "/patients/pt-1002")
    expect(page.get_by_role("heading", level=1)).to_have_text("My consents")
    expect(page.locator("#access-history")).to_have_count(0)


def test_keyboard_only_grant_with_visible_focus(web_env: Any, page: Any) -> None:
    base = web_env.base
    sign_in(page, base, "patient-1002")
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to main content")
    expect(skip).to_be_focused()
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
    grant = page.get_by_role("link", name="Grant a new consent")
    for _ in range(10):
        page.keyboard.press("Tab")
        if grant.evaluate("el => el === document.activeElement"):
            break
    expect(grant).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Grant a consent")

    # Every form control has a label.
    unlabelled = page.evaluate("""() => [...document.querySelectorAll('input:not([type=hidden]), select')]
        .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')).length""")
    assert unlabelled == 0

    page.get_by_label("Organisation that may use the data").select_option("hospital-a")
    page.get_by_label("Organisation that may use the data").focus()
    page.keyboard.press("Tab")
    expect(page.get_by_label("Treatment", exact=True)).to_be_focused()
    page.keyboard.press("Space")
    page.get_by_label("Your vaccinations (Immunization)").focus()
    page.keyboard.press("Space")
    page.get_by_role("button", name="Grant consent").focus()
    page.keyboard.press("Enter")
    expect(page.locator(".flash")).to_contain_text("Consent granted: Hospital A may use your vaccinations for "
                                                   "treatment, until you revoke it.")
    expect(page.locator("li.consent .badge").first).to_have_text("Active")


def test_patient_is_told_who_recorded_a_consent_and_confirms_a_staff_proposal(web_env: Any, page: Any) -> None:
    from ciphercare.v1 import consent_pb2

    form = base64.b64encode(b"%PDF signed consent form of pt-1002").decode()
    hospital = web_env.hospital("hospital-b")
    try:
        proposed = hospital.grant(consent_pb2.GrantRequest(
            pid="pt-1002", grantee_organization="hospital-b", decision=consent_pb2.CONSENT_DECISION_PERMIT,
            purposes=["TREAT"], data_classes=["Observation"],
            fhir_consent_json=json.dumps({"resourceType": "Consent", "status": "active",
                                          "sourceAttachment": {"contentType": "application/pdf", "data": form}}),
        )).consent
    finally:
        hospital.close()
    base = web_env.base
    page.goto(base + "/")
    sign_in(page, base, "patient-1002")
    card = page.locator(f'li.consent[data-consent-id="{proposed.id}"]')
    expect(card.locator(".badge")).to_have_text("Awaiting your confirmation")
    expect(card.locator(".recorded-by")).to_contain_text(
        "Hospital B (staff of hospital-b), with your signed consent form on file")
    expect(card.locator(".proposed-note")).to_contain_text("not in force until you confirm it")
    screenshot(page, "09-patient-staff-proposal")
    card.get_by_role("button", name="Confirm the consent for Hospital B").click()
    expect(page.locator(".flash")).to_contain_text("Consent confirmed")
    expect(card.locator(".badge")).to_have_text("Active")
    expect(card.locator(".recorded-by")).to_contain_text("Hospital B (staff of hospital-b)")
