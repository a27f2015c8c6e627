"""Bad tokens from (or forged on) a real Keycloak are refused, and every refusal that named a patient is logged.

The ciphercare server under test trusts only the Keycloak realm (configuration
only: ``dev_issuer_enabled=False``, ``oidc_issuer`` = the realm URL). Each bad
token is a real Keycloak token that is expired, for another API, issued under
another issuer URL, from another realm (unknown ``kid``), an ID token, or a real
token that was tampered with or re-headed as ``alg: none``.
"""

from __future__ import annotations

import base64
import itertools
import json
import time
from collections.abc import Callable

import grpc
import pytest
from testkit.keycloak import (
    EXPIRY_PROBE,
    NO_AUDIENCE,
    OTHER_API,
    ROGUE,
    ROGUE_REALM,
    KeycloakTokens,
    claims_of,
    header_of,
)

from ciphercare.v1 import access_log_pb2, access_log_pb2_grpc, consent_pb2, consent_pb2_grpc

_n = itertools.count()


def _b64(obj: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()).rstrip(b"=").decode()


def tampered(token: str) -> str:
    """A real token whose payload now claims another organisation; the signature is the original."""
    header, _, signature = token.split(".")
    claims = claims_of(token)
    claims["org"] = "hospital-b"
    return f"{header}.{_b64(claims)}.{signature}"


def unsigned(token: str) -> str:
    """A real token's claims under ``alg: none`` with no signature."""
    header = {**header_of(token), "alg": "none"}
    return f"{_b64(header)}.{token.split('.')[1]}."


def expired(tokens: KeycloakTokens) -> str:
    token = tokens.client_credentials(EXPIRY_PROBE, fresh=True)
    claims = claims_of(token)
    # Keycloak reads its clock twice (``iat``, then ``exp`` = now + lifespan), in whole seconds: a token whose
    # issue straddles a second boundary says 2 (seen once in CI). Anything longer is a misconfigured client.
    assert claims["exp"] - claims["iat"] in (1, 2), "the expiry-probe client issues one-second tokens"
    time.sleep(max(0.0, claims["exp"] + 1.0 + 1.5 - time.time()))  # past exp + the server's 1 s leeway
    return token


BAD_TOKENS: dict[str, tuple[Callable[[KeycloakTokens], str], str]] = {
    "expired": (expired, "token expired"),
    "wrong-audience": (lambda t: t.client_credentials(OTHER_API), "wrong audience"),
    "no-audience": (lambda t: t.client_credentials(NO_AUDIENCE), "token has no aud claim"),
    "wrong-issuer": (lambda t: t.client_credentials("hospital-a", host="localhost"), "wrong issuer"),
    "tampered": (lambda t: tampered(t.client_credentials("hospital-a")), "bad signature"),
    "unsigned": (lambda t: unsigned(t.client_credentials("hospital-a")), "unsupported alg 'none'"),
    "unknown-kid": (lambda t: t.client_credentials(ROGUE, realm=ROGUE_REALM), "unknown signing key"),
    "id-token": (lambda t: t.login("patient-1001")["id_token"], "wrong audience"),
    "refresh-token": (lambda t: t.login("patient-1001")["refresh_token"], "symmetric (HMAC)"),
}


def _officer_denied_events(server_target: str, tokens: KeycloakTokens, pid: str) -> list[access_log_pb2.AccessEvent]:
    """The denied events about ``pid``, as the compliance officer finds them.

    The refusal's event is on the ledger before the refusal is sent; the search
    index follows the ledger asynchronously, so poll it for a few seconds.
    """
    request = access_log_pb2.SearchRequest(pid=pid, outcome=access_log_pb2.ACCESS_OUTCOME_DENIED)
    deadline = time.monotonic() + 10.0
    with grpc.insecure_channel(server_target) as channel:
        stub = access_log_pb2_grpc.AccessLogServiceStub(channel)
        while True:
            meta = (("authorization", f"Bearer {tokens.user('officer', 'ciphercare-console')}"),)
            events = list(stub.Search(request, metadata=meta, timeout=15).events)
            if events or time.monotonic() > deadline:
                return events
            time.sleep(0.1)


def _check(server_target: str, token: str, pid: str) -> grpc.RpcError:
    with grpc.insecure_channel(server_target) as channel:
        stub = consent_pb2_grpc.ConsentServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.Check(consent_pb2.CheckRequest(pid=pid, recipient_organization="hospital-a", purpose="TREAT",
                                                data_class="Observation"),
                       metadata=(("authorization", f"Bearer {token}"),), timeout=15)
    return err.value


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
def test_bad_keycloak_tokens_are_unauthenticated_and_logged(kind: str, kc_server, kc_tokens: KeycloakTokens) -> None:
    make, reason = BAD_TOKENS[kind]
    token = make(kc_tokens)
    pid = f"pt-rej-{next(_n)}-{kind}"
    error = _check(kc_server.target, token, pid)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error.details()
    assert reason in error.details()
    assert token not in error.details() and claims_of(token)["sub"] not in error.details()
    # An unverified caller writes nothing to the ledger: its refusal goes to the rate-limited security log
    # (docs/THREATS.md, "Anonymous caller"), never into the patient's history.
    assert _officer_denied_events(kc_server.target, kc_tokens, pid) == []


def test_valid_token_without_a_role_is_permission_denied_and_logged(kc_server, kc_tokens: KeycloakTokens) -> None:
    token = kc_tokens.user("visitor")
    claims = claims_of(token)
    ciphercare_roles = {"patient", "clinician", "hospital", "compliance-officer", "admin"}
    assert not ciphercare_roles & set(claims["realm_access"]["roles"])
    pid = f"pt-rej-{next(_n)}-no-role"
    error = _check(kc_server.target, token, pid)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "may not call /ciphercare.v1.ConsentService/Check" in error.details()
    events = _officer_denied_events(kc_server.target, kc_tokens, pid)
    assert len(events) == 1
    assert events[0].outcome_description == "permission-denied"
    assert events[0].agent.subject == claims["sub"] and events[0].agent.organization == "hospital-a"
    assert events[0].agent.client_id == "ciphercare-portal"


def test_rejection_without_a_patient_leaves_no_event(kc_server, kc_tokens: KeycloakTokens) -> None:
    with grpc.insecure_channel(kc_server.target) as channel:
        stub = access_log_pb2_grpc.AccessLogServiceStub(channel)
        before = stub.GetCheckpoint(
            access_log_pb2.GetCheckpointRequest(),
            metadata=(("authorization", f"Bearer {kc_tokens.user('officer', 'ciphercare-console')}"),), timeout=15,
        ).checkpoint.tree_size
        with pytest.raises(grpc.RpcError) as err:
            stub.GetCheckpoint(access_log_pb2.GetCheckpointRequest(),
                               metadata=(("authorization", f"Bearer {kc_tokens.user('visitor')}"),), timeout=15)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        after = stub.GetCheckpoint(
            access_log_pb2.GetCheckpointRequest(),
            metadata=(("authorization", f"Bearer {kc_tokens.user('officer', 'ciphercare-console')}"),), timeout=15,
        ).checkpoint.tree_size
    assert after == before
