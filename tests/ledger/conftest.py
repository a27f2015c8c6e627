"""Fixtures for the ledger tests; also makes ledger_testkit importable (pytest uses --import-mode=importlib)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from ledger_testkit import ORIGIN, kv_chaincode  # noqa: E402

from ciphercare.ledger.embedded import EmbeddedLedger  # noqa: E402


@pytest.fixture
def make_ledger(tmp_path: Path) -> Iterator[Callable[..., EmbeddedLedger]]:
    """Open embedded ledgers under tmp_path; all are closed at teardown."""
    opened: list[EmbeddedLedger] = []

    def _make(**kw: object) -> EmbeddedLedger:
        params: dict[str, object] = {"max_batch": 64, "max_wait_ms": 2.0}
        params.update(kw)
        led = EmbeddedLedger(tmp_path / "ledger.db", tmp_path / "checkpoint.key", ORIGIN, kv_chaincode, **params)
        opened.append(led)
        return led

    yield _make
    for led in opened:
        led.close()
