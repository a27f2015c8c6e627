"""The console at scale and the officer's flags, in Debian's Chromium (issue 15, items 1 and 5).

Thousands of synthetic events go into the server's projection through the store (with ledger sequences far
above the ledger's own); events whose inclusion is proved, and the misuse that is flagged, are recorded
through the real server. Checked as the officer sees them: counts from the service's aggregates over the
whole search, newest first with paging both ways, chart tick labels that do not overlap, complete exports,
an integrity panel that follows the search, and a flag with its plain-language reasons.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

from playwright.sync_api import expect
from testkit.web import access, screenshot, sign_in

from ciphercare.analytics.anomaly.simulate import CANARY_NAME
from ciphercare.services.bench.audit import insert_events, simulated_history, synthetic_event
from ciphercare.v1 import access_log_pb2

SCALE_ORG = "hospital-scale"
SCALE_ROWS = 6000  # more than the 5,000 rows the old console counted from
DAY_MS = 86_400_000


def _seed_scale(web_env: Any) -> list[Any]:
    rng = random.Random(15)
    start = int(time.time() * 1000) - 40 * DAY_MS
    rows = [synthetic_event(5 * 10**9 + i, start + i * (30 * DAY_MS // SCALE_ROWS), rng, org=SCALE_ORG,
                            outcome=rng.choice(["success"] * 6 + ["denied", "error"])) for i in range(SCALE_ROWS)]
    insert_events(web_env.app.store, rows)
    return rows


def test_counts_paging_chart_and_exports_hold_at_scale(web_env: Any, page: Any) -> None:
    rows = _seed_scale(web_env)
    outcomes = Counter(r.outcome for r in rows)
    newest = [r.event_id for r in sorted(rows, key=lambda r: -r.seq)]
    base = web_env.base
    sign_in(page, base, "officer")
    page.goto(f"{base}/console?organization={SCALE_ORG}&size=10")
    summary = page.locator("#result-summary")
    expect(summary).to_contain_text(f"{SCALE_ROWS} matching events: {outcomes['success']} allowed, "
                                    f"{outcomes['denied']} denied, {outcomes['error']} error")

    # Newest first, ten a page; older, older, then newer brings back exactly the page before.
    results = page.locator("#results tbody tr")
    def shown() -> list[str]:
        expect(results).to_have_count(10)
        return [results.nth(i).get_attribute("data-event-id") or "" for i in range(10)]
    assert shown() == newest[:10]
    expect(page.get_by_role("link", name="Newer events")).to_have_count(0)
    page.get_by_role("link", name="Older events").click()
    assert shown() == newest[10:20]
    page.get_by_role("link", name="Older events").click()
    assert shown() == newest[20:30]
    page.get_by_role("link", name="Newer events").click()
    assert shown() == newest[10:20]
    page.get_by_role("link", name="Newer events").click()
    assert shown() == newest[:10]
    expect(page.get_by_role("link", name="Newer events")).to_have_count(0)
    page.get_by_label("Order").select_option("oldest")
    page.get_by_role("button", name="Search").click()
    assert shown() == newest[::-1][:10]
    page.get_by_role("link", name="Later events").click()
    assert shown() == newest[::-1][10:20]

    # The chart counts every day of the search (30 days here), and its x-axis labels never overlap.
    page.goto(f"{base}/console?organization={SCALE_ORG}&size=10")
    description = page.locator("svg.chart desc").text_content() or ""
    chart_total = sum(int(n) for n in re.findall(r"(\d+) accesses over", description))
    assert chart_total == SCALE_ROWS
    boxes = page.locator("svg.chart text.tick-x").evaluate_all(
        "els => els.map(e => { const b = e.getBBox(); return [b.x, b.x + b.width]; })")
    assert len(boxes) >= 3
    for (_, right), (left, _) in zip(boxes, boxes[1:], strict=False):
        assert right < left, f"chart labels overlap: {boxes}"
    screenshot(page, "15-console-at-scale")

    # The CSV export holds every matching event, newest first.
    with page.expect_download() as info:
        page.locator("#export-csv").click()
    table = list(csv.DictReader(io.StringIO(Path(info.value.path()).read_text(encoding="utf-8"))))
    assert [r["event_id"] for r in table] == newest


def test_integrity_panel_follows_the_search(web_env: Any, page: Any) -> None:
    hospital = web_env.hospital("hospital-a")
    try:
        nine = [hospital.record(access("pt-integrity-9", observer="hospital-a/ehr")).event for _ in range(9)]
        one = hospital.record(access("pt-integrity-1", observer="hospital-a/ehr")).event
    finally:
        hospital.close()
    base = web_env.base
    sign_in(page, base, "officer")
    page.goto(f"{base}/console?pid=pt-integrity-9")
    page.get_by_role("button", name="Verify integrity now").click()
    expect(page.locator("#integrity-inclusion")).to_contain_text("9 of 9 events on this page verified")

    page.goto(f"{base}/console?pid=pt-integrity-1")
    expect(page.locator("#results tbody tr")).to_have_count(1)
    inclusion = page.locator("#integrity-inclusion")
    expect(inclusion).not_to_contain_text("on this page verified")
    expect(inclusion).to_contain_text("check the 1 event on this page")
    page.get_by_role("button", name="Verify integrity now").click()
    expect(inclusion).to_contain_text("1 of 1 event on this page verified")
    expect(page.locator(f'#results tr[data-event-id="{one.id}"] .inclusion')).to_contain_text("✓ included")
    assert nine[0].id not in page.locator("#results").inner_text()
    screenshot(page, "16-console-integrity-one-event")


def test_a_flag_as_the_officer_sees_it(web_env: Any, page: Any) -> None:
    now = int(time.time() * 1000)
    insert_events(web_env.app.store, simulated_history(now - 3_600_000))
    clinician = web_env.client(web_env.token("clinician", org="hospital-b", subject="clin-bulk-web"))
    detail = json.dumps({"patient_name": CANARY_NAME})
    try:
        for i in range(60):
            clinician.record(access_log_pb2.RecordRequest(
                type="110106", subtype="search-type", action="R", outcome=access_log_pb2.ACCESS_OUTCOME_SUCCESS,
                purpose_of_use="TREAT", pid=f"pid-web-pull-{i:03d}", data_classes=["Observation"],
                source_observer="hospital-b/ehr/cardiology", detail_json=detail))
    finally:
        clinician.close()
    base = web_env.base
    sign_in(page, base, "officer")
    page.get_by_role("link", name=re.compile("Unusual access")).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Unusual access")
    # The window of the pull: from half an hour ago (the simulated history ends an hour ago).
    stamp = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(now / 1000 - 1800))
    page.get_by_label("From (UTC)").fill(stamp)
    page.get_by_label("Organisation").fill("hospital-b")  # other tests of this module record for hospital-a
    page.get_by_role("button", name="Show flags").click()
    flag = page.locator('#flags li[data-requester="clin-bulk-web"]')
    expect(page.locator("#flags-summary")).to_contain_text("60 access events examined")
    assert flag.count() == 1, page.locator("main").inner_text()
    expect(flag.get_by_role("heading")).to_contain_text("Bulk access or export")
    expect(flag.get_by_role("heading")).to_contain_text("hospital-b")
    expect(flag.locator(".reasons")).to_contain_text(re.compile(r"(opened|exported) 60 patients' records"))
    expect(flag).to_contain_text("pid-web-pull-")
    assert CANARY_NAME not in page.content()
    screenshot(page, "17-console-flag")

    flag.get_by_role("link", name="Review these accesses in the access log").click()
    expect(page.locator("#result-summary")).to_contain_text("60 matching events")

    # A clinician may not read flags about colleagues: the service refuses, the page says so.
    page.context.clear_cookies()
    sign_in(page, base, "clinician-a")
    expect(page.get_by_role("link", name=re.compile("Unusual access"))).to_have_count(0)
    page.goto(base + "/console/flags")
    expect(page.get_by_role("heading", level=1)).to_have_text("Not allowed")
    expect(page.locator("body")).to_contain_text("PERMISSION_DENIED")
