"""Refusals: no or wrong token (401, nothing touched, the client says how to log in, `ml-dash login` + `sync`
deliver later), names that would escape the root (400), oversized bodies (413): nothing written."""

from __future__ import annotations

import http.client
import json
import os
import stat
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import rt
from ml_dash import Experiment, load
from ml_dash.buffer import BufferConfig


def _written(root: Path) -> list[str]:
    """Everything under a server root except the server's own lock and its empty staging folder."""
    out = []
    for p in root.rglob("*"):
        rel = p.relative_to(root).as_posix()
        if rel in (".ml-dash-server.lock", ".ml_dash", ".ml_dash/incoming"):
            continue
        out.append(rel)
    return out


def _requests(prefix: str = "proj/x") -> list[tuple[str, str, dict[str, Any]]]:
    p = quote(prefix, safe="")
    e = f"/api/v1/experiments/{p}"
    return [
        ("POST", "/api/v1/experiments", {"json": {"prefix": prefix, "info": {}}}),
        ("POST", e + "/logs", {"json": {"records": [{"sequenceNumber": 0, "level": "info", "message": "m"}]}}),
        ("POST", e + "/metrics/train", {"json": {"records": [{"index": 0, "data": {"a": 1}}]}}),
        ("POST", e + "/tracks/t", {"json": {"entries": [{"timestamp": 1.0, "x": 1}], "offset": 0}}),
        ("PUT", e + "/parameters", {"json": {"data": {"a": 1}, "version": 1}}),
        ("PUT", e + "/status", {"json": {"info": {"status": "COMPLETED"}}}),
        ("POST", e + "/files", {"data": {"entry": json.dumps({"id": "1", "path": "/", "filename": "a.txt"})},
                                "files": {"file": ("a.txt", b"hello")}}),
    ]


def _raw(server: Any, method: str, path: str, body: dict[str, Any]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path, json.dumps(body), {"Authorization": f"Bearer {server.token}",
                                                       "Content-Type": "application/json"})
        return conn.getresponse().status
    finally:
        conn.close()


def test_no_token_or_wrong_token_is_refused_and_touches_nothing(server: Any) -> None:
    for token in (None, "wrong-token", ""):
        with server.client(token=token) as c:
            for method, url, kw in _requests():
                r = c.request(method, url, **kw)
                assert r.status_code == 401, (method, url, r.text)
                assert "ml-dash login" in r.json()["detail"]
                assert r.headers["www-authenticate"].startswith("Bearer")
    basic = httpx.get(server.url + "/api/v1/experiments", headers={"Authorization": f"Basic {server.token}"})
    assert basic.status_code == 401
    assert _written(server.root) == []


