"""Fixtures for the integrity tests (the operator as adversary); makes the ledger and integrity kits importable."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
for _dir in (str(_HERE), str(_HERE.parent / "ledger")):
    if _dir not in sys.path:
        sys.path.insert(0, _dir)
