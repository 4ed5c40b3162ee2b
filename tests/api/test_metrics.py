"""The request metrics kept as plain counts (app.api.metrics.RequestStats) expose what
prometheus-client's own Counter and Histogram expose for the same requests."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from app.api.metrics import LATENCY, LATENCY_BUCKETS, REQUESTS, Metrics

OBSERVED = [
    ("GET", "/predict/{user_id}/{movie_id}", 200, 0.0001),
    ("GET", "/predict/{user_id}/{movie_id}", 200, 0.0005),  # on a bound: counted in its bucket
    ("GET", "/predict/{user_id}/{movie_id}", 404, 0.003),
    ("POST", "/ratings", 201, 0.02),
    ("POST", "/ratings", 201, 12.0),  # past the last bound: +Inf alone
    ("GET", "<unmatched>", 404, 0.0),
]


def samples(text: bytes) -> list[str]:
    """Exposition lines of the two request metrics, less the optional `_created` series."""
    lines = text.decode().splitlines()
    wanted = ("dotrec_http_requests_total", "dotrec_http_request_duration_seconds_")
    return sorted(line for line in lines if line.startswith(wanted) and "_created" not in line)


def test_request_stats_expose_what_prometheus_client_does() -> None:
    metrics = Metrics()
    reference = CollectorRegistry()
    requests = Counter(*REQUESTS, ["method", "route", "status"], registry=reference)
    latency = Histogram(*LATENCY, ["method", "route"], buckets=LATENCY_BUCKETS, registry=reference)
    for method, route, status, seconds in OBSERVED:
        metrics.observe_request(method, route, status, seconds)
        requests.labels(method, route, str(status)).inc()
        latency.labels(method, route).observe(seconds)
    ours, theirs = samples(metrics.exposition()[0]), samples(generate_latest(reference))
    assert len(ours) == 4 + 3 * (len(LATENCY_BUCKETS) + 3)  # 4 counters; buckets, count, sum a route
    assert ours == theirs