def test_client_with_a_wrong_token_says_how_to_log_in_then_sync_delivers(server: Any, tmp_path: Path,
                                                                         monkeypatch: Any, capfd: Any) -> None:
    monkeypatch.setenv("ML_DASH_TOKEN", "wrong-token")
    local = tmp_path / "local"
    with Experiment("proj/auth", dash_root=local, dash_url=server.url,
                    buffer_config=BufferConfig(flush_interval=0.1, close_timeout=20)).run as e:
        rt.workload(e, 0, 100, files=1)
    err = capfd.readouterr().err
    assert "ml-dash login --token TOKEN --url " + server.url in err
    assert "not delivered" in err and "ml-dash sync" in err
    assert _written(server.root) == []
    home = tmp_path / "home"
    r = rt.cli("login", "--token", server.token, "--url", server.url, env={"HOME": str(home)})
    assert r.returncode == 0, r.stderr
    cred = home / ".dash" / "credentials.json"
    assert stat.S_IMODE(os.stat(cred).st_mode) == 0o600
    assert server.token in cred.read_text()
    # no ML_DASH_TOKEN, no --url: both come from the login file
    r = rt.cli("sync", str(local), env={"HOME": str(home)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "uploaded 10 log(s), 110 metric row(s), 20 track entr(ies), 1 file(s)" in r.stdout
    rt.assert_same("proj/auth", local, server.root)


def test_names_that_escape_the_root_are_refused(server: Any, tmp_path: Path) -> None:
    c = server.client()
    bad_prefixes = ["../evil", "proj/../../evil", "/abs/evil", "proj/.ml_dash", "single", "proj//x", "a\\b/c"]
    for prefix in bad_prefixes:
        r = c.post("/api/v1/experiments", json={"prefix": prefix, "info": {}})
        assert r.status_code == 400, (prefix, r.text)
        for method, url, kw in _requests(prefix)[1:]:
            assert c.request(method, url, **kw).status_code in (400, 404), (prefix, url)
    e = "/api/v1/experiments/" + quote("proj/x", safe="")
    for name in ["../../evil", "..", "a/../../b", "/abs", "metrics/.ml_dash", "."]:
        # http.client sends the path as written (httpx would normalise '..' away before it left)
        assert _raw(server, "POST", f"{e}/metrics/{quote(name, safe='')}",
                    {"records": [{"index": 0, "data": {}}]}) == 400, name
        assert _raw(server, "POST", f"{e}/tracks/{quote(name, safe='')}",
                    {"entries": [{"timestamp": 1}], "offset": 0}) == 400, name
    for raw_prefix in ["..%2F..%2Fevil", "..", "proj%2F..%2F..%2Fevil"]:
        assert _raw(server, "POST", f"/api/v1/experiments/{raw_prefix}/logs",
                    {"records": [{"sequenceNumber": 0, "level": "info", "message": "m"}]}) == 400
    for entry in [{"id": "../x", "path": "/", "filename": "a"}, {"id": "1", "path": "/../..", "filename": "a"},
                  {"id": "1", "path": "/", "filename": "../a"}, {"id": "1", "path": "/", "filename": ".."},
                  {"id": "1", "path": "/", "filename": "a/b"}]:
        r = c.post(f"{e}/files", data={"entry": json.dumps(entry)}, files={"file": ("a", b"x")})
        assert r.status_code == 400, (entry, r.text)
    r = c.post("/api/v1/experiments/proj%1Fx/logs", json={"records": []})  # a raw control character
    assert r.status_code == 400
    assert _written(server.root) == []
    assert not list(tmp_path.rglob("evil"))


def test_oversized_bodies_are_refused(make_server: Any, tmp_path: Path) -> None:
    server = make_server("--max-body-mb", "0.1", "--max-file-mb", "0.2")
    c = server.client()
    e = "/api/v1/experiments/" + quote("proj/big", safe="")
    big = [{"sequenceNumber": i, "level": "info", "message": "x" * 1000} for i in range(200)]
    assert c.post(e + "/logs", json={"records": big}).status_code == 413

    def chunks() -> Any:  # no Content-Length: counted as it streams in
        yield b'{"records": ['
        for i in range(200):
            yield json.dumps({"sequenceNumber": i, "level": "info", "message": "x" * 1000}).encode() + b","
        yield b'{"sequenceNumber": 999, "level": "info", "message": ""}]}'

    assert c.post(e + "/logs", content=chunks(), headers={"Content-Type": "application/json"}).status_code == 413
    entry = json.dumps({"id": "1", "path": "/", "filename": "big.bin"})
    r = c.post(e + "/files", data={"entry": entry}, files={"file": ("big.bin", os.urandom(300_000))})
    assert r.status_code == 413
    assert _written(server.root) == []

    # through the client: the oversized file and log line are set aside with a warning, the rest arrives
    local = tmp_path / "local"
    with Experiment("proj/big", dash_root=local, dash_url=server.url,
                    buffer_config=BufferConfig(flush_interval=0.1)).run as ex:
        ex.files("f").save_blob(os.urandom(300_000), to="big.bin")
        ex.files("f").save_text("small", to="small.txt")
        for i in range(20):
            ex.log("y" * (150_000 if i == 7 else 10))
        rt.workload(ex, 0, 50)
    remote = load("proj/big", dash_root=server.root)
    assert [f["filename"] for f in remote.files.list()] == ["small.txt"]
    logs = remote.logs.read()
    assert len(logs) == 19 + 5 and all(len(r["message"]) < 1000 for r in logs)
    assert len(remote.metrics("train").read()) == 50
    quarantined = list((local / "proj" / "big" / ".ml_dash" / "quarantine").rglob("*.jsonl"))
    assert len(quarantined) == 1 and "y" * 150_000 in quarantined[0].read_text()
