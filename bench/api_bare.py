"""The reference of bench_api.py: a bare FastAPI app whose endpoints return a constant.

Served exactly like dotrec (same uvicorn loop, HTTP implementation and options), so the ratio
of dotrec's requests/s to this app's measures what dotrec's own work costs.
"""

from fastapi import FastAPI

app = FastAPI()


@app.get("/bare")
async def bare_async() -> dict:
    return {"ok": True}


@app.get("/bare-sync")
def bare_sync() -> dict:
    return {"ok": True}
