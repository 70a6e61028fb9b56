"""A real `ml-dash serve` process on loopback, started by the tests (kill, restart, fault flags)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("httpx")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

import httpx  # noqa: E402
import rt  # noqa: E402

TOKEN = "test-token-123"


class Server:
    """One server process; ``kill()`` is SIGKILL, ``start()`` starts it again on the same port and root."""

    def __init__(self, root: Path, log: Path, *extra: str, token: str | None = TOKEN) -> None:
        self.root = root
        self.port = rt.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = token
        self.extra = list(extra)
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.preexec: Any = None  # run in the server process before it starts (resource limits)

    def start(self) -> Server:
        cmd = [sys.executable, "-m", "ml_dash.cli", "serve", "--root", str(self.root), "--port", str(self.port)]
        if self.token:
            cmd += ["--token", self.token]
        env = {k: v for k, v in os.environ.items() if not k.startswith("ML_DASH_")}
        self.proc = subprocess.Popen(cmd + self.extra, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
                                     env=env, preexec_fn=self.preexec)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("server did not come up")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def client(self, token: str | None = TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)


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
