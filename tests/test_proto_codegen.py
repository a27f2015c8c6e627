"""The checked-in generated code must be exactly what proto/generate.py produces now."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("generate", ROOT / "proto" / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fresh = module.generate(tmp_path)
    assert fresh, "protoc produced nothing"
    checked_in = sorted((ROOT / "proto" / "ciphercare" / "v1").glob("*_pb2*.py*"))
    assert [p.name for p in fresh] == [p.name for p in checked_in]
    stale = [p.name for p in fresh if p.read_bytes() != (ROOT / "proto" / "ciphercare" / "v1" / p.name).read_bytes()]
    assert not stale, f"regenerate with `python proto/generate.py`; stale: {stale}"


def test_every_rpc_has_an_access_rule() -> None:
    from ciphercare.services.identity.rules import RULES
    from ciphercare.v1 import access_log_pb2, breakglass_pb2, compliance_pb2, consent_pb2, fhir_pb2

    for module in (consent_pb2, access_log_pb2, compliance_pb2, breakglass_pb2, fhir_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                assert f"/{service.full_name}/{method.name}" in RULES
