"""Microbenchmark: cost of one bearer-token verification with a warm JWKS cache.

Run: ``python -m ciphercare.services.auth.bench [n]``.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from ciphercare.services.auth.devissuer import DevIssuer, DevIssuerServer
from ciphercare.services.auth.jwks import JwksCache
from ciphercare.services.auth.tokens import TokenVerifier


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def bench_token_verification(n: int = 5000) -> dict[str, float | int]:
    """Verify one DevIssuer token ``n`` times against a real loopback DevIssuerServer.

    The JWKS is fetched once over HTTP before timing, so the loop measures the
    hot path only (header checks, RS256 signature, claims, Principal). Returns
    microseconds per verify: ``p50_us``, ``p99_us``, ``mean_us``, ``min_us``,
    plus ``n`` and ``jwks_fetches`` (must stay 1: no network on the hot path).
    """
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
            fetches = jwks.fetch_count
    samples.sort()
    return {
        "n": n,
        "p50_us": round(_percentile(samples, 0.50), 1),
        "p99_us": round(_percentile(samples, 0.99), 1),
        "mean_us": round(statistics.fmean(samples), 1),
        "min_us": round(samples[0], 1),
        "jwks_fetches": fetches,
    }


if __name__ == "__main__":
    print(bench_token_verification(int(sys.argv[1]) if len(sys.argv) > 1 else 5000))
