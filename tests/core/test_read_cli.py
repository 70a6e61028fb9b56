"""`ml-dash ls`, `ml-dash show` and `ml-dash export` as a user runs them (real processes), on a root in the
reference SDK's layout, on runs of this project, and with a stale heartbeat."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import ml_dash
import pytest


def cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("ML_DASH_") or k == "ML_DASH_CACHE_DIR"}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "ml_dash.cli", *args], cwd=cwd, env=e, capture_output=True,
                          text=True, timeout=timeout)


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".000000Z"


def reference_run(root: Path, prefix: str, rows: list[dict[str, Any]], *, status: str | None = None,
                  beat: float | None = None, tags: list[str] | None = None, params: dict[str, Any] | None = None,
                  sparse_gb: int = 0) -> None:
    """A run as the reference SDK writes it (no status unless given), by hand."""
    d = root.joinpath(*prefix.split("/"))
    (d / "metrics" / "train").mkdir(parents=True)
    now = time.time()
    info: dict[str, Any] = {"name": prefix.split("/")[-1], "project": prefix.split("/")[0], "description": None,
                            "tags": tags or [], "bindrs": [], "prefix": prefix, "metadata": None,
                            "created_at": _iso(now - 3725), "write_protected": False}
    if status:
        info["status"] = status
        info["heartbeatAt"] = _iso(beat if beat is not None else now)
    (d / "experiment.json").write_text(json.dumps(info, indent=2))
    (d / "parameters.json").write_text(json.dumps({"version": 1, "data": params or {}, "updatedAt": _iso(now)}))
    data = d / "metrics" / "train" / "data.jsonl"
    with open(data, "w") as f:
        for i, r in enumerate(rows):
            f.write(json.dumps({"index": i, "data": {**r, "_ts": now + i}, "createdAt": _iso(now)}) + "\n")
    if sparse_gb:  # far too big to read: ls must not read the data files
        os.truncate(data, sparse_gb << 30)
    (d / "metrics" / "train" / "metadata.json").write_text(json.dumps(
        {"metricId": "1", "name": "train", "description": None, "tags": [], "metadata": None,
         "totalDataPoints": len(rows), "nextIndex": len(rows), "createdAt": _iso(now), "updatedAt": _iso(now)}))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / ".dash"
    reference_run(r, "ref/plain", [{"loss": 1.0 / (i + 1), "step": i} for i in range(50)], tags=["baseline"],
                  params={"lr": 0.1, "model.name": "mlp"})
    reference_run(r, "ref/crashed", [{"loss": 0.5}], status="RUNNING", beat=time.time() - 600,
                  params={"lr": 0.001})
    reference_run(r, "ref/huge", [], status="COMPLETED", params={"lr": 0.01}, sparse_gb=50)
    with ml_dash.Experiment("proj/sweep/a", dash_root=r) as exp:
        exp.params.set(lr=0.01, optimizer="adam")
        for i in range(20):
            exp.metrics("train").log(step=i, loss=2.0 - i * 0.1)
        exp.metrics("val").log(step=19, acc=0.75)
        exp.metrics("val").log(step=20, acc=math.nan)
        exp.tracks("robot/pos").append(_ts=1.0, x=1)
    return r


def test_ls_table_and_json(root: Path) -> None:
    t0 = time.monotonic()
    out = cli("ls", str(root))
    assert out.returncode == 0, out.stderr
    assert time.monotonic() - t0 < 60  # the 50 GB stream was not read
    lines = out.stdout.splitlines()
    assert lines[0].split()[:2] == ["PREFIX", "STATUS"]
    by_prefix = {ln.split()[0]: ln for ln in lines[1:]}
    assert set(by_prefix) == {"proj/sweep/a", "ref/crashed", "ref/huge", "ref/plain"}
    assert " CRASHED " in by_prefix["ref/crashed"]
    assert " COMPLETED " in by_prefix["proj/sweep/a"] and "train=20 val=2" in by_prefix["proj/sweep/a"]
    assert "train=50" in by_prefix["ref/plain"] and " UNKNOWN " in by_prefix["ref/plain"]  # the reference: no status
    assert "52m05s" in by_prefix["ref/crashed"]  # from the start to the last heartbeat
    runs = json.loads(cli("ls", str(root), "--json").stdout)
    a = next(r for r in runs if r["prefix"] == "proj/sweep/a")
    assert a["status"] == "COMPLETED" and a["metrics"] == {"train": 20, "val": 2}
    assert a["tracks"] == {"robot/pos": 1} and a["params"] == {"lr": 0.01, "optimizer": "adam"}
    assert a["duration"] is not None and a["start"].endswith("Z")


def test_ls_last_values_and_filters(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = cli("ls", str(root), "--metrics", "train:loss", "val:acc", "--json")
    runs = {r["prefix"]: r for r in json.loads(out.stdout)}
    assert runs["ref/plain"]["last"] == {"train:loss": 0.02, "val:acc": None}
    assert runs["proj/sweep/a"]["last"]["train:loss"] == pytest.approx(0.1)
    assert math.isnan(runs["proj/sweep/a"]["last"]["val:acc"])

    def prefixes(*filters: str) -> list[str]:  # the command's own entry point, in this process
        from ml_dash.cli import main

        capsys.readouterr()
        assert main(["ls", str(root), "--json", *[a for f in filters for a in ("--filter", f)]]) == 0
        return sorted(r["prefix"] for r in json.loads(capsys.readouterr().out))

    assert prefixes("status=crashed") == ["ref/crashed"]
    assert prefixes("status!=CRASHED", "lr<0.05") == ["proj/sweep/a", "ref/huge"]
    assert prefixes("lr>=0.01") == ["proj/sweep/a", "ref/huge", "ref/plain"]
    assert prefixes("tag=baseline") == ["ref/plain"]
    assert prefixes("prefix~proj/*") == ["proj/sweep/a"]
    assert prefixes("optimizer=adam") == ["proj/sweep/a"]
    assert prefixes("model.name=mlp") == ["ref/plain"]
    bad = cli("ls", str(root), "--filter", "nonsense")
    assert bad.returncode == 2 and "bad --filter 'nonsense'" in bad.stderr
    table = cli("ls", str(root), "-m", "loss").stdout
    assert "loss" in table.splitlines()[0] and "0.02" in table


def test_show_gives_last_min_max(root: Path) -> None:
    out = cli("show", "proj/sweep/a", "--root", str(root))
    assert out.returncode == 0, out.stderr
    s = json.loads(out.stdout)
    assert s["status"] == "COMPLETED" and s["params"]["optimizer"] == "adam"
    loss = s["metrics"]["train"]["fields"]["loss"]
    assert loss["last"] == pytest.approx(0.1) and loss["min"] == pytest.approx(0.1) and loss["max"] == 2
    assert s["metrics"]["train"]["rows"] == 20
    acc = s["metrics"]["val"]["fields"]["acc"]
    assert acc == {"last": 0.75, "min": 0.75, "max": 0.75, "count": 1}  # NaN skipped
    missing = cli("show", "proj/nope", "--root", str(root))
    assert missing.returncode == 2 and "proj/nope" in missing.stderr


def test_export_csv_and_jsonl(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "all.csv"
    res = cli("export", "proj", "ref/plain", "-o", str(out), cwd=root.parent)
    assert res.returncode == 0, res.stderr
    with open(out) as f:
        rows = list(csv.DictReader(f))
    header = list(rows[0])
    assert header[:4] == ["run", "stream", "index", "_ts"]
    assert len(rows) == 20 + 2 + 50
    assert {(r["run"], r["stream"]) for r in rows} == {("proj/sweep/a", "train"), ("proj/sweep/a", "val"),
                                                       ("ref/plain", "train")}
    plain = [r for r in rows if r["run"] == "ref/plain"]
    assert [int(r["index"]) for r in plain] == list(range(50))
    assert [r["step"] for r in plain[:3]] == ["0", "1", "2"]
    assert float(plain[3]["loss"]) == 0.25 and plain[3]["acc"] == ""
    jl = tmp_path / "val.jsonl"
    res = cli("export", "proj/sweep/*", "--metrics", "val", "-o", str(jl), "--root", str(root))
    assert res.returncode == 0, res.stderr
    recs = [json.loads(line) for line in jl.read_text().splitlines()]
    assert [r["acc"] for r in recs[:1]] == [0.75] and "acc" not in recs[1]
    assert all(r["run"] == "proj/sweep/a" and r["stream"] == "val" for r in recs)
    assert cli("export", "nothing/here", "-o", str(jl), "--root", str(root)).returncode == 2


def test_export_parquet(root: Path, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "t.parquet"
    res = cli("export", "proj/sweep/a", "ref/plain", "-m", "train:loss", "-o", str(out), "--root", str(root))
    assert res.returncode == 0, res.stderr
    t = pq.read_table(out)
    assert t.column_names == ["run", "stream", "index", "_ts", "loss"]
    assert t.num_rows == 70
    assert t.column("loss").to_pylist()[20] == 1.0


def test_export_parquet_without_pyarrow_says_so(root: Path, tmp_path: Path) -> None:
    code = ("import sys; sys.modules['pyarrow'] = None; sys.modules['pyarrow.parquet'] = None\n"
            "from ml_dash.cli import main; sys.exit(main(sys.argv[1:]))")
    res = subprocess.run([sys.executable, "-c", code, "export", "proj", "--root", str(root), "--format",
                          "parquet", "-o", str(tmp_path / "x.parquet")], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert "needs pyarrow" in res.stderr and "pip install pyarrow" in res.stderr


def test_ls_listing_cache(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A warm ls answers a finished run from the listing cache (no stream folder listed, no metadata read) while
    its experiment.json and parameters.json are unchanged; a change, a new or a removed run shows at once."""
    from ml_dash import read_cli, runs

    monkeypatch.setenv("ML_DASH_CACHE_DIR", str(tmp_path / "cache"))
    old = time.time() - 100  # settled: changes within the last 2 seconds are not kept
    for dirpath, _, files in os.walk(root):
        for name in files + [""]:
            os.utime(os.path.join(dirpath, name), (old, old))
    listed: list[str] = []
    real = runs._streams
    monkeypatch.setattr(runs, "_streams", lambda base, *a: listed.append(base) or real(base, *a))
    first = read_cli.Local(str(root)).runs([])
    assert listed and (tmp_path / "cache" / "listings").is_dir()
    listed.clear()
    again = read_cli.Local(str(root)).runs([("train", "loss")])
    by = {r["prefix"]: r for r in again}
    # runs without a final status (RUNNING, here CRASHED; none, as the reference SDK writes) are read again
    assert sorted({os.path.basename(os.path.dirname(b)) for b in listed}) == ["crashed", "plain"]
    assert [dict(r, last=None) for r in again] == [dict(r, last=None) for r in first]
    assert by["ref/plain"]["last"] == {"train:loss": 0.02}
    # a changed parameters.json, a new run, a removed run
    (root / "ref/plain/parameters.json").write_text(json.dumps({"version": 1, "data": {"lr": 0.5}}))
    reference_run(root, "ref/new", [{"loss": 1.0}], status="COMPLETED")
    import shutil

    shutil.rmtree(root / "ref/huge")
    now = {r["prefix"]: r for r in read_cli.Local(str(root)).runs([])}
    assert sorted(now) == ["proj/sweep/a", "ref/crashed", "ref/new", "ref/plain"]
    assert now["ref/plain"]["params"] == {"lr": 0.5} and now["ref/new"]["metrics"] == {"train": 1}


def test_url_with_nothing_listening_or_not_http_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"  # bound, not listening: refused
        for args in (["ls", "--url", url], ["show", "p/x", "--url", url], ["ls", "--url", "ftp-nope://x"]):
            r = cli(*args, env={"ML_DASH_TOKEN": "t", "HOME": str(tmp_path)})
            assert r.returncode == 2 and args[-1] in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
