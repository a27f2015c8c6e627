"""TokenVerifier + JwksCache against a real DevIssuerServer on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from testkit.identity import AUDIENCE, FakeClock, StaticJwks, b64url, b64url_json, make_verifier, split

from ciphercare.ledger.api import Principal
from ciphercare.services.identity.devissuer import DevIssuer, DevIssuerServer
from ciphercare.services.identity.jwks import JwksCache, parse_jwks
from ciphercare.services.identity.tokens import AuthError, TokenVerifier
from ciphercare.services.platform.settings import load_settings


def rejects(verifier: TokenVerifier, token: str, fragment: str) -> AuthError:
    with pytest.raises(AuthError) as info:
        verifier.verify(token)
    assert info.value.code == "UNAUTHENTICATED"
    assert fragment in info.value.message, info.value.message
    return info.value


# ----------------------------------------------------------------- happy path


def test_valid_token_gives_principal(verifier: TokenVerifier, dev_issuer: DevIssuer) -> None:
    token = dev_issuer.issue("alice", ["clinician"], "hospital-a", pid="P-001", client_id="portal")
    principal = verifier.verify(token)
    assert principal == Principal(
        subject="alice", org="hospital-a", roles=frozenset({"clinician"}), client_id="portal", pid="P-001"
    )


def test_keycloak_default_roles_ignored_and_multiple_roles_kept(
    verifier: TokenVerifier, dev_issuer: DevIssuer
) -> None:
    token = dev_issuer.issue("bob", ["hospital", "admin", "not-a-role"], "hospital-b")
    _, claims, _ = split(token)
    assert "offline_access" in claims["realm_access"]["roles"]
    assert verifier.verify(token).roles == frozenset({"hospital", "admin"})


def test_roles_outside_realm_access_are_ignored(verifier: TokenVerifier, dev_issuer: DevIssuer) -> None:
    token = dev_issuer.issue(
        "carol",
        ["patient"],
        None,
        extra_claims={
            "roles": ["admin"],
            "groups": ["admin"],
            "resource_access": {AUDIENCE: {"roles": ["admin"]}, "account": {"roles": ["hospital"]}},
        },
    )
    principal = verifier.verify(token)
    assert principal.roles == frozenset({"patient"})
    assert principal.org == ""
    assert principal.pid is None


def test_audience_may_be_a_list(verifier: TokenVerifier, dev_issuer: DevIssuer) -> None:
    token = dev_issuer.issue("dan", ["patient"], "x", extra_claims={"aud": ["account", AUDIENCE]})
    assert verifier.verify(token).subject == "dan"


def test_expired_within_leeway_is_accepted(verifier: TokenVerifier, dev_issuer: DevIssuer) -> None:
    token = dev_issuer.issue("erin", ["patient"], "x", ttl_s=-10)  # leeway is 30 s
    assert verifier.verify(token).subject == "erin"


def test_token_shape_is_keycloaks(dev_issuer: DevIssuer) -> None:
    header, claims, _ = split(dev_issuer.issue("frank", ["clinician"], "h", pid="P-9"))
    assert header == {"alg": "RS256", "typ": "JWT", "kid": dev_issuer.kid}
    # Keycloak 26's user access token (tests/keycloak compares the shapes with a real Keycloak).
    assert list(claims)[:9] == ["exp", "iat", "auth_time", "jti", "iss", "aud", "sub", "typ", "azp"]
    assert claims["typ"] == "Bearer" and claims["scope"] == "openid email profile"
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["iss"] == dev_issuer.issuer and claims["aud"] == [AUDIENCE, "account"]
    assert claims["preferred_username"] == "frank" and claims["pid"] == "P-9" and claims["org"] == "h"
    assert "clinician" in claims["realm_access"]["roles"]


# ----------------------------------------------------------------- rejections


def test_expired(verifier: TokenVerifier, dev_issuer: DevIssuer) -> None:
    rejects(verifier, dev_issuer.issue("a", ["patient"], "x", ttl_s=-120), "token expired")


def test_not_yet_valid_nbf(verifier: TokenVerifier, dev_issuer: DevIssuer) -> None:
    token = dev_issuer.issue("a", ["patient"], "x", extra_claims={"nbf": int(time.time()) + 600})
    rejects(verifier, token, "not yet valid (nbf")


def test_not_yet_valid_iat(verifier: TokenVerifier, dev_issuer: DevIssuer) -> None:
    token = dev_issuer.issue("a", ["patient"], "x", extra_claims={"iat": int(time.time()) + 600})
    rejects(verifier, token, "not yet valid (iat")


def test_wrong_audience(verifier: TokenVerifier, dev_issuer: DevIssuer) -> None:
    rejects(
        verifier, dev_issuer.issue("a", ["patient"], "x", extra_claims={"aud": "account"}), "wrong audience"
    )
    rejects(
        verifier, dev_issuer.issue("a", ["patient"], "x", extra_claims={"aud": ["a", "b"]}), "wrong audience"
    )


def test_wrong_issuer(verifier: TokenVerifier, dev_issuer: DevIssuer) -> None:
    token = dev_issuer.issue("a", ["patient"], "x", extra_claims={"iss": "http://127.0.0.1:1/realms/evil"})
    rejects(verifier, token, "wrong issuer")


def test_tampered_payload(verifier: TokenVerifier, dev_issuer: DevIssuer) -> None:
    token = dev_issuer.issue("mallory", ["patient"], "x")
    h, p, s = token.split(".")
    _, claims, _ = split(token)
    claims["realm_access"] = {"roles": ["admin"]}
    rejects(verifier, f"{h}.{b64url_json(claims)}.{s}", "bad signature")


def test_tampered_signature(verifier: TokenVerifier, dev_issuer: DevIssuer) -> None:
    h, p, s = dev_issuer.issue("a", ["patient"], "x").split(".")
    flipped = s[:20] + ("A" if s[20] != "A" else "B") + s[21:]
    rejects(verifier, f"{h}.{p}.{flipped}", "bad signature")


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none(verifier: TokenVerifier, dev_issuer: DevIssuer, alg: str) -> None:
    _, claims, _ = split(dev_issuer.issue("a", ["admin"], "x"))
    header = {"alg": alg, "typ": "JWT", "kid": dev_issuer.kid}
    rejects(verifier, f"{b64url_json(header)}.{b64url_json(claims)}.", "unsupported alg 'none'")


def test_hs256_signed_with_rsa_public_key_pem(verifier: TokenVerifier, dev_issuer: DevIssuer) -> None:
    verifier.verify(
        dev_issuer.issue("warm", ["patient"], "x")
    )  # the key is cached: the attack has its best shot
    pem = dev_issuer.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _, claims, _ = split(dev_issuer.issue("a", ["admin"], "x"))
    signing_input = (
        f"{b64url_json({'alg': 'HS256', 'typ': 'JWT', 'kid': dev_issuer.kid})}.{b64url_json(claims)}"
    )
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    rejects(verifier, f"{signing_input}.{b64url(mac)}", "symmetric (HMAC) algorithms are not accepted")


def test_alg_not_configured(dev_server: DevIssuerServer, dev_issuer: DevIssuer) -> None:
    only_es = TokenVerifier(dev_server.issuer_url, AUDIENCE, JwksCache(dev_server.jwks_url, 300), ["ES256"])
    rejects(only_es, dev_issuer.issue("a", ["patient"], "x"), "unsupported alg 'RS256'")


def test_missing_sub_and_exp(verifier: TokenVerifier, dev_issuer: DevIssuer) -> None:
    rejects(
        verifier,
        dev_issuer.issue("a", ["patient"], "x", extra_claims={"sub": None}),
        "missing required claim 'sub'",
    )
    rejects(
        verifier,
        dev_issuer.issue("a", ["patient"], "x", extra_claims={"exp": None}),
        "missing required claim 'exp'",
    )
    rejects(
        verifier, dev_issuer.issue("a", ["patient"], "x", extra_claims={"sub": ""}), "sub must be a non-empty"
    )
    rejects(
        verifier,
        dev_issuer.issue("a", ["patient"], "x", extra_claims={"exp": "9999999999"}),
        "exp is not a number",
    )


@pytest.mark.parametrize("typ", ["ID", "Refresh"])
def test_id_and_refresh_tokens_rejected(verifier: TokenVerifier, dev_issuer: DevIssuer, typ: str) -> None:
    rejects(
        verifier, dev_issuer.issue("a", ["patient"], "x", extra_claims={"typ": typ}), "not an access token"
    )


@pytest.mark.parametrize(
    ("token", "fragment"),
    [
        ("", "empty"),
        ("abc", "three base64url parts"),
        ("a.b.c.d.e", "JWE"),
        ("a.b", "three base64url parts"),
        ("!!!.e30.abc", "three base64url parts"),
        (f"{b64url(b'not json')}.e30.abc", "header is not a valid JSON object"),
        (f"{b64url(b'[1]')}.e30.abc", "header is not a JSON object"),
        (b64url(b'{"alg":"RS256","alg":"RS256","kid":"k"}') + ".e30.abc", "header is not a valid JSON"),
        (f"{b64url_json({'alg': 'RS256'})}.e30.abc", "header has no kid"),
        (f"{b64url_json({'kid': 'k'})}.e30.abc", "header has no alg"),
        (f"{b64url_json({'alg': 'RS256', 'kid': 'k', 'crit': ['exp']})}.e30.abc", "critical header"),
        (f"{b64url_json({'alg': 'RS256', 'kid': 'k'})}.e30.", "empty signature"),
        ("x" * 20000, "longer than"),
    ],
)
def test_malformed(verifier: TokenVerifier, token: str, fragment: str) -> None:
    rejects(verifier, token, fragment)
    assert verifier.jwks.fetch_count == 0  # nothing malformed reaches the network


def test_non_canonical_base64_rejected(verifier: TokenVerifier, dev_issuer: DevIssuer) -> None:
    h, p, s = dev_issuer.issue("a", ["patient"], "x").split(".")
    # 256-byte signature -> 342 chars with 4 spare bits in the last char; setting them keeps the bytes.
    last = s[-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = (
        alphabet[alphabet.index(last) | 1]
        if alphabet.index(last) % 2 == 0
        else alphabet[alphabet.index(last) & ~1]
    )
    rejects(verifier, f"{h}.{p}.{s[:-1]}{twin}", "canonical")


# ------------------------------------------------------------- JWKS behaviour


def test_unknown_kid_refetches_exactly_once_then_rejects(
    verifier: TokenVerifier, dev_server: DevIssuerServer, dev_issuer: DevIssuer, clock: FakeClock
) -> None:
    verifier.verify(dev_issuer.issue("a", ["patient"], "x"))
    assert verifier.jwks.fetch_count == 1
    clock.advance(11)  # past the 10 s refetch rate limit
    before = dev_server.request_count("jwks")
    h, p, s = dev_issuer.issue("a", ["patient"], "x").split(".")
    forged = f"{b64url_json({'alg': 'RS256', 'typ': 'JWT', 'kid': 'no-such-kid'})}.{p}.{s}"
    rejects(verifier, forged, "unknown signing key")
    assert dev_server.request_count("jwks") == before + 1
    assert verifier.jwks.fetch_count == 2
    # A flood of unknown kids inside the rate-limit window does not touch the IdP again.
    for i in range(50):
        other = f"{b64url_json({'alg': 'RS256', 'typ': 'JWT', 'kid': f'bad-{i}'})}.{p}.{s}"
        rejects(verifier, other, "unknown signing key")
    assert dev_server.request_count("jwks") == before + 1
    # ...and the known kid keeps verifying without any network call.
    verifier.verify(dev_issuer.issue("a", ["patient"], "x"))
    assert dev_server.request_count("jwks") == before + 1


def test_cached_kid_never_hits_network(
    verifier: TokenVerifier, dev_server: DevIssuerServer, dev_issuer: DevIssuer
) -> None:
    token = dev_issuer.issue("a", ["patient"], "x")
    verifier.verify(token)
    before = dev_server.request_count("jwks")
    for _ in range(100):
        verifier.verify(token)
    assert dev_server.request_count("jwks") == before


def test_key_rotation_picked_up_by_refetch(fresh_server: DevIssuerServer, clock: FakeClock) -> None:
    issuer = fresh_server.issuer
    verifier = make_verifier(fresh_server, clock)
    old_token = issuer.issue("a", ["patient"], "x")
    verifier.verify(old_token)
    old_kid = issuer.kid
    new_kid = issuer.rotate_key()
    assert new_kid != old_kid
    new_token = issuer.issue("b", ["clinician"], "y")
    assert split(new_token)[0]["kid"] == new_kid
    # Within the rate-limit window right after the first fetch, the new kid is not fetched yet.
    rejects(verifier, new_token, "unknown signing key")
    assert verifier.jwks.fetch_count == 1
    clock.advance(10)
    assert verifier.verify(new_token).subject == "b"
    assert verifier.jwks.fetch_count == 2
    assert verifier.verify(old_token).subject == "a"  # retired key still published
    assert verifier.jwks.kids() == {old_kid, new_kid}
    # The rotated key is persisted: a restarted issuer signs with it.
    assert DevIssuer(issuer.key_path, issuer.issuer, AUDIENCE).kid == new_kid


def test_stale_jwks_refreshes_in_background_without_blocking(
    verifier: TokenVerifier, dev_server: DevIssuerServer, dev_issuer: DevIssuer, clock: FakeClock
) -> None:
    token = dev_issuer.issue("a", ["patient"], "x")
    verifier.verify(token)
    clock.advance(301)  # past ttl
    before = dev_server.request_count("jwks")
    assert verifier.verify(token).subject == "a"  # served from cache immediately
    verifier.jwks.join_refresh(5)
    assert dev_server.request_count("jwks") == before + 1
    assert verifier.jwks.fetch_count == 2
    verifier.verify(token)
    verifier.jwks.join_refresh(5)
    assert verifier.jwks.fetch_count == 2  # fresh again: no more fetches


def test_idp_down_rejects_unknown_kid_and_rate_limits(clock: FakeClock) -> None:
    jwks = JwksCache("http://127.0.0.1:9/certs", ttl_s=300, http_timeout_s=0.5, clock=clock)
    assert jwks.get("k") is None
    assert jwks.get("k") is None
    assert jwks.fetch_count == 1
    clock.advance(10)
    assert jwks.get("k") is None
    assert jwks.fetch_count == 2


def test_averify_on_event_loop(verifier: TokenVerifier, dev_issuer: DevIssuer) -> None:
    token = dev_issuer.issue("a", ["hospital"], "h")

    async def main() -> Principal:
        return await verifier.averify(token)  # cold cache: fetch goes to a worker thread

    assert asyncio.run(main()).roles == frozenset({"hospital"})
    assert verifier.jwks.fetch_count == 1


def test_from_settings(dev_server: DevIssuerServer, dev_issuer: DevIssuer) -> None:
    settings = load_settings(oidc_issuer=dev_server.issuer_url, oidc_leeway_s=5)
    verifier = TokenVerifier.from_settings(settings)
    assert verifier.jwks.url == dev_server.jwks_url
    assert verifier.leeway_s == 5 and verifier.algorithms == {"RS256", "ES256"}
    assert verifier.verify(dev_issuer.issue("a", ["admin"], "x")).roles == {"admin"}


def test_constructor_refuses_symmetric_algorithms(dev_server: DevIssuerServer) -> None:
    jwks = JwksCache(dev_server.jwks_url, 300)
    for algs in (["HS256"], ["none"], [], ["RS256", "HS512"]):
        with pytest.raises(ValueError):
            TokenVerifier(dev_server.issuer_url, AUDIENCE, jwks, algs)


# ------------------------------------------------------------ EC keys and kty


def _ec_fixture() -> tuple[ec.EllipticCurvePrivateKey, dict]:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update(kid="ec-1", use="sig")
    return key, jwk


def test_es256_and_kty_mismatch(dev_issuer: DevIssuer) -> None:
    ec_key, ec_jwk = _ec_fixture()
    rsa_jwk = dev_issuer.jwks()["keys"][0]
    with StaticJwks({"keys": [ec_jwk, rsa_jwk]}).running() as server:
        verifier = TokenVerifier(dev_issuer.issuer, AUDIENCE, JwksCache(server.url, 300), ["RS256", "ES256"])
        now = int(time.time())
        claims = {
            "exp": now + 60,
            "iat": now,
            "iss": dev_issuer.issuer,
            "aud": AUDIENCE,
            "sub": "ec-user",
            "realm_access": {"roles": ["compliance-officer"]},
            "org": ["regulator"],
        }
        good = jwt.encode(claims, ec_key, algorithm="ES256", headers={"kid": "ec-1"})
        principal = verifier.verify(good)
        assert principal.roles == {"compliance-officer"} and principal.org == "regulator"
        # RS256 header pointing at the EC key, and ES256 header pointing at the RSA key.
        _, p, s = good.split(".")
        rejects(verifier, f"{b64url_json({'alg': 'RS256', 'kid': 'ec-1'})}.{p}.{s}", "key type mismatch")
        rejects(
            verifier, f"{b64url_json({'alg': 'ES256', 'kid': rsa_jwk['kid']})}.{p}.{s}", "key type mismatch"
        )
        # The RSA JWK pins alg RS256: a PS256 token using it is refused too.
        ps = TokenVerifier(dev_issuer.issuer, AUDIENCE, JwksCache(server.url, 300), ["RS256", "PS256"])
        rejects(ps, f"{b64url_json({'alg': 'PS256', 'kid': rsa_jwk['kid']})}.{p}.{s}", "key type mismatch")


def test_parse_jwks_skips_unusable_keys(dev_issuer: DevIssuer) -> None:
    rsa_jwk = dev_issuer.jwks()["keys"][0]
    _, ec_jwk = _ec_fixture()
    doc = {
        "keys": [
            rsa_jwk,
            {**rsa_jwk, "kid": "enc", "use": "enc", "alg": "RSA-OAEP"},
            {"kty": "oct", "kid": "hmac", "k": b64url(b"secret")},
            {**ec_jwk, "kid": ""},
            {**ec_jwk, "kid": "ec-1"},
            "junk",
        ]
    }
    assert set(parse_jwks(doc)) == {rsa_jwk["kid"], "ec-1"}


def test_idp_unreachable_message(dev_issuer: DevIssuer, clock: FakeClock) -> None:
    verifier = TokenVerifier(
        dev_issuer.issuer, AUDIENCE, JwksCache("http://127.0.0.1:9/certs", 300, 0.5, clock=clock), ["RS256"]
    )
    # The identity provider being down is not the caller's fault: UNAVAILABLE, not UNAUTHENTICATED (issue 14).
    with pytest.raises(AuthError) as info:
        verifier.verify(dev_issuer.issue("a", ["patient"], "x"))
    assert info.value.code == "UNAVAILABLE"
    assert "could not be fetched" in info.value.message


def test_concurrent_unknown_kid_lookups_fetch_once(dev_server: DevIssuerServer, clock: FakeClock) -> None:
    import threading

    jwks = JwksCache(dev_server.jwks_url, 300, clock=clock)
    barrier = threading.Barrier(8)
    results: list[object] = []

    def look() -> None:
        barrier.wait()
        results.append(jwks.get(f"unknown-{threading.get_ident()}"))

    threads = [threading.Thread(target=look) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [None] * 8
    assert jwks.fetch_count == 1


def test_bench_runs_without_network_on_hot_path() -> None:
    from ciphercare.services.bench.auth import bench_token_verification

    result = bench_token_verification(200)
    assert result["n"] == 200 and result["jwks_fetches"] == 1
    assert 0 < result["p50_us"] <= result["p99_us"]


def test_non_json_number_constants_rejected(verifier: TokenVerifier, dev_issuer: DevIssuer) -> None:
    # A (validly signed) exp of Infinity would never expire; Python's json would accept it.
    token = dev_issuer.issue("a", ["patient"], "x", extra_claims={"exp": float("inf")})
    rejects(verifier, token, "payload is not a valid JSON object")
