"""A run logged with dash_url arrives complete and equal to its local copy; flush() means uploaded; the REST
API reads it back; `import ml_dash` stays free of the HTTP stack."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import rt
from ml_dash import Experiment, load
from ml_dash.buffer import BufferConfig

PREFIX = "proj/sweeps/run1"


def test_run_arrives_complete_and_equal_to_local_copy(server: Any, tmp_path: Path, capfd: Any) -> None:
    local = tmp_path / "local"
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.bin").write_bytes(np.random.default_rng(0).bytes(300_000))
    (src / "sub" / "b.txt").write_text("nested")
    exp = Experiment(PREFIX, dash_root=local, dash_url=server.url, tags=["t1"], description="remote run",
                     buffer_config=BufferConfig(flush_interval=0.2, file_upload_workers=3))
    with exp.run as e:
        e.params.set(lr=0.01, model={"name": "mlp", "layers": 2})
        rt.workload(e, 0, 500, files=3)
        e.files("data").upload(src)
        e.files("figs").save_json({"a": [1, 2]}, to="cfg.json")
        e.params.set(lr=0.02)
        e.logs.warn("careful", k=np.float32(1.5))
        e.metrics("train").log(step=500, loss=np.float64(0.25), inf=float("inf"))
        assert e.flush() is True
        # flush returned: everything logged before it is on the server already
        mid = load(PREFIX, dash_root=server.root)
        assert len(mid.metrics("train").read()) == 501
        assert len(mid.files.list()) == 6
        assert mid.params.get()["lr"] == 0.02
        rt.workload(e, 501, 100)
    remote = rt.assert_same(PREFIX, local, server.root)
    assert remote.info["tags"] == ["t1"] and remote.info["description"] == "remote run"
    err = capfd.readouterr().err
    assert "[ML-Dash] ✓ All data flushed successfully" in err


def test_files_uploaded_at_close_are_reported(server: Any, tmp_path: Path, capfd: Any) -> None:
    exp = Experiment("proj/files", dash_root=tmp_path / "local", dash_url=server.url,
                     buffer_config=BufferConfig(flush_interval=30))
    with exp.run as e:
        for k in range(4):
            e.files("out").save_text(f"v{k}", to=f"r{k}.txt")
    err = capfd.readouterr().err
    assert f"[ML-Dash]   Uploading 4 file(s) to {server.url}..." in err
    for k in range(4):
        assert f"] Uploaded r{k}.txt" in err
    assert "[4/4] Uploaded" in err
    rt.assert_same("proj/files", tmp_path / "local", server.root)


def test_rest_api_reads_and_public_endpoints(server: Any, tmp_path: Path) -> None:
    with Experiment(PREFIX, dash_root=tmp_path / "l", dash_url=server.url).run as e:
        rt.workload(e, 0, 30, files=1)
    p = quote(PREFIX, safe="")
    anon = server.client(token=None)
    assert anon.get("/health").json()["status"] == "ok"
    doc = anon.get("/api/v1/openapi.json").json()
    assert doc["openapi"].startswith("3.") and "/api/v1/experiments/{prefix}/metrics/{name}" in doc["paths"]
    assert anon.get("/api/v1/experiments").status_code == 401
    c = server.client()
    assert [x["prefix"] for x in c.get("/api/v1/experiments").json()["experiments"]] == [PREFIX]
    assert c.get(f"/api/v1/experiments/{p}").json()["status"] == "COMPLETED"
    page = c.get(f"/api/v1/experiments/{p}/metrics/train", params={"start": 10, "limit": 5}).json()
    assert page["total"] == 30 and [r["data"]["step"] for r in page["records"]] == [10, 11, 12, 13, 14]
    assert c.get(f"/api/v1/experiments/{p}/metrics").json()["metrics"] == ["eval/sub", "train"]
    sub = c.get(f"/api/v1/experiments/{p}/metrics/{quote('eval/sub', safe='')}").text
    assert "NaN" in sub  # non-finite values travel as the bare tokens of the layout
    assert len(c.get(f"/api/v1/experiments/{p}/logs").json()["records"]) == 3
    assert c.get(f"/api/v1/experiments/{p}/tracks").json()["tracks"] == ["robot/pos"]
    assert len(c.get(f"/api/v1/experiments/{p}/tracks/{quote('robot/pos', safe='')}").json()["records"]) == 6
    assert c.get(f"/api/v1/experiments/{p}/parameters").json()["data"] == {}
    (entry,) = c.get(f"/api/v1/experiments/{p}/files").json()["files"]
    assert c.get(f"/api/v1/experiments/{p}/files/{entry['id']}").text == "file 0 0\n"
    missing = c.get("/api/v1/experiments/proj/sweeps/run1")  # an unencoded prefix: a hint, not a crash
    assert missing.status_code == 404 and "%2F" in missing.json()["detail"]


def test_import_stays_light_and_local_runs_never_load_httpx(tmp_path: Path) -> None:
    code = ("import sys, ml_dash\n"
            "e = ml_dash.Experiment('p/x', dash_root=sys.argv[1])\n"
            "e.metrics('m').log(a=1); e.run.complete()\n"
            "bad = [m for m in ('httpx', 'starlette', 'uvicorn', 'ml_dash.stores.remote') if m in sys.modules]\n"
            "assert not bad, bad\n")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "d")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
