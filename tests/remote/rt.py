"""Helpers of the remote tests: a training-like workload and a comparison of the local and the server copy."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from ml_dash import load

TOKEN = "test-token-123"


class Server:
    """One server process; ``kill()`` is SIGKILL, ``start()`` starts it again on the same port and root."""

    def __init__(self, root: Path, log: Path, *extra: str, token: str | None = TOKEN) -> None:
        self.root = root
        self.port = free_port()
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


def workload(exp: Any, start: int, n: int, *, files: int = 0, tmp: Path | None = None) -> None:
    """Rows ``start .. start+n-1`` into metrics 'train' (and every 10th into 'eval/sub'), a log per 10 rows, a
    track entry per 5 rows, and ``files`` small files."""
    for i in range(start, start + n):
        exp.metrics("train").log(step=i, loss=1.0 / (i + 1), ok=i % 2 == 0)
        if i % 10 == 0:
            exp.metrics("eval/sub").log(step=i, acc=float("nan") if i == 0 else 0.5)
            exp.log(f"step {i}", level="info", step=i)
        if i % 5 == 0:
            exp.tracks("robot/pos").append(_ts=float(i), x=i, y=-i)
    for k in range(files):
        exp.files("ckpt").save_text(f"file {start} {k}\n" * (k + 1), to=f"f{start}_{k}.txt")


def _files(view: Any) -> dict[str, tuple[str, int, str]]:
    out = {}
    for f in view.files.list():
        content = Path(f["localPath"]).read_bytes()
        out[f["id"]] = (f["path"] + "/" + f["filename"], len(content), hashlib.sha256(content).hexdigest())
    return out


def assert_same(prefix: str, local_root: Path, server_root: Path, status: str | None = "COMPLETED") -> Any:
    """The server's copy reads back (with the same reader) equal to the local copy: every record exactly once."""
    local, remote = load(prefix, dash_root=local_root), load(prefix, dash_root=server_root)
    assert remote.metrics.names() == local.metrics.names()
    for name in local.metrics.names():
        lr, rr = local.metrics(name).read(), remote.metrics(name).read()
        assert [r["index"] for r in rr] == list(range(len(rr))), f"{name}: indices not gap-free"
        assert len(rr) == len(lr), f"{name}: {len(rr)} rows on the server, {len(lr)} locally"
        assert _nan_safe(rr) == _nan_safe(lr)
    assert remote.logs.read() == local.logs.read()
    assert remote.tracks.topics() == local.tracks.topics()
    for topic in local.tracks.topics():
        assert remote.tracks(topic).read() == local.tracks(topic).read()
    assert remote.params.get() == local.params.get()
    assert _files(remote) == _files(local)
    if status is not None:
        assert remote.status == local.status == status
    return remote


def _nan_safe(rows: list[dict[str, Any]]) -> str:
    import json

    return json.dumps(rows, sort_keys=True, allow_nan=True)


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("ML_DASH_")}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "ml_dash.cli", *args], capture_output=True, text=True, env=e,
                          cwd=cwd, timeout=120)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def experiment_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("experiment.json") if ".ml_dash" not in p.parts)
