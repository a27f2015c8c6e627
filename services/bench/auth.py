"""Microbenchmark: cost of one bearer-token verification with a warm JWKS cache.

Run: ``ciphercare bench auth [--json FILE]`` (a private dev issuer; beside it the token's RS256 signature
check alone, the anchor), or ``python -m ciphercare.services.bench.auth [n] --issuer <realm URL>
--token-file <file>`` for a real Keycloak token.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from ciphercare.services.identity.devissuer import DevIssuer, DevIssuerServer
from ciphercare.services.identity.jwks import JwksCache
from ciphercare.services.identity.tokens import TokenVerifier


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def bench_verifier(verifier: TokenVerifier, token: str, n: int = 5000) -> dict[str, float | int]:
    """Time ``n`` verifications of ``token`` with ``verifier`` (warmed first: one JWKS fetch).

    Measures the hot path only (header checks, signature, claims, Principal).
    Returns microseconds per verify: ``p50_us``, ``p99_us``, ``mean_us``,
    ``min_us``, plus ``n`` and ``jwks_fetches`` (must stay 1: no network on the
    hot path). Works for any issuer: the dev issuer or a real Keycloak.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    verifier.verify(token)  # warm: one JWKS fetch
    for _ in range(min(200, n)):
        verifier.verify(token)
    samples: list[float] = []
    clock = time.perf_counter_ns
    verify = verifier.verify
    for _ in range(n):
        start = clock()
        verify(token)
        samples.append((clock() - start) / 1000.0)
    samples.sort()
    return {
        "n": n,
        "p50_us": round(_percentile(samples, 0.50), 1),
        "p99_us": round(_percentile(samples, 0.99), 1),
        "mean_us": round(statistics.fmean(samples), 1),
        "min_us": round(samples[0], 1),
        "jwks_fetches": verifier.jwks.fetch_count,
    }


def bench_signature_alone(verifier: TokenVerifier, token: str, n: int = 5000) -> float:
    """p50 microseconds of the token's signature check alone (the JWKS key already parsed): the anchor."""
    from jwt.algorithms import get_default_algorithms

    header_b64, payload_b64, signature_b64 = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(header_b64 + "=" * (-len(header_b64) % 4)))
    cached = verifier.jwks.get(header["kid"])
    if cached is None:
        raise ValueError("the token's key is not in the JWKS")
    impl = get_default_algorithms()[header["alg"]]
    key = impl.prepare_key(cached.key)
    signing_input = f"{header_b64}.{payload_b64}".encode("ascii")
    signature = base64.urlsafe_b64decode(signature_b64 + "=" * (-len(signature_b64) % 4))
    samples: list[float] = []
    clock = time.perf_counter_ns
    for _ in range(n):
        start = clock()
        if not impl.verify(signing_input, key, signature):
            raise ValueError("the signature does not verify")
        samples.append((clock() - start) / 1000.0)
    samples.sort()
    return round(_percentile(samples, 0.50), 1)


def bench_token_verification(n: int = 5000, anchor: bool = False) -> dict[str, float | int]:
    """Verify one DevIssuer token ``n`` times against a real loopback DevIssuerServer (see :func:`bench_verifier`);
    ``anchor``: also ``signature_p50_us``, the signature check alone (:func:`bench_signature_alone`)."""
    if n < 1:
        raise ValueError("n must be >= 1")
    with tempfile.TemporaryDirectory() as tmp:
        issuer = DevIssuer(
            Path(tmp) / "dev-issuer.pem", "http://127.0.0.1:0/realms/ciphercare", "ciphercare-api"
        )
        with DevIssuerServer(issuer, "127.0.0.1", 0) as server:
            jwks = JwksCache(server.jwks_url, ttl_s=300.0)
            verifier = TokenVerifier(issuer.issuer, issuer.audience, jwks, algorithms=("RS256", "ES256"))
            token = issuer.issue("bench-user", ["clinician"], "hospital-a", pid="P-0001")
            result = bench_verifier(verifier, token, n)
            if anchor:
                result["signature_p50_us"] = bench_signature_alone(verifier, token, n)
            return result


def run_auth_bench(*, n: int = 5000, out: Path | None = None) -> list[dict[str, Any]]:
    """``ciphercare bench auth``: print the figures, write the JSON report when asked; returns the rows."""
    result = bench_token_verification(n, anchor=True)
    rows: list[dict[str, Any]] = [
        {"metric": "bearer-token verification, dev issuer token, warm JWKS cache: p50 / p99",
         "value": f"{result['p50_us']} / {result['p99_us']} us", "target": "<= 200 us, no network",
         "met": "yes" if result["p50_us"] <= 200 and result["jwks_fetches"] == 1 else "NO"},
        {"metric": "anchor: the RS256 signature check alone, same key: p50",
         "value": f"{result['signature_p50_us']} us", "target": "", "met": ""},
        {"metric": "JWKS fetches (must stay 1: no network on the hot path)", "value": str(result["jwks_fetches"]),
         "target": "1", "met": "yes" if result["jwks_fetches"] == 1 else "NO"},
    ]
    for row in rows:
        print(f"{row['metric']:<80} {row['value']:>20} {row['target']:>22} {row['met']:>4}")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"benchmark": "auth", "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                   "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                                   "rows": rows, "result": result}, indent=2))
        print(f"\nwrote {out}")
    return rows


def bench_external_token(
    issuer: str, token: str, audience: str = "ciphercare-api", n: int = 5000
) -> dict[str, float | int]:
    """Verify a token from an external issuer (e.g. a running Keycloak realm) ``n`` times."""
    jwks = JwksCache(f"{issuer.rstrip('/')}/protocol/openid-connect/certs", ttl_s=300.0)
    return bench_verifier(TokenVerifier(issuer.rstrip("/"), audience, jwks), token, n)


def main(argv: list[str] | None = None) -> None:
    """``python -m ciphercare.services.bench.auth [n] [--issuer URL --token-file PATH]``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("n", nargs="?", type=int, default=5000)
    parser.add_argument("--issuer", help="an external issuer (realm URL); default: a private dev issuer")
    parser.add_argument("--token-file", type=Path, help="a file holding one access token from --issuer")
    parser.add_argument("--audience", default="ciphercare-api")
    args = parser.parse_args(argv)
    if bool(args.issuer) != bool(args.token_file):
        parser.error("--issuer and --token-file go together")
    if args.issuer:
        print(bench_external_token(args.issuer, args.token_file.read_text().strip(), args.audience, args.n))
    else:
        print(bench_token_verification(args.n))


if __name__ == "__main__":
    main()
