"""``ciphercare ledger serve`` keeps the same integrity guarantees as ``ciphercare up``.

The node (what the chart runs as the ledger StatefulSet, and what Fabric deployments' services talk to) opens
its ledger with the witness policy, the published-checkpoint file and the key-mode check, and serves
``/metrics``: every checkpoint it signs reaches the witness, the witness lag is visible, and a node started
on a log rolled back behind a published checkpoint refuses to start.
"""

from __future__ import annotations

import asyncio
import sqlite3
import urllib.request
from pathlib import Path

import pytest
from testkit.fabric.gateway import make_plan, run_plan_python, serve_process
from testkit.fabric.gateway_plan import PRINCIPALS, build_steps
from testkit.faults import wait_until
from testkit.integrity import WitnessProcess

from ciphercare.ledger.transparency.checkpoint import CheckpointSigner


def _metrics(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=20) as page:
        text = page.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_node_submits_checkpoints_to_its_witnesses_and_shows_the_lag(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    key_path = keys / "checkpoint.pem"
    vkey = CheckpointSigner(key_path, "ciphercare.local/ledger").vkey
    witness = WitnessProcess(tmp_path / "witness", "witness1.test", [vkey])
    try:
        policy = tmp_path / "policy.txt"
        policy.write_text(f"log {vkey}\nwitness {witness.vkey} {witness.url}\nquorum 1\n")
        first: list[str] = []
        env = {"CIPHERCARE_CHECKPOINT_KEY_PATH": str(key_path), "CIPHERCARE_WITNESS_POLICY": str(policy),
               "CIPHERCARE_WITNESS_WAIT_MS": "0"}
        with serve_process(tmp_path / "node", env, first) as target:
            assert "/metrics on " in first[0], first[0]
            url = "http://" + first[0].rsplit("/metrics on ", 1)[1].strip() + "/metrics"
            steps = build_steps()[:12]
            plan = make_plan(tmp_path / "node" / "msp", steps, PRINCIPALS)
            outcomes = asyncio.run(run_plan_python(plan, target))
            committed = sum(1 for st, o in zip(steps, outcomes, strict=True) if st["op"] == "submit" and o["ok"])
            assert committed >= 3
            # The witness cosigns the node's checkpoints: the lag comes back to 0 at the full tree size.
            assert wait_until(lambda: _metrics(url).get("ciphercare_witness_lag_entries") == 0
                              and _metrics(url).get("ciphercare_ledger_tree_size", 0) >= committed), _metrics(url)
            shown = _metrics(url)
            assert shown["ciphercare_ledger_up"] == 1
    finally:
        witness.stop()
    # The witness's own state holds the size it cosigned: it saw this node's log.
    state = " ".join(p.read_text(errors="replace") for p in (tmp_path / "witness").rglob("*") if p.is_file())
    assert "ciphercare.local/ledger" in state


def test_node_refuses_to_start_on_a_log_rolled_back_behind_a_published_checkpoint(tmp_path: Path) -> None:
    data = tmp_path / "node"
    with serve_process(data) as target:
        steps = build_steps()[:12]
        asyncio.run(run_plan_python(make_plan(data / "msp", steps, PRINCIPALS), target))
    # The operator restores an older copy of the database: here, the same file with its newest entries cut.
    db = data / "ledger.db"
    assert db.exists(), sorted(p.name for p in data.iterdir())
    with sqlite3.connect(db) as conn:
        (size,) = conn.execute("SELECT COUNT(*) FROM entries").fetchone()
        assert size >= 3
        conn.execute("DELETE FROM entries WHERE seq >= ?", (size - 2,))
        conn.execute("DELETE FROM checkpoints WHERE size > ?", (size - 2,))
    conn.close()
    with pytest.raises(RuntimeError, match="did not start") as refused:
        with serve_process(data):
            pass
    said = str(refused.value)
    assert "was published" in said and "Refusing to start" in said, said
    for line in said.split("' ", 1)[1].splitlines():  # everything on stderr is one readable line or JSON
        assert line.startswith(("{", "ciphercare: ")), line
