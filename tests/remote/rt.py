"""Helpers of the remote tests: a training-like workload and a comparison of the local and the server copy."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from ml_dash import load


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
