"""The ciphercare test kit: helpers shared by the test suites, importable as ``testkit.*`` (tests/ is on
pytest's pythonpath). Conftest files only turn these into fixtures."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def component_missing(message: str) -> NoReturn:
    """A real component the tests need is absent: fail under ``CI=true`` (never a silent skip there), skip
    elsewhere. The one place a test of this suite may skip (``tests/platform/test_components_required.py``)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} -- required under CI=true")
    pytest.skip(message)
