"""A small HTTP/1.1 keep-alive load generator, for machines without `wrk` (bench_api.py falls
back to it). One process, asyncio, raw sockets: it costs far more CPU per request than wrk, so
its requests/s understate a fast server; compare ratios measured with the same tool only.

    python bench/api_load.py --url http://127.0.0.1:8000 --paths paths.txt --connections 32 --seconds 5

Prints one JSON object: requests, seconds, requests_per_s, p50_ms, p99_ms, errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from urllib.parse import urlsplit


async def _worker(
    host: str, port: int, paths: list[str], stop: float, latencies: list[float], errors: list[int]
):
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < stop:
            path = random.choice(paths)
            started = time.perf_counter()
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if not head.startswith(b"HTTP/1.1 2"):
                errors.append(1)
    finally:
        writer.close()


async def run(url: str, paths: list[str], connections: int, seconds: float) -> dict:
    parts = urlsplit(url)
    latencies: list[float] = []
    errors: list[int] = []
    started = time.perf_counter()
    stop = started + seconds
    await asyncio.gather(
        *(
            _worker(parts.hostname, parts.port or 80, paths, stop, latencies, errors)
            for _ in range(connections)
        )
    )
    elapsed = time.perf_counter() - started
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else 0.0  # noqa: E731
    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": pick(0.50),
        "p99_ms": pick(0.99),
        "errors": len(errors),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True)
    parser.add_argument("--paths", required=True, help="a file with one request path a line")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with open(args.paths) as file:
        paths = [line.strip() for line in file if line.strip()]
    print(json.dumps(asyncio.run(run(args.url, paths, args.connections, args.seconds))))


if __name__ == "__main__":
    main()
