"""Every line `ciphercare up` writes to stderr is one JSON object; no library floods it; roles are readable."""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path

from testkit.process import free_port, start_cli_server

from ciphercare.services.platform.logs import JsonFormatter


def test_up_writes_json_lines_only(tmp_path: Path) -> None:
    env = dict(os.environ, CIPHERCARE_DATA_DIR=str(tmp_path / "data"), CIPHERCARE_GRPC_PORT="0",
               CIPHERCARE_DEV_ISSUER_PORT=str(free_port()), CIPHERCARE_WEB_ENABLED="false")
    proc, _ = start_cli_server(env)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines, "ciphercare up logged nothing"
    for line in lines:
        entry = json.loads(line)  # raises on any plain-text line (Alembic, the Fabric shim's basicConfig)
        assert entry["level"] != "debug", line
    assert any(json.loads(line)["msg"] == "store check" for line in lines)


def test_short_collections_of_codes_are_logged_as_lists_and_objects_by_type() -> None:
    record = logging.LogRecord("ciphercare.test", logging.INFO, __file__, 1, "refused", (), None)
    record.roles = frozenset({"patient", "clinician"})
    record.document = {"name": "Jane Canary"}
    entry = json.loads(JsonFormatter().format(record))
    assert entry["roles"] == ["clinician", "patient"]
    assert entry["document"] == "<dict>"  # never str(value): an object cannot dump its state
