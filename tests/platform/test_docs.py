"""The docs claim only what tests show: every test a document cites exists, and no link leaves the repository.

docs/THREATS.md and the other documents name the test that shows each claim (``dir/test_file.py::test_name``,
relative to ``tests/``, or ``::test_name`` for another test of the file named just before on the same line).
A renamed or deleted test would leave a claim without its evidence: this test fails instead.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_REF = re.compile(r"`(?:tests/)?((?:[a-z_]+/)*test_[a-z0-9_]+\.py)(?:::([A-Za-z0-9_]+))?|`::([A-Za-z0-9_]+)")
_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _test_file(name: str) -> Path | None:
    direct = TESTS / name
    if direct.is_file():
        return direct
    if "/" not in name:  # a bare file name: unique under tests/
        found = sorted(TESTS.rglob(name))
        return found[0] if len(found) == 1 else None
    return None


def _defines(path: Path, test: str) -> bool:
    # a function, or a module-level name bound to a test case (a hypothesis state machine's TestCase)
    pattern = rf"^(?:(?:async )?def {re.escape(test)}\(|{re.escape(test)} = )"
    return re.search(pattern, path.read_text(encoding="utf-8"), re.M) is not None


def test_every_cited_test_exists() -> None:
    missing: list[str] = []
    cited = 0
    for doc in DOCS:
        for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            current: Path | None = None
            for match in _REF.finditer(line):
                file_name, test, continued = match.groups()
                where = f"{doc.relative_to(ROOT)}:{number}"
                if file_name is not None:
                    current = _test_file(file_name)
                    cited += 1
                    if current is None:
                        missing.append(f"{where}: no test file {file_name}")
                        continue
                name = test or continued
                if name is None:
                    continue
                if current is None:
                    missing.append(f"{where}: ::{name} follows no test file on its line")
                elif not _defines(current, name):
                    missing.append(f"{where}: {current.relative_to(TESTS)} has no {name}")
    assert cited > 50, f"only {cited} test citations found: the pattern no longer matches the docs"
    assert not missing, "\n".join(missing)


def test_no_document_links_outside_the_repository() -> None:
    bad: list[str] = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for target in _LINK.findall(text):
            if re.match(r"^[a-z]+:", target):
                bad.append(f"{doc.relative_to(ROOT)}: external link {target}")
                continue
            resolved = (doc.parent / target).resolve()
            if not resolved.is_relative_to(ROOT):
                bad.append(f"{doc.relative_to(ROOT)}: {target} leaves the repository")
            elif not resolved.exists():
                bad.append(f"{doc.relative_to(ROOT)}: {target} does not exist")
        if "../shared" in text:
            bad.append(f"{doc.relative_to(ROOT)}: names a folder outside the repository")
    assert not bad, "\n".join(bad)
