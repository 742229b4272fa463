"""Prometheus metrics of the HTTP API.

Why a registry per app instead of prometheus_client's global one: tests build several apps in
one process, and a Ray Serve ingress replica holds exactly one app, so a private registry keeps
numbers from leaking between them. With several ingress replicas each replica reports its own
numbers (the scrape hits one replica); on a cluster scrape Ray's own metrics endpoint as well.

Nothing here carries content: labels are endpoints, stages, decisions and category codes.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from childguard.schema import Decision, Verdict

_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)


class ApiMetrics:
    """The counters, histograms and gauges the API updates, on a private registry."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "childguard_http_requests", "HTTP requests by route and status code",
            ["route", "method", "status"], registry=r,
        )
        self.latency = Histogram(
            "childguard_http_request_seconds", "HTTP request latency by route",
            ["route"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.stage_latency = Histogram(
            "childguard_stage_seconds", "pipeline stage latency (from verdict timings)",
            ["stage"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.items = Counter(
            "childguard_items", "items classified, by status", ["status"], registry=r,
        )
        self.decisions = Counter(
            "childguard_decisions", "decisions by decision and top category",
            ["decision", "category"], registry=r,
        )
        self.judge_calls = Counter(
            "childguard_judge_calls", "items that needed the LLM judge", registry=r,
        )
        self.hash_hits = Counter(
            "childguard_hash_decisive_hits", "items decided by a hash-bank match", registry=r,
        )
        self.inflight = Gauge(
            "childguard_inflight_requests",
            "requests being processed by this ingress (its queue depth)", registry=r,
        )
        self.outbox_depth = Gauge(
            "childguard_review_outbox_depth", "items waiting to be sent to human review",
            registry=r,
        )
        self.outbox_oldest = Gauge(
            "childguard_review_outbox_oldest_seconds", "age of the oldest outbox row",
            registry=r,
        )
        self.judge_rate = Gauge(
            "childguard_judge_call_ratio",
            "share of classified items that needed the judge (since start)", registry=r,
        )
        self._n_items = 0
        self._n_judged = 0

    def observe_verdict(self, verdict: Verdict) -> None:
        self.items.labels(status=verdict.status.value).inc()
        top = verdict.top_category
        category = "none"
        if verdict.decision is not Decision.ALLOW and top is not None:
            category = top.code
        self.decisions.labels(decision=verdict.decision.value, category=category).inc()
        self._n_items += 1
        if verdict.judged:
            self.judge_calls.inc()
            self._n_judged += 1
        if any(not m.negative for m in verdict.hash_matches) and not verdict.judged:
            self.hash_hits.inc()
        self.judge_rate.set(self._n_judged / self._n_items)
        for stage, ms in verdict.timings_ms.items():
            self.stage_latency.labels(stage=stage).observe(max(ms, 0.0) / 1000.0)

    def render(self, refresh: Callable[[ApiMetrics], None] | None = None) -> bytes:
        if refresh is not None:
            refresh(self)
        return generate_latest(self.registry)
