"""Every operation of the OpenAPI document, fuzzed by schemathesis against a real server on loopback (bounded
examples, valid and invalid data): no request ever gets a 5xx, and every status is one the document lists."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import status_code_conformance  # noqa: E402
from serverproc import TOKEN, PgServer, Server  # noqa: E402


@pytest.fixture(scope="module", params=["folder", "postgres"])
def fuzz_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("fuzz")
    server: Server
    if request.param == "postgres":
        cluster, s3 = request.getfixturevalue("pg_cluster"), request.getfixturevalue("s3")
        server = PgServer(tmp / "root", tmp / "server.log", token=TOKEN, database=cluster.new_database(),
                          files=f"s3://{s3.bucket('fuzz')}/runs", env=s3.env)
    else:
        server = Server(tmp / "root", tmp / "server.log")
    server.start()
    with server.client() as c:  # something to find: a run with rows, a track and a file
        c.post("/api/v1/experiments", json={"prefix": "proj/exp", "info": {"description": "seed"}})
        c.post("/api/v1/experiments/proj%2Fexp/metrics/train", json={"records": [{"index": 0, "data": {"a": 1}}]})
    yield server
    server.stop()


def test_no_request_gets_a_server_error(fuzz_server: Server) -> None:
    schema = schemathesis.openapi.from_url(fuzz_server.url + "/api/v1/openapi.json")
    headers = {"Authorization": f"Bearer {TOKEN}"}
    ops = [result.ok() for result in schema.get_all_operations()]
    assert len(ops) >= 18
    for op in ops:
        @given(case=op.as_strategy())
        @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def fuzz(case: Any) -> None:
            case.call_and_validate(base_url=fuzz_server.url, headers=headers,
                                   checks=[not_a_server_error, status_code_conformance])

        fuzz()


def test_the_schema_constrains_names() -> None:
    from ml_dash.server.openapi import document

    doc = document("test")
    params = doc["paths"]["/api/v1/experiments/{prefix}/metrics/{name}"]["post"]["parameters"]
    assert all(p["schema"].get("pattern") and p["schema"].get("maxLength") for p in params)
