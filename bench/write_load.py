"""Concurrent rating writes against a running dotrec server, and the check that none was lost.

`run_write_load` sends `total` ratings from `clients` concurrent HTTP/1.1 keep-alive connections:
single `POST /ratings` and, now and then, `POST /ratings/batch`. Every write is tagged by a
`rated_at` second of its own, so the stored row says exactly which write it came from. Each
client owns some (user, movie) pairs that only it writes, one request after another, and all
clients also write a small set of shared pairs at the same moments.

`check_no_write_lost` then reads the database and fails (AssertionError naming the pair) unless:
every acknowledged write's pair is stored once; each owned pair holds its client's last write;
each shared pair holds a write that no other write superseded (none began after it was
acknowledged), with that write's own rating; and exactly one write per pair was answered as new.

Used by tests/api/test_concurrent_writes.py (correctness) and bench/bench_reliability.py
(throughput).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from sqlalchemy import Engine, text

EPOCH = 1_600_000_000
"""rated_at of write number 0; write i is rated at EPOCH + i seconds."""
SHARED_USERS = range(900_001, 900_011)
OWNED_USER_BASE = 910_000
BATCH_SHARE = 0.1
SHARED_SHARE = 0.25


@dataclass(frozen=True)
class Write:
    """One rating sent: which pair, what value, its tag, and when it was sent and answered."""

    user_id: int
    movie_id: int
    rating: float
    tag: int
    client: int
    sent: float
    answered: float
    status: int
    created: bool | None
    """True / False from a single POST's status (201 / 200); None inside a batch."""

    @property
    def acknowledged(self) -> bool:
        return self.status in (200, 201)


@dataclass
class WriteLoad:
    writes: list[Write] = field(default_factory=list)
    batch_inserted: int = 0
    """Sum of `inserted` over acknowledged batches."""
    seconds: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)
    """Responses per HTTP status (a batch counts once)."""

    @property
    def ratings_per_s(self) -> float:
        return len(self.writes) / self.seconds if self.seconds else 0.0

    @property
    def user_ids(self) -> set[int]:
        return {w.user_id for w in self.writes}


def plan(clients: int, total: int, movie_ids: list[int], seed: int = 0) -> list[list[list[tuple]]]:
    """Per client, its requests in order; a request is a list of (user, movie, rating, tag)
    rows, distinct pairs within a request; `total` rows in all."""
    rng = random.Random(seed)
    scale = [x / 2 for x in range(1, 11)]
    shared = [(u, m) for u in SHARED_USERS for m in movie_ids[:5]]
    requests: list[list[list[tuple]]] = [[] for _ in range(clients)]
    tag = 0
    while tag < total:
        client = rng.randrange(clients)
        size = min(total - tag, rng.randint(5, 20) if rng.random() < BATCH_SHARE else 1)
        rows: dict[tuple[int, int], tuple] = {}
        while len(rows) < size:
            shared_pair = rng.random() < SHARED_SHARE
            pair = rng.choice(shared) if shared_pair else (OWNED_USER_BASE + client, rng.choice(movie_ids))
            if pair not in rows:
                rows[pair] = (*pair, rng.choice(scale), tag)
                tag += 1
        requests[client].append(list(rows.values()))
    return requests


