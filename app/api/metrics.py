"""Prometheus metrics: requests and latencies per route template, the model, predictions served.

Each app has its own registry (tests build many apps in one process). With several uvicorn
workers each process counts its own requests unless PROMETHEUS_MULTIPROC_DIR is set, in which
case /metrics aggregates every worker's files (prometheus-client's multiprocess mode).
"""

from __future__ import annotations

import os
import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED = "<unmatched>"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The service's metrics on a registry of their own."""

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "dotrec_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "dotrec_http_request_duration_seconds",
            "Time from request to the end of the response, by method and route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
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
