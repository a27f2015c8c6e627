"""The compliance console in a real browser: search, denied accesses, integrity, exports; no grant for officers."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

from playwright.sync_api import expect
from testkit.web import access, check_receipt_independently, csrf_token, download_json, screenshot, sign_in

from ciphercare.v1 import access_log_pb2

DENIED = access_log_pb2.ACCESS_OUTCOME_DENIED


def _record(web_env: Any, org: str, request: access_log_pb2.RecordRequest) -> access_log_pb2.AccessEvent:
    hospital = web_env.hospital(org)
    try:
        return hospital.record(request).event
    finally:
        hospital.close()


def test_officer_searches_sees_denied_verifies_integrity_and_exports(web_env: Any, page: Any) -> None:
    allowed = _record(web_env, "hospital-a", access("pt-2001", observer="hospital-a/ehr"))
    denied = _record(web_env, "hospital-b", access("pt-2001", outcome=DENIED, purpose="HRESCH",
                                                   reason="consent-denied", observer="hospital-b/research"))
    base = web_env.base
    sign_in(page, base, "officer")
    expect(page).to_have_url(base + "/console")
    expect(page.get_by_role("heading", level=1)).to_have_text("Access log")
    expect(page.locator("body")).to_contain_text("You see every access event on the ledger.")
    screenshot(page, "10-console")

    # Search by patient: both events, the denied one highlighted.
    page.get_by_label("Patient (pseudonym)").fill("pt-2001")
    page.get_by_role("button", name="Search").click()
    expect(page).to_have_url(re.compile(r".*/console\?pid=pt-2001.*"))
    rows = page.locator("#results tbody tr")
    expect(rows).to_have_count(2)
    denied_row = page.locator(f'#results tr[data-event-id="{denied.id}"]')
    expect(denied_row).to_have_class(re.compile(r"\brow-denied\b"))
    expect(denied_row).to_contain_text("Denied")
    expect(denied_row).to_contain_text("consent-denied")
    expect(page.locator(f'#results tr[data-event-id="{allowed.id}"]')).not_to_have_class(re.compile("row-denied"))
    expect(page.locator("#result-summary")).to_contain_text("2 matching events: 1 allowed, 1 denied, 0 error")
    expect(page.locator("svg.chart rect.bar-denied")).to_have_count(1)
    expect(page.locator("svg.chart rect.bar-allowed")).to_have_count(1)
    screenshot(page, "11-console-denied")

    # Filter on the outcome: only the denied access.
    page.get_by_label("Outcome", exact=True).select_option("denied")
    page.get_by_role("button", name="Search").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-event-id", denied.id)

    # Integrity: the first check verifies the checkpoint and this page's inclusion proofs ...
    page.get_by_label("Outcome", exact=True).select_option("")
    page.get_by_role("button", name="Search").click()
    page.get_by_role("button", name="Verify integrity now").click()
    status = page.locator("#integrity-status")
    expect(status).to_contain_text("✓ The log checks out")
    expect(page.locator("#integrity-checkpoint")).to_contain_text("signature verified")
    expect(page.locator("#integrity-consistency")).to_contain_text("First checkpoint verified in this session")
    expect(page.locator("#integrity-inclusion")).to_contain_text("2 of 2 events on this page verified")
    expect(denied_row.locator(".inclusion")).to_contain_text("✓ included")
    first_size = int(re.search(r"(\d+) entries", page.locator("#integrity-checkpoint").inner_text()).group(1))

    # ... and after the log grows, the next check proves it only grew (RFC 9162 consistency).
    _record(web_env, "hospital-a", access("pt-2001", observer="hospital-a/ehr"))
    page.get_by_role("button", name="Verify integrity now").click()
    expect(page.locator("#integrity-consistency")).to_contain_text(
        f"Consistent with the checkpoint verified before ({first_size} entries)")
    expect(status).to_contain_text("✓ The log checks out")
    screenshot(page, "12-console-integrity")

    # CSV export of the filtered set (every matching event, newest first).
    with page.expect_download() as info:
        page.locator("#export-csv").click()
    table = list(csv.DictReader(io.StringIO(Path(info.value.path()).read_text(encoding="utf-8"))))
    assert info.value.suggested_filename.endswith(".csv")
    assert [r["event_id"] for r in table][1:] == [denied.id, allowed.id]
    assert len(table) == 3 and {r["patient_pid"] for r in table} == {"pt-2001"}
    assert table[1]["outcome"] == "denied" and table[1]["agent_organization"] == "hospital-b"
    assert table[1]["purpose_of_use"] == "HRESCH" and table[1]["outcome_description"] == "consent-denied"

    # FHIR AuditEvent Bundle of the same set (a collection bundle, streamed by the service).
    bundle = download_json(page, page.locator("#export-fhir"))
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection" and len(bundle["entry"]) == 3
    events = {e["resource"]["id"]: e["resource"] for e in bundle["entry"]}
    refused = events[denied.id]
    assert refused["resourceType"] == "AuditEvent" and refused["outcome"] == "4"
    assert refused["meta"]["profile"] == ["https://profiles.ihe.net/ITI/BALP/StructureDefinition/"
                                          "IHE.BasicAudit.PatientRead"]
    assert refused["type"]["code"] == "110110" and refused["action"] == "R"
    assert refused["purposeOfEvent"][0]["coding"][0]["code"] == "HRESCH"
    assert refused["entity"][0]["what"]["identifier"]["value"] == "pt-2001"
    assert refused["agent"][0]["requestor"] is True
    assert events[allowed.id]["outcome"] == "0"

    # An event's page shows its inclusion proof verified; its receipt verifies offline.
    denied_row.get_by_role("link", name=re.compile("Details")).click()
    expect(page.locator("#inclusion-status")).to_contain_text("✓ Included in the ledger")
    screenshot(page, "13-event-detail")
    receipt = download_json(page, page.get_by_role("link", name=re.compile("Download the receipt")))
    assert check_receipt_independently(receipt) == denied.sequence

    # Paging: one event per page, "Next page" follows the cursor.
    page.goto(base + "/console?pid=pt-2001&size=10")
    expect(rows).to_have_count(3)


def test_console_pages_through_results(web_env: Any, page: Any) -> None:
    for _ in range(12):
        _record(web_env, "hospital-a", access("pt-2002", observer="hospital-a/ehr"))
    base = web_env.base
    sign_in(page, base, "officer")
    page.goto(base + "/console?pid=pt-2002&size=10")
    rows = page.locator("#results tbody tr")
    expect(rows).to_have_count(10)
    first_page = [rows.nth(i).get_attribute("data-event-id") for i in range(10)]
    page.get_by_role("link", name="Older events").click()
    expect(rows).to_have_count(2)
    assert rows.first.get_attribute("data-event-id") not in first_page
    expect(page.get_by_role("link", name="Older events")).to_have_count(0)
    page.get_by_role("link", name="Newest events").click()
    expect(rows).to_have_count(10)

    # A bad filter is explained next to its field, and nothing is searched.
    page.get_by_label("From (UTC)").fill("2026-11-21T10:00")
    page.get_by_label("To (UTC, not included)").fill("2026-11-20T10:00")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#recorded_to-error")).to_contain_text("must be after its start")
    expect(page.get_by_label("To (UTC, not included)")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#results")).to_have_count(0)


def test_officer_has_no_grant_button_and_the_server_refuses_a_grant(web_env: Any, page: Any) -> None:
    base = web_env.base
    sign_in(page, base, "officer")
    page.get_by_label("Open a patient's consents").fill("pt-3001")
    page.get_by_role("button", name="Open").click()
    expect(page).to_have_url(base + "/patients/pt-3001")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Consents of patient")
    expect(page.get_by_role("link", name="Grant a new consent")).to_have_count(0)
    page.goto(base + "/patients/pt-3001/consents/new")
    expect(page.locator("form#grant-form")).to_have_count(0)
    expect(page.get_by_role("button", name="Grant consent")).to_have_count(0)
    expect(page.locator(".notice")).to_contain_text("refuses it for your role")

    # Posting anyway (a hand-made form with the session's own CSRF token): the service refuses.
    token = csrf_token(page)
    page.evaluate("""([token]) => {
        const form = document.createElement('form');
        form.method = 'post';
        form.action = '/patients/pt-3001/consents/new';
        const fields = {csrf_token: token, organization: 'hospital-a', purposes: 'TREAT', data_classes: 'Observation'};
        for (const [name, value] of Object.entries(fields)) {
            const input = document.createElement('input');
            input.type = 'hidden'; input.name = name; input.value = value;
            form.appendChild(input);
        }
        document.body.appendChild(form);
        form.submit();
    }""", [token])
    expect(page.get_by_role("heading", level=1)).to_have_text("Not allowed")
    expect(page.locator(".error-message")).to_contain_text("The ciphercare service refused this request")
    expect(page.locator("body")).to_contain_text("PERMISSION_DENIED")
    screenshot(page, "14-officer-grant-refused")

    # The refusal named a patient, so the service logged it as a denied access: the console shows it.
    page.goto(base + "/console?pid=pt-3001&outcome=denied")
    row = page.locator("#results tbody tr").first
    expect(row).to_contain_text("Denied")
    expect(row).to_contain_text("permission-denied")
    officer = web_env.officer()
    try:
        consents = officer.list_for_patient("pt-3001", include_inactive=True)
    finally:
        officer.close()
    assert consents == []


def test_clinician_sees_only_their_organisation(web_env: Any, page: Any) -> None:
    _record(web_env, "hospital-a", access("pt-4001", observer="hospital-a/ehr"))
    _record(web_env, "hospital-b", access("pt-4001", observer="hospital-b/ehr"))
    base = web_env.base
    sign_in(page, base, "clinician-a")
    expect(page.locator("body")).to_contain_text("access events of your organisation (hospital-a)")
    page.goto(base + "/console?pid=pt-4001")
    rows = page.locator("#results tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Hospital A")
    body = json.dumps(page.locator("#results").inner_text())
    assert "Hospital B" not in body
