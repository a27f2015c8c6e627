"""100 random byte flips in ledger.db and 100 in the live WAL of a SIGKILLed node: none silently accepted.

Each flip is made on a fresh copy of one small ledger. Outcome per flip:

* ``verify: <kind>`` -- ``ledger verify`` fails and names the damage (never a traceback);
* ``no change`` -- verify passes AND every row of every table equals the unflipped copy's
  (the flip hit free space, slack in a page, or a stale WAL frame);
* ``ACCEPTED`` -- verify passes on changed content or a log that lost acknowledged entries: must never happen.

For every flip the node start is tried too (``start refused`` / ``start ok``); the table is printed (-s).
"""

from __future__ import annotations

import random
import shutil
from collections import Counter
from pathlib import Path

import pytest
from testkit.integrity import build, build_killed, copy_ledger, logical_dump, open_ledger

from ciphercare.ledger.api import LedgerError
from ciphercare.ledger.embedded.checkpoint_log import iter_reverse
from ciphercare.ledger.embedded.verify import verify_ledger
from ciphercare.ledger.transparency.checkpoint import CheckpointSigner

FLIPS = 100
SEED = 20261203


def _flip_run(src: Path, target: str, vkey: str, work: Path, label: str) -> Counter[str]:
    reference = copy_ledger(src, work / "reference")
    expected = logical_dump(reference / "ledger.db")
    published = next(iter_reverse(src / "ledger.db.checkpoints"))
    length = (src / target).stat().st_size
    rng = random.Random(f"{SEED}-{label}")
    table: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for i in range(FLIPS):
        copy = copy_ledger(src, work / f"flip-{i}")
        pos = rng.randrange(length)
        bit = 1 << rng.randrange(8)
        with open(copy / target, "r+b") as f:
            f.seek(pos)
            byte = f.read(1)[0]
            f.seek(pos)
            f.write(bytes([byte ^ bit]))
        report = verify_ledger(copy / "ledger.db", vkey)
        if report.ok:
            assert report.size >= published.size, "verify passed a log shorter than its published checkpoint"
            changed = logical_dump(copy / "ledger.db") != expected
            outcome = "ACCEPTED (content changed)" if changed else "no change"
        else:
            assert report.first_error is not None
            outcome = f"verify: {report.first_error.kind}"
            examples.setdefault(outcome, f"offset {pos}: {report.first_error}")
        try:
            open_ledger(copy).close()
            start = "start ok"
        except (LedgerError, ValueError, OSError, Exception) as exc:  # noqa: BLE001 - any refusal counts
            start = "start refused"
            examples.setdefault(f"{outcome} / {start}", f"offset {pos}: {type(exc).__name__}: {exc}"[:300])
        table[f"{outcome} / {start}"] += 1
        shutil.rmtree(copy)
    print(f"\n{label}: {FLIPS} random bit flips in {target} ({length} bytes), seed {SEED}")
    print(f"  {'outcome':<45} {'flips':>5}")
    for outcome, count in sorted(table.items()):
        print(f"  {outcome:<45} {count:>5}")
    for outcome, example in sorted(examples.items()):
        print(f"  e.g. {outcome}: {example[:200]}")
    return table


def _vkey(data: Path) -> str:
    from testkit.ledger import ORIGIN

    return CheckpointSigner.load(data / "checkpoint.key", ORIGIN).vkey


def test_byte_flips_in_a_cleanly_closed_ledger_db(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    vkey = build(src, 300)
    assert not (src / "ledger.db-wal").exists() or (src / "ledger.db-wal").stat().st_size == 0
    table = _flip_run(src, "ledger.db", vkey, tmp_path, "ledger.db")
    accepted = sum(n for k, n in table.items() if k.startswith("ACCEPTED"))
    assert accepted == 0, table
    assert sum(n for k, n in table.items() if k.startswith("verify:")) >= FLIPS // 2, table


def test_byte_flips_in_the_live_wal_of_a_killed_node(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    build_killed(src, 300)
    wal = src / "ledger.db-wal"
    if not wal.exists() or wal.stat().st_size == 0:
        pytest.fail("the killed node left no live WAL")
    table = _flip_run(src, "ledger.db-wal", _vkey(src), tmp_path, "ledger.db-wal")
    accepted = sum(n for k, n in table.items() if k.startswith("ACCEPTED"))
    assert accepted == 0, table
    # A flip in a live frame makes SQLite drop it and every later frame: acknowledged entries vanish,
    # which verify reports as a rollback against the published checkpoints and the node refuses to start.
    assert table.get("verify: rolled-back / start refused", 0) >= FLIPS // 2, table
