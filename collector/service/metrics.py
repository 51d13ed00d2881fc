"""Prometheus metrics of one service instance (its own registry, so several
instances - in tests - do not collide)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.uplinks = Counter("collector_uplinks", "Uplinks received, by integration and outcome",
                               ["integration", "outcome"], registry=r)
        self.requests = Counter("collector_http_requests", "Ingest requests answered, by status code",
                                ["integration", "code"], registry=r)
        self.messages = Counter("collector_messages_closed", "Messages closed, by outcome (complete, partial, "
                                "incident) and close reason", ["state", "reason"], registry=r)
        self.incidents = Counter("collector_incidents", "Incidents recorded, by code", ["code"], registry=r)
        #: what alerts fire on: dead letters by cause (rejected, max_age), incidents by code
        self.data_loss = Counter("collector_data_loss", "Records the Web App does not get in full: dead "
                                 "letters by cause, incidents by code, partial documents",
                                 ["kind", "cause"], registry=r)
        self.open_messages = Gauge("collector_open_messages", "Messages waiting for fragments", registry=r)
        self.queue_depth = Gauge("collector_delivery_queue_depth", "Documents waiting for delivery", registry=r)
        self.dead_letters = Gauge("collector_dead_letters", "Documents dead-lettered", registry=r)
        self.write_queue = Gauge("collector_store_write_queue", "Writes waiting for the store", registry=r)
        self.attempts = Counter("collector_delivery_attempts", "Delivery attempts, by result and status class",
                                ["result", "status"], registry=r)
        self.circuit_open = Gauge("collector_delivery_circuit_open", "1 while the delivery circuit is open",
                                  registry=r)
        self.ingest_latency = Histogram("collector_ingest_seconds", "Ingest request latency (to durable commit)",
                                        ["integration"], buckets=_LATENCY_BUCKETS, registry=r)
        self.commit_latency = Histogram("collector_store_commit_seconds", "Duration of one group commit",
                                        buckets=_LATENCY_BUCKETS, registry=r)
        self.commit_batch = Histogram("collector_store_commit_batch", "Writes per group commit",
                                      buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000), registry=r)
        self.delivery_latency = Histogram("collector_delivery_seconds", "Delivery request latency",
                                          buckets=_LATENCY_BUCKETS, registry=r)

    def delivery_attempt(self, result: str, status: int | None, duration: float | None) -> None:
        cls = "none" if status is None else f"{status // 100}xx"
        self.attempts.labels(result, cls).inc()
        if duration is not None:
            self.delivery_latency.observe(duration)

    def committed(self, n: int, seconds: float) -> None:
        self.commit_batch.observe(n)
        self.commit_latency.observe(seconds)

    def render(self, refresh: Callable[[], None] | None = None) -> bytes:
        if refresh:
            refresh()
        return generate_latest(self.registry)
