"""A real `ml-dash serve` process on loopback, started by the tests (kill, restart, fault flags)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("httpx")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from rt import TOKEN, Server  # noqa: E402


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Any]:
    servers: list[Server] = []

    def make(*extra: str, token: str | None = TOKEN, root: Path | None = None) -> Server:
        n = len(servers)
        s = Server(root or tmp_path / f"server{n}", tmp_path / f"server{n}.log", *extra, token=token)
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
