"""The reference of bench_api.py and bench_writes.py: a bare FastAPI app whose endpoints return a
constant (or, for POST, the body they parsed and validated as POST /ratings does).

Served exactly like dotrec (same uvicorn loop, HTTP implementation and options), so the ratio
of dotrec's requests/s to this app's measures what dotrec's own work costs.
"""

from fastapi import FastAPI

from app.api.schemas import RatingIn

app = FastAPI()


@app.get("/bare")
async def bare_async() -> dict:
    return {"ok": True}


@app.get("/bare-sync")
def bare_sync() -> dict:
    return {"ok": True}


@app.post("/bare-post", status_code=201)
async def bare_post(body: RatingIn) -> dict:
    """The same request body as POST /ratings, parsed and validated the same way, stored nowhere."""
    return {"user_id": body.user_id, "movie_id": body.movie_id, "rating": body.rating}
