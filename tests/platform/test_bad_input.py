"""Bad input gets a precise status over real gRPC: INVALID_ARGUMENT (never INTERNAL or UNKNOWN), bounded messages.

Each case is one found by throwing random and crafted requests at the API as an outside integrator.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from ciphercare.v1 import access_log_pb2, common_pb2, consent_pb2

INVALID = grpc.StatusCode.INVALID_ARGUMENT
SECONDS_OUT_OF_RANGE = [-62_135_596_801, 253_402_300_800, 2**63 - 1, -(2**63)]


def ts(seconds: int, nanos: int = 0) -> Timestamp:
    return Timestamp(seconds=seconds, nanos=nanos)


def refused(call, *args, code=INVALID) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as err:
        call(*args)
    assert err.value.code() == code, err.value.details()
    return err.value.details()


@pytest.mark.parametrize(("seconds", "nanos"), [(s, 0) for s in SECONDS_OUT_OF_RANGE] + [(0, -1), (0, 10**9)])
def test_out_of_range_timestamps_are_invalid_argument(env, seconds: int, nanos: int) -> None:
    hospital = env.hospital("hospital-a")
    bad = ts(seconds, nanos)
    before = env.app.ledger.size()
    message = refused(hospital.call, hospital.consent.Check, consent_pb2.CheckRequest(
        pid="pt-0042-ts", recipient_organization="hospital-a", purpose="TREAT", data_class="Observation", at=bad))
    assert "at" in message
    refused(env.patient("pt-0042-ts").grant, consent_pb2.GrantRequest(
        pid="pt-0042-ts", grantee_organization="hospital-a", decision=consent_pb2.CONSENT_DECISION_PERMIT,
        purposes=["TREAT"], data_classes=["Observation"], period=common_pb2.Period(start=bad)))
    officer = env.officer()
    for field in ("recorded_from", "recorded_to"):
        refused(officer.call, officer.access_log.Search, access_log_pb2.SearchRequest(**{field: bad}))
    assert env.app.ledger.size() == before


def _token(after: object, fingerprint: str) -> str:
    raw = json.dumps({"after": after, "q": fingerprint}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_forged_page_tokens_are_invalid_argument(env) -> None:
    officer = env.officer()
    hospital = env.hospital("hospital-a")
    for _ in range(3):
        hospital.record(access_log_pb2.RecordRequest(type="110110", subtype="read", action="R", purpose_of_use="TREAT",
                                                     pid="pt-0043-pg", outcome=access_log_pb2.ACCESS_OUTCOME_SUCCESS))
    page = officer.call(officer.access_log.Search, access_log_pb2.SearchRequest(pid="pt-0043-pg", page_size=1))
    real = page.next_page_token
    fingerprint = json.loads(base64.urlsafe_b64decode(real + "=" * (-len(real) % 4)))["q"]
    for after in (2**63, 10**400, True, 1.5, "1", -1, None):
        token = _token(after, fingerprint)
        refused(officer.call, officer.access_log.Search,
                access_log_pb2.SearchRequest(pid="pt-0043-pg", page_size=1, page_token=token))
    for raw in (f'{{"after":1e308,"q":"{fingerprint}"}}', f'{{"after":Infinity,"q":"{fingerprint}"}}'):
        token = base64.urlsafe_b64encode(raw.encode()).decode()
        refused(officer.call, officer.access_log.Search,
                access_log_pb2.SearchRequest(pid="pt-0043-pg", page_size=1, page_token=token))
    message = refused(officer.call, officer.access_log.Search,
                      access_log_pb2.SearchRequest(pid="pt-0043-pg", page_token="A" * 100_000))
    assert len(message) < 200


def _nested_provisions(depth: int) -> bytes:
    """A GrantRequest whose provisions nest ``depth`` deep (field 7, then ConsentProvision.provisions = 6)."""
    def length_delimited(tag: int, body: bytes) -> bytes:
        n, size = len(body), b""
        while True:
            byte = n & 0x7F
            n >>= 7
            size += bytes([byte | (0x80 if n else 0)])
            if not n:
                break
        return bytes([tag]) + size + body

    inner = b""
    for _ in range(depth):
        inner = length_delimited(0x32, inner)  # field 6, wire type 2
    return b"\x0a\x05pt-01" + length_delimited(0x3A, inner)  # pid, then field 7


@pytest.mark.parametrize("payload", [
    b"\xff\xff\xff\xff\xff\xff",
    b"\x0a\x03\xff\xfe\xfd",  # pid with invalid UTF-8
    _nested_provisions(150),
], ids=["random-bytes", "invalid-utf8", "nested-150"])
def test_undecodable_requests_are_invalid_argument(env, payload: bytes) -> None:
    token = env.token("patient", pid="pt-01")
    with grpc.insecure_channel(env.server.target) as channel:
        call = channel.unary_unary("/ciphercare.v1.ConsentService/Grant")
        with pytest.raises(grpc.RpcError) as err:
            call(payload, metadata=[("authorization", f"Bearer {token}")], timeout=10)
    assert err.value.code() == INVALID
    assert "not a valid protobuf message" in err.value.details()


def test_get_never_echoes_an_unbounded_event_id(env) -> None:
    officer = env.officer()
    request = access_log_pb2.GetAccessEventRequest(event_id="a" * 100_000)
    message = refused(officer.call, officer.access_log.Get, request)
    assert len(message) < 200 and "100000-character" in message


def test_a_token_living_beyond_the_maximum_is_refused(env) -> None:
    token = env.issuer.issue(subject="long-lived", roles=["hospital"], org="hospital-a", pid=None,
                             ttl_s=10 * 365 * 24 * 3600)
    client = env.client(token)
    message = refused(client.check, "pt-1", "hospital-a", "TREAT", "Observation",
                      code=grpc.StatusCode.UNAUTHENTICATED)
    assert "oidc_max_token_lifetime_s" in message


def test_times_have_four_digit_years() -> None:
    from ciphercare.consent.model import format_time
    from ciphercare.services.platform.convert import iso_from_timestamp, rfc3339_ms

    early = datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert format_time(early) == "0999-01-02T03:04:05Z"
    assert rfc3339_ms(early) == "0999-01-02T03:04:05.000Z"
    assert iso_from_timestamp(ts(-62_135_596_800)) == "0001-01-01T00:00:00.000Z"
