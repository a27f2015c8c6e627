"""The authorization matrix, run twice: with the development issuer's tokens and with real Keycloak tokens.

Every RPC x every persona x own/other target is one test per issuer; each must
match the one table in services/identity/matrix.py. The table's consistency with the
role table (services/identity/rules.py) is checked here too, without any server.
"""

from __future__ import annotations

import pytest
from testkit.matrix import World, run_case

from ciphercare.services.identity.matrix import (
    EXPECTED,
    METHODS,
    PERSONAS,
    TARGETS,
    expected,
    inconsistencies_with_rules,
    markdown_table,
)
from ciphercare.services.identity.rules import RULES

CASES = [(m, p, t) for m in METHODS for p in PERSONAS for t in TARGETS]


def _id(case: tuple[str, str, str]) -> str:
    method, persona, target = case
    return f"{method.rsplit('.', 1)[-1]}-{persona}-{target}"


def test_matrix_covers_every_rpc_role_and_target() -> None:
    assert len(EXPECTED) == len(METHODS) * len(PERSONAS) * len(TARGETS) == 28 * 6 * 2
    services = {m.split("/")[1] for m in METHODS}
    assert services == {"ciphercare.v1.ConsentService", "ciphercare.v1.AccessLogService",
                        "ciphercare.v1.ComplianceService", "ciphercare.v1.BreakGlassService",
                        "ciphercare.v1.FhirService"}
    table_methods = {m for m in RULES if m.split("/")[1] in services}
    assert table_methods == set(METHODS), "every RPC of these services must be in the matrix"


def test_matrix_is_consistent_with_the_role_table() -> None:
    assert inconsistencies_with_rules() == []


def test_matrix_renders_for_the_docs() -> None:
    table = markdown_table()
    assert table.count("\n") == len(METHODS) + 1 and "AccessLogService/Watch" in table


@pytest.mark.parametrize("issuer", ["dev", "keycloak"])
@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_matrix(issuer: str, case: tuple[str, str, str], request: pytest.FixtureRequest) -> None:
    method, persona, target = case
    world: World = request.getfixturevalue({"dev": "dev_world", "keycloak": "kc_world"}[issuer])
    observed = run_case(world, method, persona, target)
    want = expected(method, persona, target)
    assert observed is want, f"{issuer}: {method} as {persona} on {target} target: {observed}, table says {want}"
