"""The code stays arranged by flow: no folder holds more than 12 modules of its own or 20 % of the code."""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_MODULES = 12
MAX_SHARE = 0.20


def _python_files() -> list[Path]:
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True)
    generated = ("_pb2.py", "_pb2_grpc.py")
    return [Path(p) for p in tracked.stdout.split() if not p.endswith(generated) and "/migrations/versions/" not in p]


def layout() -> tuple[Counter[str], Counter[str], int]:
    modules: Counter[str] = Counter()
    lines: Counter[str] = Counter()
    total = 0
    for path in _python_files():
        count = len((ROOT / path).read_text(encoding="utf-8").splitlines())
        folder = str(path.parent)
        modules[folder] += 1
        lines[folder] += count
        total += count
    return modules, lines, total


def test_no_folder_holds_more_than_12_modules_or_a_fifth_of_the_code() -> None:
    modules, lines, total = layout()
    crowded = {folder: n for folder, n in modules.items() if n > MAX_MODULES}
    heavy = {folder: round(n / total, 3) for folder, n in lines.items() if n / total > MAX_SHARE}
    assert not crowded, f"folders with more than {MAX_MODULES} modules of their own: {crowded}"
    assert not heavy, f"folders holding more than {MAX_SHARE:.0%} of the non-generated lines: {heavy}"


def test_each_flow_has_a_room_with_its_servicer() -> None:
    for flow in ("consent", "audit", "scoring"):
        assert (ROOT / "services" / flow / "servicer.py").is_file(), flow
