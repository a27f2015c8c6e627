"""SIGKILL mid-burst: every acknowledged transaction survives and the ledger still verifies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ciphercare.ledger.embedded.ledger import EmbeddedLedger
from ciphercare.ledger.embedded.verify import verify_ledger
from ciphercare.ledger.transparency.checkpoint import CheckpointSigner

HERE = Path(__file__).resolve().parent
CRASH_ORIGIN = "ciphercare.test/crash"


def _run_and_kill(data: Path, want_acks: int) -> list[tuple[str, int]]:
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "crash_worker.py"), str(data), "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    assert proc.stdout is not None
    acked: list[tuple[str, int]] = []
    deadline = time.monotonic() + 60
    try:
        line = proc.stdout.readline()
        assert line.strip() == "READY", (line, proc.stderr.read() if proc.poll() is not None else "")
        while len(acked) < want_acks and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            _, tx_id, seq = line.split()
            acked.append((tx_id, int(seq)))
    finally:
        proc.send_signal(signal.SIGKILL)
        rest, err = proc.communicate(timeout=30)
    # Lines already written before the kill were acknowledged too.
    for line in rest.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "ACK":
            acked.append((parts[1], int(parts[2])))
    assert proc.returncode == -signal.SIGKILL
    assert len(acked) >= want_acks, f"burst did not get going: {len(acked)} acks; stderr: {err[-2000:]}"
    return acked


class _NoContract:
    """Reopening only needs the store; no transaction is executed."""

    async def invoke(self, stub: object) -> None:
        raise RuntimeError("not used")


@pytest.mark.slow
def test_sigkill_mid_burst_loses_no_acknowledged_transaction(tmp_path: Path) -> None:
    acked = _run_and_kill(tmp_path, want_acks=400)
    vkey = CheckpointSigner.load(tmp_path / "checkpoint.key", CRASH_ORIGIN).vkey

    # Offline verification works directly on the crashed files (hot WAL, no clean shutdown).
    report = verify_ledger(tmp_path / "ledger.db", vkey)
    assert report.ok, report.first_error
    assert report.entries_checked >= len(acked)

    led = EmbeddedLedger(tmp_path / "ledger.db", tmp_path / "checkpoint.key", CRASH_ORIGIN, _NoContract())
    try:
        assert len({seq for _, seq in acked}) == len(acked), "two acks share a seq"
        assert led.size() > max(seq for _, seq in acked)
        for tx_id, seq in acked:
            assert led.entry(seq).tx_id == tx_id, f"acknowledged tx {tx_id} lost or moved from seq {seq}"
        size, root = led.size(), led.root()
        assert led.checkpoint().size == size and led.checkpoint().root_hash == root
    finally:
        led.close()
    assert verify_ledger(tmp_path / "ledger.db", vkey).ok
