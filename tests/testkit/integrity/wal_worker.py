"""Subprocess for the WAL byte-flip test: append entries, say DONE, then wait to be SIGKILLed.

Usage: PYTHONPATH=tests python -m testkit.integrity.wal_worker <data dir> <entries>
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from testkit.integrity import open_ledger  # noqa: E402
from testkit.ledger import ALICE  # noqa: E402


def main() -> None:
    data, n = Path(sys.argv[1]), int(sys.argv[2])
    led = open_ledger(data)
    # Keep every frame in the WAL: no automatic checkpoint into the main file.
    led._log._wconn.execute("PRAGMA wal_autocheckpoint = 0")  # noqa: SLF001 - test worker
    for start in range(0, n, 32):
        futs = [led.submit_future(ALICE, "kv", "Put", [f"k{i}", f"v{i}"]) for i in range(start, min(n, start + 32))]
        for f in futs:
            f.result(30)
    sys.stdout.write("DONE\n")
    sys.stdout.flush()
    time.sleep(600)


if __name__ == "__main__":
    main()
