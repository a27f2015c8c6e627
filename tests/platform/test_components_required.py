"""With CI=true a missing real component fails the run; it is never silently skipped.

Every test that needs a component from outside Python (PostgreSQL, Keycloak, Chromium, helm, ghz, node,
the Go client, shellcheck) reaches :func:`testkit.component_missing` when it is absent, and nothing else in
tests/ skips.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from testkit import component_missing

TESTS = Path(__file__).resolve().parents[1]
SKIPS = re.compile(r"pytest\.(skip\(|mark\.skip|importorskip)|mark\.skipif|unittest\.skip")


def test_missing_component_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="required under CI=true"):
        component_missing("helm not found")


def test_missing_component_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="helm not found"):
        component_missing("helm not found")


def test_nothing_else_in_tests_skips() -> None:
    helper = TESTS / "testkit" / "__init__.py"
    offenders = [f"{path.relative_to(TESTS)}:{number}"
                 for path in sorted(TESTS.rglob("*.py")) if path != helper and path != Path(__file__).resolve()
                 for number, line in enumerate(path.read_text().splitlines(), 1) if SKIPS.search(line)]
    assert offenders == [], f"skips outside testkit.component_missing: {offenders}"
    assert "pytest.skip(" in helper.read_text()
