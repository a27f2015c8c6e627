"""Microbenchmark: cost of one bearer-token verification with a warm JWKS cache.

Run: ``python -m ciphercare.services.bench.auth [n]`` (a private dev issuer), or
``... bench [n] --issuer <realm URL> --token-file <file>`` for a real Keycloak token.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

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


def bench_token_verification(n: int = 5000) -> dict[str, float | int]:
    """Verify one DevIssuer token ``n`` times against a real loopback DevIssuerServer (see :func:`bench_verifier`)."""
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
            return bench_verifier(verifier, token, n)


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
