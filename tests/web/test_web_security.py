"""Sessions, CSRF and login in a real browser: refused requests change nothing."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import expect
from testkit.web import csrf_token, screenshot, sign_in

GRANT = {"organization": "hospital-a", "purposes": "TREAT", "data_classes": "Observation"}


def _consents(web_env: Any, pid: str) -> list[Any]:
    patient = web_env.patient(pid)
    try:
        return patient.list_for_patient(pid, include_inactive=True)
    finally:
        patient.close()


def test_missing_session_is_refused(web_env: Any, context: Any) -> None:
    base = web_env.base
    # A POST without any session: refused, nothing granted.
    response = context.request.post(base + "/patients/pt-5001/consents/new", form={"csrf_token": "x", **GRANT},
                                    max_redirects=0)
    assert response.status == 401
    assert "not signed in" in response.text()
    assert _consents(web_env, "pt-5001") == []
    # A page without a session sends the browser to sign in, and back after it.
    page = context.new_page()
    page.goto(base + "/patients/pt-5001")
    expect(page).to_have_url(re.compile(r".*/protocol/openid-connect/auth\?.*"))
    page.locator('input[name="username"][value="patient-1001"]').check()
    page.get_by_role("button", name="Sign in").click()
    # back at the page asked for; the service refuses it for this patient (not pt-5001)
    expect(page).to_have_url(base + "/patients/pt-5001")
    expect(page.get_by_role("heading", level=1)).to_have_text("Not allowed")


def test_csrf_token_and_origin_are_checked(web_env: Any, context: Any) -> None:
    base = web_env.base
    page = context.new_page()
    sign_in(page, base, "patient-1002")
    token = csrf_token(page)
    url = base + "/patients/pt-1002/consents/new"
    for form, headers in (
        (GRANT, {}),  # no token
        ({"csrf_token": "not-the-token", **GRANT}, {}),  # wrong token
        ({"csrf_token": token, **GRANT}, {"Origin": "http://evil.example"}),  # right token, other site
    ):
        response = context.request.post(url, form=form, headers=headers, max_redirects=0)
        assert response.status == 403, response.text()
        assert "Request refused" in response.text()
    assert all(c.grantee_organization != "hospital-a" for c in _consents(web_env, "pt-1002"))
    # The same request with the session's token goes through.
    response = context.request.post(url, form={"csrf_token": token, **GRANT}, max_redirects=0)
    assert response.status == 303
    assert any(c.grantee_organization == "hospital-a" for c in _consents(web_env, "pt-1002"))
    page.goto(base + "/patients/pt-1002/consents/new")
    page.evaluate("document.querySelector('#grant-form input[name=csrf_token]').value = 'tampered'")
    page.get_by_label("Organisation that may use the data").select_option("hospital-b")
    page.get_by_label("Treatment", exact=True).check()
    page.get_by_label("Your vaccinations (Immunization)").check()
    page.get_by_role("button", name="Grant consent").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Request refused")
    screenshot(page, "15-csrf-refused")


def test_session_cookie_flags_logout_and_state(web_env: Any, context: Any) -> None:
    base = web_env.base
    page = context.new_page()
    sign_in(page, base, "patient-1001")
    cookies = [c for c in context.cookies(base) if c["name"] == "ciphercare_session"]
    assert len(cookies) == 1
    assert cookies[0]["httpOnly"] is True and cookies[0]["sameSite"] == "Lax"
    assert page.evaluate("document.cookie") == ""  # not readable by scripts
    old_session = cookies[0]["value"]
    token = csrf_token(page)

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(base + "/signed-out")
    expect(page.get_by_role("heading", level=1)).to_have_text("You are signed out")
    screenshot(page, "16-signed-out")
    # The old session id and token are worthless now.
    context.add_cookies([{"name": "ciphercare_session", "value": old_session, "url": base}])
    response = context.request.post(base + "/patients/pt-1001/consents/new",
                                    form={"csrf_token": token, **GRANT}, max_redirects=0)
    assert response.status == 401
    page.goto(base + "/patients/pt-1001")
    expect(page).to_have_url(re.compile(r".*/protocol/openid-connect/auth\?.*"))

    # A callback that does not belong to a login started in this browser is refused.
    response = page.goto(base + "/auth/callback?code=forged&state=forged")
    assert response is not None and response.status == 400
    expect(page.locator(".error-message")).to_contain_text("does not belong to a sign-in started in this browser")


def test_security_headers(web_env: Any, context: Any) -> None:
    response = context.request.get(web_env.base + "/")
    headers = response.headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "no-store"