class _Connection:
    """One HTTP/1.1 keep-alive connection that POSTs JSON: far lighter than an HTTP library's
    client, so the load generator takes less of the CPU it shares with the server."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, path: str, body: object) -> tuple[int, bytes]:
        """(status, response body) of POSTing `body` as JSON to `path`."""
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.streams
        content = json.dumps(body).encode()
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(content)}\r\n{self.extra}\r\n".encode()
            + content
        )
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower().split("\r\n")
        fields = dict(line.split(": ", 1) for line in head[1:] if ": " in line)
        answer = await reader.readexactly(int(fields.get("content-length", 0)))
        if fields.get("connection") == "close":
            await self.close()
        return int(head[0].split()[1]), answer

    async def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


async def _client(
    url: str, headers: dict[str, str], number: int, requests: list[list[tuple]], load: WriteLoad
) -> None:
    connection = _Connection(url, headers)
    try:
        for rows in requests:
            body = [
                {"user_id": u, "movie_id": m, "rating": r, "rated_at": EPOCH + tag} for u, m, r, tag in rows
            ]
            sent = time.monotonic()
            try:
                if len(rows) == 1:
                    status, answer = await connection.post("/ratings", body[0])
                else:
                    status, answer = await connection.post("/ratings/batch", {"ratings": body})
            except (OSError, asyncio.IncompleteReadError):  # the server went away: no answer
                status, answer = 0, b""
            created = {201: True, 200: False}.get(status) if len(rows) == 1 else None
            if len(rows) > 1 and status == 200:
                load.batch_inserted += json.loads(answer)["inserted"]
            answered = time.monotonic()
            load.statuses[status] = load.statuses.get(status, 0) + 1
            load.writes += [
                Write(u, m, r, tag, number, sent, answered, status, created) for u, m, r, tag in rows
            ]
            if status == 0:  # sent, perhaps stored, never acknowledged; this client stops
                break
    finally:
        await connection.close()


async def _run(url: str, requests: list[list[list[tuple]]], headers: dict[str, str]) -> WriteLoad:
    load = WriteLoad()
    started = time.monotonic()
    await asyncio.gather(*(_client(url, headers, i, reqs, load) for i, reqs in enumerate(requests)))
    load.seconds = time.monotonic() - started
    return load


def run_write_load(
    url: str,
    movie_ids: list[int],
    clients: int = 32,
    total: int = 20_000,
    api_key: str | None = None,
    seed: int = 0,
) -> WriteLoad:
    """Send `total` ratings of `movie_ids` (catalog movies) to the server at `url`, from
    `clients` concurrent connections."""
    headers = {"X-API-Key": api_key} if api_key else {}
    return asyncio.run(_run(url, plan(clients, total, movie_ids, seed), headers))


def stored_ratings(engine: Engine, user_ids: set[int]) -> list[tuple[int, int, float, int]]:
    """(user, movie, rating, rated_at) rows of `user_ids`, duplicates included if any."""
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT user_id, movie_id, rating, rated_at FROM ratings WHERE user_id BETWEEN :lo AND :hi"),
            {"lo": min(user_ids), "hi": max(user_ids)},
        )
        return [(u, m, float(r), int(t)) for u, m, r, t in rows if u in user_ids]


def check_no_write_lost(load: WriteLoad, stored: list[tuple[int, int, float, int]]) -> None:
    """AssertionError naming the first pair that breaks a rule of the module's docstring."""
    rows_of: dict[tuple[int, int], list[tuple[float, int]]] = defaultdict(list)
    for user, movie, rating, rated_at in stored:
        rows_of[(user, movie)].append((rating, rated_at - EPOCH))
    writes_of: dict[tuple[int, int], list[Write]] = defaultdict(list)
    for write in load.writes:
        writes_of[(write.user_id, write.movie_id)].append(write)

    for pair, rows in rows_of.items():
        assert len(rows) == 1, f"{pair}: {len(rows)} rows"
    for pair, writes in writes_of.items():
        acknowledged = [w for w in writes if w.acknowledged]
        if not acknowledged:
            continue
        assert pair in rows_of, f"{pair}: {len(acknowledged)} acknowledged writes, nothing stored"
        ((rating, tag),) = rows_of[pair]
        winner = next((w for w in writes if w.tag == tag), None)
        assert winner is not None, f"{pair}: stored tag {tag} was never sent for this pair"
        assert rating == winner.rating, f"{pair}: rating {rating} stored with the tag of {winner.rating}"
        later = [w for w in acknowledged if w.sent > winner.answered]
        assert not later, f"{pair}: holds write {tag}, superseded by write {later[0].tag} sent after it"
        if pair[0] not in SHARED_USERS:  # one client's, sent one after another: the last counts
            last = max(acknowledged, key=lambda w: w.tag)
            # (or a later one that failed on the way back but was stored)
            assert tag >= last.tag, f"{pair}: holds write {tag}, its client's last was {last.tag}"
    if not all(w.acknowledged for w in load.writes):
        return  # a failed write may or may not have created its row: nothing to count
    singles_created = sum(1 for w in load.writes if w.created)
    assert singles_created + load.batch_inserted == len(rows_of), (
        f"{singles_created} single writes and {load.batch_inserted} batch rows were answered as new, "
        f"for {len(rows_of)} stored pairs"
    )
