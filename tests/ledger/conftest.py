"""Fixtures for the ledger tests; also makes ledger_testkit importable (pytest uses --import-mode=importlib)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from testkit.ledger import ORIGIN, kv_chaincode

from ciphercare.ledger.embedded.ledger import EmbeddedLedger


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
