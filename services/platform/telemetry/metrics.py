"""Prometheus metrics on ``/metrics``: per RPC, the ledger, scoring, refusals and projection lag.

Labels are method names, status codes, outcomes and organisation ids only: never a pid, a token, a
document or a feature (the canary scan in tests/privacy reads ``/metrics`` too). The registry is one per
:class:`Metrics` instance, so several servers in one process (the tests) never mix their counts.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc import aio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import start_http_server

from ciphercare.services.platform.handlers import around, final_code

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """Every ciphercare metric, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.rpc_total = Counter("ciphercare_rpc_total", "gRPC calls by method and status code",
                                 ["method", "code"], registry=r)
        self.rpc_seconds = Histogram("ciphercare_rpc_seconds", "gRPC call latency by method", ["method"],
                                     buckets=_LATENCY_BUCKETS, registry=r)
        self.auth_refusals = Counter("ciphercare_auth_refusals_total",
                                     "calls refused by authentication or authorization", ["code"], registry=r)
        self.scoring_patients = Counter("ciphercare_scoring_patients_total",
                                        "patients in Score calls by organisation and outcome",
                                        ["organization", "outcome"], registry=r)
        self.scoring_batches = Counter("ciphercare_scoring_batches_total", "ciphertext batches evaluated",
                                       registry=r)
        self.scoring_quota_refusals = Counter("ciphercare_scoring_quota_refusals_total",
                                              "Score calls refused by a quota", ["organization"], registry=r)
        # Registered by observe_witnessing() only when witnesses are configured (no witnesses: no lag to show).
        self.witness_lag = Gauge("ciphercare_witness_lag_entries",
                                 "entries between the latest checkpoint and the latest witnessed one", registry=None)
        self._witnessing_observed = False

    def observe_ledger(self, stats: Callable[[], dict[str, int]], tree_size: Callable[[], int],
                       projection_cursors: Callable[[], dict[str, int]]) -> None:
        """Read the ledger's and projections' figures at scrape time (no work on the hot path)."""
        self.registry.register(_LedgerCollector(stats, tree_size, projection_cursors))

    def observe_witnessing(self, witnessing: Any) -> None:
        """Set the witness lag from the witness submitter each time a checkpoint is published or cosigned.

        ``witnessing`` is the ledger's submitter (``ciphercare.ledger.witness.client.WitnessSubmitter``): it
        calls back with (newest published checkpoint size, newest quorum-cosigned size).
        """
        if self._witnessing_observed:
            return
        self._witnessing_observed = True
        self.registry.register(self.witness_lag)
        gauge = self.witness_lag
        witnessing.add_progress_listener(lambda published, cosigned: gauge.set(max(0, published - cosigned)))

    def serve(self, host: str, port: int) -> tuple[Any, int]:
        """Serve ``/metrics`` over HTTP on ``host:port`` (0: any free port); returns (server, port)."""
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        return (server, thread), int(server.server_port)


class _LedgerCollector:
    def __init__(self, stats: Callable[[], dict[str, int]], tree_size: Callable[[], int],
                 projection_cursors: Callable[[], dict[str, int]]) -> None:
        self._stats, self._tree_size, self._cursors = stats, tree_size, projection_cursors

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> list[Any]:
        up = GaugeMetricFamily("ciphercare_ledger_up", "1 if the ledger answered this scrape, else 0")
        try:  # a remote ledger node may be down: /metrics must still answer, and say so (issue 14)
            size = self._tree_size()
            ledger_stats = self._stats()
        except Exception:  # noqa: BLE001 - reported as ciphercare_ledger_up 0
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        tree = GaugeMetricFamily("ciphercare_ledger_tree_size", "entries in the ledger's Merkle tree")
        tree.add_metric([], size)
        families = [up, tree]
        stats = GaugeMetricFamily("ciphercare_ledger_stat", "the embedded ledger's counters", labels=["name"])
        for name, value in sorted(ledger_stats.items()):
            stats.add_metric([name], value)
        families.append(stats)
        lag = GaugeMetricFamily("ciphercare_projection_lag_entries", "ledger entries not yet projected off-chain",
                                labels=["projection"])
        for name, cursor in sorted(self._cursors().items()):
            lag.add_metric([name], max(0, size - cursor))
        families.append(lag)
        return families


class MetricsInterceptor(aio.ServerInterceptor):
    """Counts every call by method and final status code, and times it."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        metrics = self.metrics

        def finish(started: float, context: aio.ServicerContext, error: BaseException | None) -> None:
            metrics.rpc_total.labels(method, final_code(context, error)).inc()
            metrics.rpc_seconds.labels(method).observe(time.perf_counter() - started)

        return around(handler, lambda _context: time.perf_counter(), finish)
