"""``ciphercare bench``: every benchmark of the product, one command each (docs/BENCHMARKS.md).

:data:`BENCHMARKS` is the registry the command line is built from; ``services/bench/runner.py`` runs them.
"""

from __future__ import annotations

#: Every ``ciphercare bench`` benchmark and what it measures (``ciphercare bench --help`` lists them; the
#: smoke test runs each with ``--smoke``). Another room may add one (name -> one line) before the parser is built.
BENCHMARKS: dict[str, str] = {
    "ledger": "embedded ledger: durable tx/s 1..512 in flight vs raw SQLite FULL-sync inserts, CPU by stage, "
              "proofs, Check and the Health floor (--witness: witnessing cost; --gateway: Fabric Gateway protocol)",
    "check": "consent Check under ghz with 1..4 server processes (read replicas), plaintext and TLS, beside the "
             "gRPC Health floor",
    "scoring": "encrypted scoring vs plaintext XGBoost (--concrete: and Concrete ML; --quick: server throughput "
               "with and without slot ownership and validity)",
    "scoring-e2e": "encrypted scoring end to end (one patient, one full batch) beside the HE pipeline alone",
    "growth": "append, proof, start-up, RSS and access-event search from 10^4 to 10^6 ledger entries",
    "anomaly": "unusual-access detection: features, fit and detect at 10^4..10^6 events",
    "auth": "bearer-token verification with a warm JWKS cache beside the bare signature check",
    "audit": "compliance reads at scale: search p95 per filter, aggregates, a full streamed export "
             "(--events N, default 10^6; --database-url for PostgreSQL)",
}
