"""A real `ml-dash serve` process on loopback, started by the tests (kill, restart, fault flags), on each engine:
the `.dash` folder, and PostgreSQL (a throwaway cluster, one database per test) with file contents in moto's S3.
Tests read what a server stored with ``load(prefix, dash_root=server.root)``: for the folder engine that is the
server's own folder, for PostgreSQL a fresh copy of what the database holds (`ml_dash.server.dump`)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("httpx")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

import pg  # noqa: E402
from serverproc import TOKEN, PgServer, Server  # noqa: E402,F401


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[pg.Cluster]:
    cluster = pg.start_cluster()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pg.MotoS3]:
    moto = pg.start_moto(tmp_path_factory.mktemp("moto") / "moto.log")
    yield moto
    moto.stop()


ENGINES = ["folder", "postgres"]
_buckets = itertools.count()


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_server(tmp_path: Path, engine: str, request: pytest.FixtureRequest) -> Iterator[Any]:
    """``make_server(*flags, token=..., root=...)``: a started server. On PostgreSQL every server of one test
    shares that test's database and bucket (``root`` names the same store)."""
    servers: list[Server] = []
    shared: dict[str, Any] = {}
    if engine == "postgres":
        cluster = request.getfixturevalue("pg_cluster")
        moto = request.getfixturevalue("s3")
        shared["database"] = cluster.new_database()
        shared["files"] = f"s3://{moto.bucket(f'bucket-{next(_buckets)}')}/runs"
        shared["env"] = moto.env

    def make(*extra: str, token: str | None = TOKEN, root: Path | None = None) -> Server:
        n = len(servers)
        store, log = tmp_path / f"server{n}", tmp_path / f"server{n}.log"
        s: Server
        if engine == "postgres":
            s = PgServer(store, log, *extra, token=token, **shared)
        else:
            s = Server(root or store, log, *extra, token=token)
        servers.append(s)
        return s.start()

    yield make
    for s in servers:
        s.stop()


@pytest.fixture
def server(make_server: Any) -> Server:
    return make_server()  # type: ignore[no-any-return]


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # ~/.dash/credentials.json stays in tmp
    monkeypatch.setenv("ML_DASH_TOKEN", TOKEN)
