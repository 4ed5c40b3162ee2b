"""Prometheus metrics: requests and latencies per route template, the model, predictions served.

Each app has its own registry (tests build many apps in one process). With several uvicorn
workers each process counts its own requests unless PROMETHEUS_MULTIPROC_DIR is set, in which
case /metrics aggregates every worker's files (prometheus-client's multiprocess mode).
"""

from __future__ import annotations

import bisect
import os
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED = "<unmatched>"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


REQUESTS = ("dotrec_http_requests", "HTTP requests answered, by method, route template and status.")
LATENCY = (
    "dotrec_http_request_duration_seconds",
    "Time from request to the end of the response, by method and route template.",
)


class RequestStats:
    """The request counter and latency histogram of one process as plain counts, turned into
    Prometheus metrics when scraped (a custom collector): prometheus-client's Counter and
    Histogram take a lock for each increment, several microseconds of every request. Only the
    event loop observes requests (MetricsMiddleware is ASGI), so the counts need no lock."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}
        self.latency: dict[tuple[str, str], list[float]] = {}
        """(method, route) -> a count per bucket of LATENCY_BUCKETS, one for +Inf, then the sum."""

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        counts = self.latency.get((method, route))
        if counts is None:
            counts = self.latency[(method, route)] = [0.0] * (len(LATENCY_BUCKETS) + 2)
        counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1  # the first bound >= seconds
        counts[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(*REQUESTS, labels=["method", "route", "status"])
        for (method, route, status), count in list(self.requests.items()):
            requests.add_metric([method, route, str(status)], count)
        latency = HistogramMetricFamily(*LATENCY, labels=["method", "route"])
        for (method, route), counts in list(self.latency.items()):
            cumulative, buckets = 0.0, []
            bounds = [*map(floatToGoString, LATENCY_BUCKETS), "+Inf"]
            for bound, count in zip(bounds, counts[:-1], strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            latency.add_metric([method, route], buckets, sum_value=counts[-1])
        yield requests
        yield latency


class Metrics:
    """The service's metrics on a registry of their own."""

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry(auto_describe=True)
        self._request_stats = RequestStats()
        if self.multiprocess:  # every worker's values in files: prometheus-client's own metrics
            self.requests: Counter | None = Counter(
                REQUESTS[0], REQUESTS[1], ["method", "route", "status"], registry=self.registry
            )
            self.latency: Histogram | None = Histogram(
                LATENCY[0], LATENCY[1], ["method", "route"], buckets=LATENCY_BUCKETS, registry=self.registry
            )
        else:
            self.requests = self.latency = None
            self.registry.register(self._request_stats)
        self.predictions = Counter(
            "dotrec_predictions",
            "Ratings predicted (one per pair, matrix cell or recommended item), by endpoint and strategy.",
            ["endpoint", "strategy"],
            registry=self.registry,
        )
        self.model_info = Gauge(
            "dotrec_model_info",
            "1 for the model version being served.",
            ["version"],
            registry=self.registry,
            multiprocess_mode="liveall",
        )
        self.model_loaded = Gauge(
            "dotrec_model_loaded_timestamp_seconds",
            "When the serving model was loaded (unix seconds); 0 when none is.",
            registry=self.registry,
            multiprocess_mode="liveall",
        )
        self.reloads = Counter(
            "dotrec_model_reloads",
            "Model loads by result (loaded, unchanged, refused).",
            ["result"],
            registry=self.registry,
        )
        self.model_loaded.set(0)
        self._request_children: dict[tuple[str, str, int], Any] = {}
        self._latency_children: dict[tuple[str, str], Any] = {}
        self._prediction_children: dict[tuple[str, str], Any] = {}
        self._version: str | None = None

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        if self.requests is None or self.latency is None:
            self._request_stats.observe(method, route, status, seconds)
            return
        key = (method, route, status)
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._request_children[key] = self.requests.labels(method, route, str(status))
        counter.inc()
        latency_key = (method, route)
        histogram = self._latency_children.get(latency_key)
        if histogram is None:
            histogram = self._latency_children[latency_key] = self.latency.labels(method, route)
        histogram.observe(seconds)

    def count_predictions(self, endpoint: str, strategy: str, n: int = 1) -> None:
        key = (endpoint, strategy)
        counter = self._prediction_children.get(key)
        if counter is None:
            counter = self._prediction_children[key] = self.predictions.labels(endpoint, strategy)
        counter.inc(n)

    def serving(self, version: str | None) -> None:
        """Record that `version` is now served (None: no model)."""
        if self._version is not None:
            self.model_info.remove(self._version)
        self._version = version
        if version is not None:
            self.model_info.labels(version).set(1)
            self.model_loaded.set(time.time())
        else:
            self.model_loaded.set(0)

    def exposition(self) -> tuple[bytes, str]:
        """The text format of every metric, and its content type."""
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Pure ASGI: counts and times every HTTP request under its route template (e.g.
    /predict/{user_id}/{movie_id}), never the raw path, so ids do not become label values."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED
            self.metrics.observe_request(scope["method"], template, status, time.perf_counter() - started)
