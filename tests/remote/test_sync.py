"""`ml-dash sync`: local runs uploaded later, exactly once (again after the cursors are lost: the server
deduplicates); two machines logging one prefix both keep their rows; how HTTP answers are classified."""

from __future__ import annotations

import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rt
from ml_dash import Experiment, load
from ml_dash.stores.base import PermanentError
from ml_dash.stores.remote import AuthError, RemoteStore, RetryLater


def _local_run(root: Path, prefix: str, n: int, status: str = "complete") -> None:
    e = Experiment(prefix, dash_root=root)
    e.run.start()
    e.params.set(n=n, opt={"lr": 0.1})
    rt.workload(e, 0, n, files=2)
    getattr(e.run, status)()


def test_sync_uploads_local_runs_exactly_once(server: Any, tmp_path: Path) -> None:
    root = tmp_path / ".dash"
    _local_run(root, "proj/a", 120)
    _local_run(root, "proj/deep/b", 30, status="fail")
    r = rt.cli("sync", "--url", server.url, env={"ML_DASH_TOKEN": server.token}, cwd=tmp_path)  # ROOT: .dash
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 of 2 experiment(s) in sync" in r.stdout
    assert "[2/2] Uploaded" in r.stderr
    rt.assert_same("proj/a", root, server.root)
    rt.assert_same("proj/deep/b", root, server.root, status="FAILED")
    again = rt.cli("sync", str(root), "--url", server.url, env={"ML_DASH_TOKEN": server.token})
    assert "uploaded 0 log(s), 0 metric row(s), 0 track entr(ies), 0 file(s)" in again.stdout
    for cursors in root.rglob("cursors"):  # the client forgets what it sent: the server still stores it once
        shutil.rmtree(cursors)
    # ... and re-sends in batches cut differently from the first time (overlapping what the server holds)
    third = rt.cli("sync", str(root), "--url", server.url, env={"ML_DASH_TOKEN": server.token,
                                                                "ML_DASH_METRIC_BATCH_SIZE": "13",
                                                                "ML_DASH_TRACK_BATCH_SIZE": "7",
                                                                "ML_DASH_LOG_BATCH_SIZE": "3"})
    assert third.returncode == 0, third.stdout + third.stderr
    rt.assert_same("proj/a", root, server.root)
    rt.assert_same("proj/deep/b", root, server.root, status="FAILED")


def test_sync_without_a_server_reports_pending_and_fails(tmp_path: Path) -> None:
    root = tmp_path / ".dash"
    _local_run(root, "proj/a", 10)
    r = rt.cli("sync", str(root), "--url", f"http://127.0.0.1:{rt.free_port()}", "--attempts", "2",
               env={"ML_DASH_TOKEN": "x"})
    assert r.returncode == 1
    assert "NOT complete" in r.stdout and "still pending: 1 log(s), 11 metric row(s), 2 track entr(ies), 2 file(s)" in r.stdout


def test_two_machines_logging_one_prefix_keep_both(server: Any, tmp_path: Path) -> None:
    for machine in ("m1", "m2"):
        _local_run(tmp_path / machine, "proj/shared", 40)
        r = rt.cli("sync", str(tmp_path / machine), "--url", server.url, env={"ML_DASH_TOKEN": server.token})
        assert r.returncode == 0, r.stdout + r.stderr
    v = load("proj/shared", dash_root=server.root)
    rows = v.metrics("train").read()
    assert [r["index"] for r in rows] == list(range(80))
    assert sorted(r["data"]["step"] for r in rows) == sorted(list(range(40)) * 2)
    assert [r["sequenceNumber"] for r in v.logs.read()] == list(range(8))
    assert len(v.files.list()) == 4


# ---- how HTTP answers are classified (a real HTTP server answering fixed codes) --------------------------------
class _Fixed(http.server.BaseHTTPRequestHandler):
    answers: dict[str, tuple[int, dict[str, str]]] = {}

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        code, headers = self.answers.get(self.path.split("/")[-1], (200, {}))
        body = b'{"detail": "fixed", "limits": {}}'
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_PUT = do_GET = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def fixed() -> Iterator[str]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Fixed)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


@pytest.mark.parametrize("code,headers,kind,retry_after", [
    (429, {"Retry-After": "7"}, RetryLater, 7.0),
    (503, {}, RetryLater, None),
    (500, {}, RetryLater, None),
    (408, {}, RetryLater, None),
    (401, {}, AuthError, None),
    (400, {}, PermanentError, None),
    (404, {}, PermanentError, None),
    (413, {}, PermanentError, None),
    (422, {}, PermanentError, None),
])
def test_http_answers_are_classified(fixed: str, code: int, headers: dict[str, str], kind: type,
                                     retry_after: float | None, tmp_path: Path) -> None:
    _Fixed.answers = {"logs": (code, headers)}
    store = RemoteStore(fixed, "proj/x", folder=tmp_path, token="t")
    store.open({"name": "x"})
    with pytest.raises(kind) as info:
        store.write_logs([{"sequenceNumber": 0, "level": "info", "message": "m"}])
    assert getattr(info.value, "retry_after", None) == retry_after
    if kind is AuthError:
        assert "ml-dash login --token TOKEN --url" in str(info.value)
    store.close()


def test_unreachable_and_slow_servers_are_retried(tmp_path: Path) -> None:
    store = RemoteStore(f"http://127.0.0.1:{rt.free_port()}", "proj/x", folder=tmp_path, token="t", timeout=0.5)
    with pytest.raises(RetryLater):
        store.open({"name": "x"})
    assert store.key.startswith("remote-127.0.0.1_")
    assert RemoteStore("http://example.org", "p/x", folder=tmp_path).key == "remote-example.org_80"
    with pytest.raises(ValueError):
        RemoteStore("ftp://h", "p/x")
