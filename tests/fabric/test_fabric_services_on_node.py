"""The services run against ``ciphercare ledger serve`` over the gateway protocol: the whole demo, two processes."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

from testkit.fabric.gateway import serve_process
from testkit.process import CLI, free_port, start_cli_server


def test_demo_runs_with_the_services_on_a_separate_ledger_node(tmp_path: Path) -> None:
    node_dir, svc_dir = tmp_path / "node", tmp_path / "svc"
    with serve_process(node_dir) as target:
        issuer_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CIPHERCARE_")}
        env.update(
            CIPHERCARE_DATA_DIR=str(svc_dir),
            CIPHERCARE_GRPC_PORT="0",
            CIPHERCARE_WEB_ENABLED="false",
            CIPHERCARE_DEV_ISSUER_PORT=str(issuer_port),
            CIPHERCARE_LEDGER_BACKEND="fabric",
            CIPHERCARE_LEDGER_ENDPOINT=target,
            CIPHERCARE_LEDGER_MSP_DIR=str(node_dir / "msp"),
        )
        proc, port = start_cli_server(env, timeout_s=90)
        try:
            demo = subprocess.run(
                [*CLI, "demo", "--target", f"127.0.0.1:{port}"], env=env, capture_output=True, text=True, timeout=600
            )
        finally:
            proc.terminate()
            proc.wait(30)
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    assert "every proof verified" in demo.stdout
    assert not (svc_dir / "ledger.db").exists(), "the services must not keep a ledger of their own"
    with sqlite3.connect(node_dir / "ledger.db") as conn:
        count, msps = conn.execute("SELECT count(*), group_concat(DISTINCT creator_msp) FROM entries").fetchone()
    assert count >= 8
    assert {"PatientsMSP", "HospitalAMSP"} <= set(msps.split(","))
