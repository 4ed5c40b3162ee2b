"""Property-based run of the whole OpenAPI schema with schemathesis, in-process (ASGI), on SQLite
and PostgreSQL: for every operation, generated requests, valid and invalid, never get a 5xx, and
every response has a documented status code, a documented content type and a body matching the
documented schema (error bodies included: every 4xx and 503 documents `{"detail": ...}`).

Also, outside the fuzzing: the document fuzzed is the one the app serves, and the responses
schemathesis cannot reach by itself (a `.npy` matrix asked for with `Accept`, the matrix cap's
413, a non-JSON body's 415) pass the same checks.

Why not `schemathesis.pytest.from_fixture`: under pytest 9.2 it fails before running a case
(schemathesis 4.32.5 sets the private `Function._nodeid`, which pytest 9.2 no longer has). The
schema is therefore made at import from the app's own OpenAPI document (it depends on no
database), and each case is sent through the started `client` fixture (ThroughTestClient), so
the same operations run once per database of `database_url`.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
import requests
import schemathesis
from api_support import ClientMaker, api_settings
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir
from requests.structures import CaseInsensitiveDict
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from urllib3 import HTTPHeaderDict, HTTPResponse

from app.api.main import create_app

SEED = 20250101
MAX_EXAMPLES = 25
"""Fuzzed cases per operation and database; the examples and coverage phases add their own
(deterministic) cases. The whole file takes about a minute for both databases."""
BASE_URL = "http://testserver"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# Not positive_data_acceptance: JSON Schema's "integer" admits 1.0, and schemathesis compares the
# ids' maximum 2**63 - 1 as a float (so 2**63 + 191 counts as valid); the API rejects both on
# purpose (ids are strict JSON integers up to 2**63 - 1), which that check would report as a bug.

# Hypothesis writes caches (constants, unicode data) as schemathesis collects the tests: into a
# folder of the system's temporary directory, not .hypothesis in the checkout. With database=None
# below it keeps no examples either.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "dotrec-hypothesis")

DOCUMENT = create_app(api_settings()).openapi()
schema = schemathesis.openapi.from_dict(
    DOCUMENT,
    config=schemathesis.Config.from_dict(
        {"seed": SEED, "generation": {"mode": "all", "deterministic": True}}
    ),
)


class ThroughTestClient(requests.adapters.BaseAdapter):
    """A requests transport that hands each request to a started TestClient, so it runs on that
    client's event loop: the one the app's lifespan ran on, whose database pools (the async
    PostgreSQL reads) serve only that loop. Schemathesis' own ASGI transport would run each
    request on a loop of its own, or a second lifespan."""

    def __init__(self, client: TestClient) -> None:
        super().__init__()
        self.client = client

    def send(self, request: requests.PreparedRequest, **_: object) -> requests.Response:
        answer = self.client.request(
            request.method or "GET", request.url or "/", headers=dict(request.headers), content=request.body
        )
        headers = HTTPHeaderDict(answer.headers.multi_items())
        response = requests.Response()
        response.status_code = answer.status_code
        response.reason = answer.reason_phrase
        response.headers = CaseInsensitiveDict(headers)
        # schemathesis reads headers and the HTTP version off urllib3's response, as requests' own
        response.raw = HTTPResponse(headers=headers, status=answer.status_code, version=11)
        response._content = answer.content
        response.encoding = answer.encoding
        response.url = request.url or ""
        response.request = request
        return response

    def close(self) -> None:
        pass


def send(case: schemathesis.Case, client: TestClient) -> schemathesis.Response:
    """Send `case` to the app `client` started and run CHECKS on the response. The session's
    default headers go: requests' `Accept: */*` would hide a case's own `Accept`."""
    session = requests.Session()
    session.headers.clear()
    session.mount(BASE_URL, ThroughTestClient(client))
    return case.call_and_validate(session=session, base_url=BASE_URL, checks=CHECKS)


@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    # `client` is shared by every case of an operation on purpose: one app and one database
    # that the cases' writes accumulate in, as a server's do. Generation is slow only on this
    # small machine, and the filters are schemathesis' own.
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
@schema.parametrize()
def test_every_operation_conforms(case: schemathesis.Case, client: TestClient) -> None:
    send(case, client)


def test_the_fuzzed_document_is_the_served_one(client: TestClient) -> None:
    assert client.get("/openapi.json").json() == DOCUMENT


def test_matrix_as_npy_conforms(client: TestClient) -> None:
    case = schema["/predict/matrix"]["POST"].Case(
        body={"user_ids": [1, 2], "movie_ids": [1, 2, 3]}, headers={"Accept": "application/x-npy"}
    )
    response = send(case, client)
    assert response.status_code == 200
    assert response.headers["content-type"] == ["application/x-npy"]
    matrix = np.load(io.BytesIO(response.content))
    assert matrix.shape == (2, 3) and matrix.dtype == np.float32


def test_matrix_over_the_json_cap_conforms(make_client: ClientMaker) -> None:
    client = make_client(max_matrix_cells=5)
    case = schema["/predict/matrix"]["POST"].Case(body={"user_ids": [1, 2], "movie_ids": [1, 2, 3]})
    response = send(case, client)
    assert response.status_code == 413
    assert "JSON cap of 5 (MAX_MATRIX_CELLS)" in response.json()["detail"]


@pytest.mark.parametrize(
    "path", ["/ratings", "/ratings/batch", "/movies", "/predict/pairs", "/predict/matrix"]
)
def test_a_body_that_is_not_json_conforms(client: TestClient, path: str) -> None:
    case = schema[path]["POST"].Case(body="user_id=1", media_type="text/plain")
    response = send(case, client)
    assert response.status_code == 415
    assert "application/json" in response.json()["detail"]
