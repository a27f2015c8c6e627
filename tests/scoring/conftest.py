"""Make the scoring test kit importable (--import-mode=importlib); appended so tests/conftest wins."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.append(_HERE)
