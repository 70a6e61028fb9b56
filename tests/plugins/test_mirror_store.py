"""The built-in mirror store, found through the ``ml_dash_store`` hook: a folder path or a file:// URL copies the
run into another `.dash` root, record for record, and a batch delivered twice is stored once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ml_dash import Experiment, load
from ml_dash.buffer import BufferConfig
from ml_dash.stores.mirror import MirrorStore, mirror_root


def record_run(exp: Experiment) -> None:
    with exp.run:
        exp.params.set(lr=0.1, model={"name": "mlp", "layers": 2})
        for i in range(120):
            exp.metrics("train").log(step=i, loss=1 / (i + 1), tag=f"t{i}")
            if i % 10 == 0:
                exp.metrics("eval/sub").log(step=i, acc=i / 120)
                exp.log(f"step {i}", level="warn" if i % 20 else "info", step=i)
        exp.metrics.log(nan=float("nan"))
        exp.tracks("robot/pos").append(_ts=1.0, x=1.0)
        exp.tracks("robot/pos").append(_ts=1.0, y=2.0)
        exp.tracks("robot/pos").append(_ts=2.0, x=3.0)
        exp.tracks("robot_pos").append(_ts=5.0, z=1)  # the folder-collision case: robot_pos~2
        exp.files("ckpt").save_text("weights", to="w.txt")
        exp.files("ckpt/best").save_json({"a": 1}, to="b.json")


def snapshot(root: Path, prefix: str) -> dict:
    v = load(prefix, dash_root=str(root))
    files = []
    for f in v.files.list():
        content = (root / prefix / "files" / f["path"].strip("/") / f["id"] / f["filename"]).read_bytes()
        files.append((f["id"], f["path"], f["filename"], f["checksum"], f["sizeBytes"], content))
    return {
        "metrics": {n: [(r["index"], json.dumps(r["data"])) for r in v.metrics(n).read()] for n in v.metrics.names()},
        "logs": [(r["sequenceNumber"], r["timestamp"], r["level"], r["message"], r["metadata"]) for r in v.logs.read()],
        "tracks": {t: v.tracks(t).read() for t in ("robot/pos", "robot_pos")},
        "params": v.params.get(),
        "files": sorted(files),
        "status": v.status,
        "info": {k: v.info.get(k) for k in ("name", "project", "prefix", "status", "created_at", "tags")},
    }


@pytest.mark.parametrize("form", ["path", "url", "relative"])
def test_mirror_holds_the_same_run(pm, tmp_path, monkeypatch, form):
    main, mirror = tmp_path / "main", tmp_path / "mirror"
    dest = {"path": str(mirror), "url": mirror.as_uri(), "relative": "./mirror"}[form]
    exp = Experiment("proj/sub/run", dash_root=main, stores=[dest], tags=["a"],
                     buffer_config=BufferConfig(metric_batch_size=16, log_batch_size=4, track_batch_size=1))
    if form == "relative":
        monkeypatch.chdir(tmp_path)  # resolved when the run starts
    record_run(exp)
    want, got = snapshot(main, "proj/sub/run"), snapshot(mirror, "proj/sub/run")
    assert len(want["metrics"]["train"]) == 120 and len(want["files"]) == 2 and want["status"] == "COMPLETED"
    assert got == want


def test_a_reopened_run_appends_to_the_mirror_without_duplicates(pm, tmp_path):
    main, mirror = tmp_path / "main", tmp_path / "mirror"
    for k in range(2):
        with Experiment("proj/run", dash_root=main, stores=[str(mirror)]).run as exp:
            for i in range(50):
                exp.metrics("train").log(step=k * 50 + i)
            exp.log(f"run {k}")
            exp.tracks("t").append(_ts=float(k), v=k)
    assert snapshot(mirror, "proj/run") == snapshot(main, "proj/run")
    assert [r["data"]["step"] for r in load("proj/run", dash_root=str(mirror)).metrics("train").read()] == list(range(100))


def test_every_write_is_idempotent(pm, tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    with Experiment("p/e", dash_root=src).run as exp:
        for i in range(10):
            exp.metrics("m").log(step=i)
            exp.log(f"l{i}")
            exp.tracks("t").append(_ts=float(i), x=i)
        exp.params.set(a=1)
        exp.files("f").save_text("hello", to="h.txt")
    metrics = load("p/e", dash_root=str(src)).metrics("m").read()
    logs = load("p/e", dash_root=str(src)).logs.read()
    raw = (src / "p/e/tracks/t/data.jsonl").read_bytes().splitlines(keepends=True)
    tracks = [json.loads(line) for line in raw]
    starts = [sum(len(x) for x in raw[:i]) for i in range(len(raw) + 1)]  # byte position of each entry, and end
    entry = load("p/e", dash_root=str(src)).files.list()[0]
    info = load("p/e", dash_root=str(src)).info
    content = src / "p/e/files/f" / entry["id"] / "h.txt"

    store = MirrorStore(dst, "p/e")
    for _ in range(2):  # everything delivered twice, as after a crash between a write and the cursor save
        store.open(info)
        store.write_params({"a": 1})
        store.write_metrics("m", metrics[:6])
        store.write_metrics("m", metrics[4:])
        store.write_logs(logs[:3])
        store.write_logs(logs)
        store.write_tracks("t", tracks[:4], 0, offsets=starts[:4], end=starts[4])
        store.write_tracks("t", tracks[2:], starts[2], offsets=starts[2:-1], end=starts[-1])  # overlapping

        store.write_file(entry, str(content))
        store.set_status(info)
    store.close()
    got, want = snapshot(dst, "p/e"), snapshot(src, "p/e")
    assert got["metrics"] == want["metrics"] and got["logs"] == want["logs"]
    assert load("p/e", dash_root=str(dst)).tracks("t").read() == tracks

    # without positions (an older caller): a batch re-sent from the same offset is skipped
    other = MirrorStore(tmp_path / "dst2", "p/e")
    other.open(info)
    for _ in range(2):
        other.write_tracks("t", tracks[:4], 0)
        other.write_tracks("t", tracks[4:], starts[4])
    assert load("p/e", dash_root=str(tmp_path / "dst2")).tracks("t").read() == tracks
    assert got["files"] == want["files"] and got["params"] == {"a": 1}


def test_destinations(tmp_path):
    assert mirror_root("file:///abs/root") == Path("/abs/root")
    assert mirror_root("file://localhost/abs/my%20root") == Path("/abs/my root")
    assert mirror_root("/abs/root") == Path("/abs/root")
    assert mirror_root("./rel") == Path("rel") and mirror_root("a/b") == Path("a/b")
    assert mirror_root("~/bk") == Path.home() / "bk"
    for other in ("tensorboard", "http://h/x", "s3://bucket/x", "mem"):
        assert mirror_root(other) is None
    with pytest.raises(ValueError, match="only local file:// URLs"):
        mirror_root("file://otherhost/x")


def test_the_own_root_is_refused(pm, tmp_path):
    exp = Experiment("p/e", dash_root=tmp_path / "main", stores=[str(tmp_path / "x" / ".." / "main")])
    with pytest.raises(ValueError, match="is the experiment's own .dash root"):
        exp.run.start()
