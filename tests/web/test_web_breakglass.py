"""Break-glass as the patient and the officer see it, and the plain-words portal fixes, in Debian's Chromium.

The demo patients are filled by the demo's own seeding (services/cli/demo/patients.py) over real gRPC.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect
from testkit.web import csrf_token, screenshot, sign_in

from ciphercare.services.cli.demo.patients import seed_demo_patients


@pytest.fixture(scope="module")
def seeded(web_env: Any) -> Any:
    assert seed_demo_patients(web_env.server.target, web_env.issuer, 15.0, lambda label, outcome: None)
    assert not seed_demo_patients(web_env.server.target, web_env.issuer, 15.0, lambda label, outcome: None)
    return web_env


@pytest.fixture
def tokyo(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB", timezone_id="Asia/Tokyo")
    context.set_default_timeout(15_000)
    try:
        yield context.new_page()
    finally:
        context.close()


def test_patient_sees_break_glass_and_officer_reviews_it(seeded: Any, page: Any, browser: Any) -> None:
    base = seeded.base
    sign_in(page, base, "patient-1002")
    expect(page.get_by_role("heading", level=1)).to_have_text("My consents")
    section = page.locator("#breakglass")
    expect(section.get_by_role("heading", level=2)).to_have_text("Emergency access to your record")
    card = section.locator("li.breakglass").first
    expect(card.locator(".badge")).to_have_text("Emergency access open")
    expect(card.locator(".sentence")).to_have_text(
        "A clinician at Hospital A used emergency access (\u201cbreak the glass\u201d) to open your record "
        "without a consent.")
    expect(card).to_contain_text("The patient is unconscious or cannot communicate")
    expect(card).to_contain_text("1 recorded")
    expect(card.locator(".review")).to_have_text("Not reviewed yet: a compliance officer will check that it was "
                                                 "justified")
    # the access made under it is marked in the history, with ETREAT's words
    row = page.locator("#access-history tbody tr", has_text="Emergency access")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("emergency treatment")
    # the free text is the officer's to read, shown nowhere on the patient's page
    expect(page.locator("body")).not_to_contain_text("Brought in unconscious by ambulance")
    declaration_id = str(card.get_attribute("data-declaration-id"))
    screenshot(page, "bg-01-patient-emergency-access")

    officer_context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB", timezone_id="UTC")
    officer = officer_context.new_page()
    try:
        sign_in(officer, base, "officer")
        officer.get_by_role("link", name="Break-glass").click()
        expect(officer.get_by_role("heading", level=1)).to_have_text("Break-glass review")
        expect(officer.locator("#breakglass-counts")).to_contain_text("1 awaiting review")
        bg_row = officer.locator(f'#breakglass-table tr[data-declaration-id="{declaration_id}"]')
        expect(bg_row.locator(".badge").first).to_have_text("High")
        expect(bg_row).to_have_class(re.compile("row-denied"))
        screenshot(officer, "bg-02-officer-review-list")
        bg_row.get_by_role("link").first.click()
        expect(officer.locator("#justification")).to_contain_text("Brought in unconscious by ambulance")
        officer.get_by_label("Note (optional, kept off the ledger)").fill("Confirmed with the ED admission log.")
        officer.get_by_role("button", name="Acknowledge (justified)").click()
        expect(officer.locator(".flash")).to_contain_text("acknowledged; recorded on the ledger")
        expect(officer.locator("#review-status")).to_have_text("Acknowledged")
        expect(officer.locator("#reviews")).to_contain_text("Confirmed with the ED admission log.")
        expect(officer.get_by_role("button", name="Acknowledge (justified)")).to_have_count(0)
        officer.goto(base + "/console/breakglass")
        expect(officer.locator("#breakglass-counts")).to_contain_text("0 awaiting review")
        expect(officer.locator("#breakglass-counts")).to_contain_text("1 acknowledged")
    finally:
        officer_context.close()

    page.reload()
    expect(page.locator("#breakglass li.breakglass .review").first).to_have_text(
        "Reviewed: a compliance officer found it justified")


def test_portal_words_recipients_and_addressing(seeded: Any, page: Any, browser: Any) -> None:
    base = seeded.base
    sign_in(page, base, "patient-1001")
    cards = page.locator("li.consent")
    revoked = cards.filter(has=page.locator(".badge", has_text="Revoked"))
    expect(revoked).to_have_count(1)
    expect(revoked.locator(".sentence")).to_contain_text("Hospital B was allowed to use your vaccinations for "
                                                          "treatment until this consent was revoked on")
    expect(revoked.locator(".sentence")).not_to_contain_text("until you revoke it")
    expect(revoked.locator(".sentence")).not_to_contain_text("may use")
    expired = cards.filter(has=page.locator(".badge", has_text="Expired"))
    expect(expired.locator(".sentence")).to_contain_text("This consent has expired and no longer applies.")
    expect(cards.filter(has=page.locator(".badge", has_text="Active")).first.locator(".sentence")).to_contain_text(
        "may use")

    # recipients come from the registry: a select, no free typing
    page.get_by_role("link", name="Grant a new consent").click()
    org = page.get_by_label("Organisation that may use the data")
    expect(org).to_have_js_property("tagName", "SELECT")
    options = org.locator("option").all_inner_texts()
    assert "Hospital A" in options and "Regional Public Health Agency" in options
    # purposes are grouped and explained; other uses are collapsed; BTG is never offered
    expect(page.locator("#purpose-group-care h3")).to_have_text("Your care")
    expect(page.locator("#purpose-TREAT-why")).to_have_text("Doctors, nurses and pharmacists treating you.")
    expect(page.get_by_label("Marketing")).to_be_hidden()
    page.locator("#purpose-group-other summary").click()
    expect(page.get_by_label("Marketing")).to_be_visible()
    expect(page.locator("#purpose-BTG")).to_have_count(0)
    screenshot(page, "bg-03-grant-grouped")

    # a crafted POST with a typo organisation is refused by the server, and nothing is granted
    token = csrf_token(page)
    response = page.request.post(base + "/patients/pt-1001/consents/new", form={
        "csrf_token": token, "organization": "hospital-zzz", "purposes": "TREAT", "data_classes": "Observation"})
    assert response.status == 400
    assert "ciphercare does not know" in response.text()
    page.goto(base + "/patients/pt-1001")
    expect(page.locator("body")).not_to_contain_text("Hospital Zzz")

    # an officer viewing the patient's page is not told "your data"
    officer_context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB", timezone_id="UTC")
    officer = officer_context.new_page()
    try:
        sign_in(officer, base, "officer")
        officer.goto(base + "/patients/pt-1001")
        expect(officer.get_by_role("heading", level=1)).to_have_text("Consents of patient pt-1001")
        expect(officer.locator("#consents-title")).to_have_text("Who may use the patient's data")
        body = officer.locator("main").inner_text()
        # "your" may only address the officer ("what your role may see"), never the patient's data
        assert re.findall(r"\byour\b(?! role)", body, flags=re.I) == [], body
        expect(officer.locator("li.consent .sentence").first).to_contain_text("the patient's")
    finally:
        officer_context.close()


def test_times_are_shown_in_the_readers_time_zone(seeded: Any, tokyo: Any) -> None:
    sign_in(tokyo, seeded.base, "patient-1001")
    stamp = tokyo.locator("#access-history time[data-local]").first
    expect(stamp).to_have_attribute("data-localized", "1")
    iso = str(stamp.get_attribute("datetime"))
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z", iso)
    assert str(stamp.get_attribute("title")).endswith("UTC")  # the server's UTC text stays as the fallback
    shown = stamp.inner_text()
    expected = tokyo.evaluate("""iso => new Intl.DateTimeFormat(undefined, {year: "numeric", month: "short",
        day: "2-digit", hour: "2-digit", minute: "2-digit", timeZoneName: "short"}).format(new Date(iso))""", iso)
    assert shown == expected and ("GMT+9" in shown or "JST" in shown), shown
