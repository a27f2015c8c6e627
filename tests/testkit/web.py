"""Helpers for the browser tests: sign in through the real login page, screenshots, receipts."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

from ciphercare.v1 import access_log_pb2
from testkit.rfc9162 import leaf_hash, verify_inclusion, verify_note  # the tests' independent RFC 9162 reference
from testkit.server import Env, ServerThread, make_settings  # noqa: F401  (re-exported for the web tests)

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"




def screenshot(page: Any, name: str) -> Path:
    """Save a full-page screenshot as a test artifact (test-artifacts/screenshots/<name>.png)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{re.sub(r'[^a-z0-9-]+', '-', name.lower())}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def sign_in(page: Any, base: str, username: str, start: str = "/") -> None:
    """Sign in through the app's "Sign in" and the development issuer's "choose a demo user" page."""
    page.goto(base + start)
    if start == "/":
        page.get_by_role("link", name="Sign in").click()
    page.wait_for_url(re.compile(r".*/protocol/openid-connect/auth\?.*"))
    page.locator(f'input[name="username"][value="{username}"]').check()
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(re.escape(base) + r"/(patients|console).*"))


def csrf_token(page: Any) -> str:
    return str(page.locator('input[name="csrf_token"]').first.get_attribute("value"))


def download_json(page: Any, locator: Any) -> dict[str, Any]:
    with page.expect_download() as info:
        locator.click()
    return json.loads(Path(info.value.path()).read_text(encoding="utf-8"))


def check_receipt_independently(receipt: dict[str, Any]) -> int:
    """Verify a receipt with the tests' own RFC 9162 and signed-note code; returns the leaf index."""
    origin, size, root = verify_note(receipt["checkpoint"]["signed_note"], receipt["log"]["verifier_key"])
    proof = receipt["inclusion_proof"]
    leaf = base64.b64decode(proof["leaf"])
    path = [base64.b64decode(h) for h in proof["audit_path"]]
    assert proof["tree_size"] == size
    assert verify_inclusion(leaf, proof["leaf_index"], size, path, root)
    assert leaf_hash(leaf).hex() == proof["leaf_hash"]
    assert json.loads(leaf)["tx_id"] == receipt["transaction"]["tx_id"]
    return int(proof["leaf_index"])


def access(pid: str, *, outcome: int = access_log_pb2.ACCESS_OUTCOME_SUCCESS, purpose: str = "TREAT",
           data_classes: tuple[str, ...] = ("Observation",), reason: str = "", consent_id: str = "",
           observer: str = "") -> access_log_pb2.RecordRequest:
    """A hospital's RecordRequest for one access to ``pid``."""
    return access_log_pb2.RecordRequest(
        type="110110", subtype="read", action="R", outcome=outcome, outcome_description=reason,
        purpose_of_use=purpose, pid=pid, consent_id=consent_id, data_classes=list(data_classes),
        source_observer=observer)
