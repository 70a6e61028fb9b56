"""`ml-dash ls / show / export --url` against a real `ml-dash serve` on loopback: the same output as on the local
copy of the same runs, and the column routes (through the server's column cache)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from ml_dash import Experiment
from ml_dash.colview import BINARY_TYPE, unpack
from serverproc import TOKEN


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("ML_DASH_")}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "ml_dash.cli", *args], env=e, capture_output=True, text=True,
                          timeout=120)


def _runs(server: Any, local: Path) -> None:
    for i, lr in enumerate((0.1, 0.01)):
        with Experiment(f"proj/run{i}", dash_root=local, dash_url=server.url, tags=["t"] if i else []) as exp:
            exp.params.set(lr=lr)
            for s in range(300):
                exp.metrics("train").log(step=s, loss=1.0 / (s + 1), flag=s % 2 == 0)
            exp.metrics("eval/sub").log(step=299, acc=0.5 + i, bad=math.inf)
            exp.tracks("robot/pos").append(_ts=1.0, x=1.5)
            exp.logs.info("done")


def test_ls_show_export_against_server_equal_local(server: Any, tmp_path: Path) -> None:
    local = tmp_path / "local"
    _runs(server, local)
    env = {"ML_DASH_TOKEN": TOKEN}
    remote_ls = cli("ls", "--url", server.url, "--json", "-m", "train:loss", env=env)
    assert remote_ls.returncode == 0, remote_ls.stderr
    local_ls = cli("ls", str(local), "--json", "-m", "train:loss")
    strip = ("start", "end", "duration")
    r_runs = [{k: v for k, v in r.items() if k not in strip} for r in json.loads(remote_ls.stdout)]
    l_runs = [{k: v for k, v in r.items() if k not in strip} for r in json.loads(local_ls.stdout)]
    assert r_runs == l_runs
    assert r_runs[0]["metrics"] == {"eval/sub": 1, "train": 300} and r_runs[0]["last"]["train:loss"] == 1 / 300
    # ML_DASH_API_URL instead of --url; a filter
    by_env = cli("ls", "--filter", "tag=t", env={**env, "ML_DASH_API_URL": server.url})
    assert by_env.returncode == 0, by_env.stderr
    assert [ln.split()[0] for ln in by_env.stdout.splitlines()[1:]] == ["proj/run1"]

    show = json.loads(cli("show", "proj/run1", "--url", server.url, env=env).stdout)
    assert show["metrics"]["train"]["fields"]["loss"]["min"] == 1 / 300
    assert show["metrics"]["eval/sub"]["fields"]["bad"]["max"] == math.inf
    assert show["logs"] == 1

    for fmt in ("csv", "jsonl"):
        r_out, l_out = tmp_path / f"r.{fmt}", tmp_path / f"l.{fmt}"
        res = cli("export", "proj", "--url", server.url, "-o", str(r_out), env=env)
        assert res.returncode == 0, res.stderr
        assert cli("export", "proj", "--root", str(local), "-o", str(l_out)).returncode == 0
        assert r_out.read_text() == l_out.read_text()
        assert len(r_out.read_text().splitlines()) == 2 * 301 + (1 if fmt == "csv" else 0)


def test_column_routes_and_auth(server: Any, tmp_path: Path) -> None:
    _runs(server, tmp_path / "local")
    with server.client() as c:
        base = "/api/v1/experiments/" + quote("proj/run0", safe="")
        r = c.get(base + "/columns/metrics/train", params={"fields": "index,loss,flag"})
        assert r.status_code == 200, r.text
        body = json.loads(r.content)
        assert body["rows"] == 300 and list(body["columns"]) == ["index", "loss", "flag"]
        assert body["columns"]["index"][:3] == [0, 1, 2] and body["columns"]["flag"][:2] == [1.0, 0.0]
        sub = json.loads(c.get(base + "/columns/metrics/" + quote("eval/sub", safe="")).content)
        assert sub["columns"]["bad"] == [math.inf]
        tr = json.loads(c.get(base + "/columns/tracks/" + quote("robot/pos", safe="")).content)
        assert tr["columns"] == {"timestamp": [1.0], "x": [1.5]}
        logs = json.loads(c.get(base + "/columns/logs").content)
        assert logs["columns"]["message"] == ["done"] and logs["columns"]["level"] == ["info"]
        assert c.get(base + "/columns/metrics/train", params={"fields": "nope"}).status_code == 400
        # rows appended after a read (another writer, rows a row lacks a field of): the next read has them all
        more = [{"index": i, "data": {"step": 300 + i, "loss": -1.0}} for i in range(3)] + [
            {"index": 3, "data": {"step": 303, "extra": 7}}]
        assert c.post(base + "/metrics/train", json={"records": more, "source": "other"}).json()["stored"] == 4
        again = json.loads(c.get(base + "/columns/metrics/train").content)
        assert again["rows"] == 304 and again["columns"]["index"][-4:] == [300, 301, 302, 303]
        assert again["columns"]["loss"][-4:-1] == [-1.0] * 3 and math.isnan(again["columns"]["loss"][-1])
        assert again["columns"]["extra"][-1] == 7 and math.isnan(again["columns"]["extra"][0])
        assert again["columns"]["loss"][:300] == body["columns"]["loss"]
        # the binary form (what `ml-dash export --url` reads): the same columns, dtypes kept, bit for bit
        for path in ("/columns/metrics/train", "/columns/logs", "/columns/tracks/" + quote("robot/pos", safe="")):
            r = c.get(base + path, params={"format": "binary"})
            assert r.status_code == 200 and r.headers["content-type"] == BINARY_TYPE
            cols, as_json = unpack(r.content), json.loads(c.get(base + path).content)
            assert cols.rows == as_json["rows"] and list(cols) == list(as_json["columns"])
            for k, v in cols.items():
                assert np.array_equal(v, np.array(as_json["columns"][k], dtype=v.dtype), equal_nan=v.dtype != object)
        assert cols.other == {} and cols["x"].dtype == np.float64
        assert unpack(c.get(base + "/columns/metrics/train", params={"format": "binary"}).content)["index"].dtype == np.int64
        assert c.get(base + "/columns/logs", params={"format": "binary", "fields": "nope"}).status_code == 400
        assert c.get("/api/v1/experiments/" + quote("proj/none", safe="") + "/summary").status_code == 404
        assert c.get("/api/v1/experiments/" + quote("../x", safe="") + "/summary").status_code == 400
        doc = c.get("/api/v1/openapi.json").json()
        assert "/api/v1/runs" in doc["paths"] and "/api/v1/experiments/{prefix}/columns/metrics/{name}" in doc["paths"]
    with server.client(token=None) as anon:
        assert anon.get("/api/v1/runs").status_code == 401
    denied = cli("ls", "--url", server.url, env={"ML_DASH_TOKEN": "wrong"})
    assert denied.returncode == 2 and "refused the token" in denied.stderr
