"""Names sent to the server can never share a file or break the server for others: colliding or reserved names
are refused with 400 naming the segment, acknowledged rows survive recovery, a symbolic link in the root never
leads a write outside it, and an empty token never starts an open server."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import rt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

TRICKY = ["a", "b", "metrics", "logs", "tracks", "files", "experiment.json", "parameters.json", "data.jsonl",
          "metadata.json", "logs.jsonl", ".ml_dash", ".files_metadata.json"]
NAME = st.lists(st.sampled_from(TRICKY), min_size=1, max_size=4).map("/".join)
_seq = itertools.count()

FOLDER = pytest.mark.parametrize("engine", ["folder"])  # a check of the `.dash` folder engine's files and links


def _e(prefix: str) -> str:
    return f"/api/v1/experiments/{quote(prefix, safe='')}"


def _post_rows(c: Any, prefix: str, metric: str, n: int, start: int = 0) -> Any:
    return c.post(f"{_e(prefix)}/metrics/{quote(metric, safe='')}",
                  json={"source": "s1", "records": [{"index": start + i, "data": {"v": start + i}}
                                                    for i in range(n)]})


def test_the_issue_collision_is_refused_and_acknowledged_rows_survive(server: Any) -> None:
    with server.client() as c:
        assert c.post("/api/v1/experiments", json={"prefix": "nest/r", "info": {}}).status_code == 201
        r = _post_rows(c, "nest/r", "a/metrics/b", 3)
        assert r.json()["stored"] == 3
        r = c.post("/api/v1/experiments", json={"prefix": "nest/r/metrics/a", "info": {}})
        assert r.status_code == 400 and "'metrics' is reserved" in r.json()["detail"]
        r = _post_rows(c, "nest/r/metrics/a", "b", 2)
        assert r.status_code == 400
    server.kill()  # recovery on restart must keep every acknowledged row
    server.start()
    with server.client() as c:
        assert _post_rows(c, "nest/r", "a/metrics/b", 1, start=3).json()["stored"] == 1
        rows = c.get(f"{_e('nest/r')}/metrics/{quote('a/metrics/b', safe='')}").json()["records"]
        assert [r["data"]["v"] for r in rows] == [0, 1, 2, 3]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(NAME, NAME), min_size=1, max_size=5))
def test_any_names_never_5xx_and_every_acknowledged_row_reads_back(server: Any, pairs: list[tuple[str, str]]) -> None:
    stored: dict[tuple[str, str], int] = {}
    with server.client() as c:
        for tail, metric in pairs:
            prefix = f"h{next(_seq) % 3}/{tail}"
            r = c.post("/api/v1/experiments", json={"prefix": prefix, "info": {"description": tail}})
            assert r.status_code in (200, 201, 400), r.text
            k = stored.get((prefix, metric), 0)
            r = _post_rows(c, prefix, metric, 2, start=k)
            assert r.status_code in (200, 400), r.text
            if r.status_code == 200:
                stored[(prefix, metric)] = k + r.json()["stored"]
            for path in ("/api/v1/experiments", _e(prefix), f"{_e(prefix)}/metrics", f"{_e(prefix)}/tracks",
                         f"{_e(prefix)}/files", f"{_e(prefix)}/logs", f"{_e(prefix)}/parameters"):
                assert c.get(path).status_code in (200, 400, 404), path
        for (prefix, metric), n in stored.items():
            rows = c.get(f"{_e(prefix)}/metrics/{quote(metric, safe='')}").json()["records"]
            assert len(rows) >= n and [r["index"] for r in rows] == list(range(len(rows)))


def test_layout_file_names_in_a_prefix_never_break_later_requests(server: Any, engine: str) -> None:
    with server.client() as c:
        assert c.post("/api/v1/experiments", json={"prefix": "p/a", "info": {}}).status_code == 201
        for tail in ("experiment.json", "parameters.json", "logs/logs.jsonl", "metrics", "files", ".ml_dash",
                     "tracks/x"):
            r = c.post("/api/v1/experiments", json={"prefix": f"p/a/{tail}", "info": {}})
            assert r.status_code == 400 and "reserved" in r.json()["detail"], (tail, r.text)
        for name in ("x/data.jsonl", "metadata.json", ".x"):
            assert _post_rows(c, "p/a", name, 1).status_code == 400
        assert c.get("/api/v1/experiments").json()["experiments"][0]["prefix"] == "p/a"
        assert c.get(_e("p/a")).status_code == 200
    if engine != "folder":
        return
    # a folder named like a layout file left in the root (by hand, or by an older version) breaks nothing
    (server.root / "q" / "experiment.json").mkdir(parents=True)
    (server.root / "p" / "a" / "parameters.json.d").mkdir()
    with server.client() as c:
        assert [e["prefix"] for e in c.get("/api/v1/experiments").json()["experiments"]] == ["p/a"]


@FOLDER
def test_symlinks_in_the_root_never_lead_writes_outside(server: Any, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, server.root / "lnk")
    with server.client() as c:
        for method, url, kw in rt_requests("lnk/run"):
            r = c.request(method, url, **kw)
            assert r.status_code == 400 and "symbolic link" in r.json()["detail"], (url, r.text)
        assert c.post("/api/v1/experiments", json={"prefix": "p/r", "info": {}}).status_code == 201
        os.symlink(elsewhere, server.root / "p" / "r" / "metrics")
        r = _post_rows(c, "p/r", "train", 2)
        assert r.status_code == 400 and "symbolic link" in r.json()["detail"]
        assert c.get("/api/v1/experiments").status_code == 200
    assert list(elsewhere.iterdir()) == []


def rt_requests(prefix: str) -> list[tuple[str, str, dict[str, Any]]]:
    from test_security import _requests

    return _requests(prefix)


def _serve(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ML_DASH_")}
    return subprocess.Popen([sys.executable, "-m", "ml_dash.cli", "serve", "--root", str(tmp_path / "srv"),
                             "--port", str(rt.free_port()), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)


def test_an_empty_or_blank_token_never_starts_an_open_server(tmp_path: Path) -> None:
    empty_file = tmp_path / "tokens"
    empty_file.write_text("# no token here\n\n   \n")
    for args in (["--token", ""], ["--token", "   "], ["--token", "good", "--token", ""],
                 ["--token-file", str(empty_file)], ["--token-file", ""]):
        p = _serve(tmp_path, *args)
        try:
            out, _ = p.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
            raise AssertionError(f"{args}: the server started: {out}") from None
        assert p.returncode != 0, (args, out)
        assert "ml-dash serve:" in out and ("token" in out or "directory" in out.lower()), (args, out)


def test_serving_without_a_token_on_loopback_says_so_in_one_line(tmp_path: Path) -> None:
    import httpx

    port = rt.free_port()
    p = _serve(tmp_path, "--port", str(port))
    try:
        deadline = time.monotonic() + 120  # generous: test machines are small and shared
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
    finally:
        p.terminate()
        out, _ = p.communicate(timeout=10)
    assert sum(line.startswith("[ML-Dash] no token:") for line in out.splitlines()) == 1, out


@FOLDER
def test_symlinks_inside_a_run_never_lead_reads_outside(server: Any, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    (secret / "m").mkdir(parents=True)
    (secret / "m" / "data.jsonl").write_text('{"index": 0, "data": {"leak": 1}}\n')
    (secret / "experiment.json").write_text('{"name": "leak"}\n')
    (secret / "passwd").write_text("root:x:0:0\n")
    with server.client() as c:
        assert c.post("/api/v1/experiments", json={"prefix": "p/r", "info": {}}).status_code == 201
        assert _post_rows(c, "p/r", "train", 2).status_code == 200
        run = server.root / "p" / "r"
        os.symlink(secret / "m", run / "metrics" / "leak")  # a metric folder that is a link out of the root
        (run / "files").mkdir(exist_ok=True)
        idx = {"files": [{"id": "x1", "path": "/", "filename": "passwd", "size": 11}]}
        (run / "files" / "x1").mkdir()
        os.symlink(secret / "passwd", run / "files" / "x1" / "passwd")
        (run / "files" / ".files_metadata.json").write_text(json.dumps(idx))
        r = c.get(_e("p/r") + "/metrics/leak")
        assert r.status_code == 200 and r.json()["records"] == []  # nothing read through the link
        r = c.get(_e("p/r") + "/files/x1")
        assert r.status_code == 404 and "root:x" not in r.text
        assert len(c.get(_e("p/r") + "/metrics/train").json()["records"]) == 2  # the run itself still reads
        assert c.get("/api/v1/experiments").status_code == 200
