"""The .dash layout, field by field (shared/docs/local-layout.md), and reading it back."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import ml_dash
import numpy as np
import pytest
from ml_dash import Experiment
from ml_dash.buffer import BufferConfig

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def _lines(p: Path) -> list[dict]:
    return [json.loads(x) for x in p.read_text().splitlines()]


@pytest.fixture
def run(tmp_path):
    root = tmp_path / ".dash"
    with Experiment("proj/sweeps/lr-0.01/run1", dash_root=root, description="d", tags=["a", "b"],
                    metadata={"k": 1}).run as exp:
        exp.params.set(lr=0.01, model={"name": "resnet", "layers": 18})
        exp.params.set(lr=0.02, extra=True)
        exp.log("hello", metadata={"x": 1})
        exp.logs.warn("careful", step=3)
        exp.metrics("train").log(step=0, loss=0.5)
        exp.metrics("train").log(step=1, loss=float("nan"), acc=float("inf"), neg=-math.inf)
        exp.metrics("eval/sub").log(step=0, acc=np.float32(0.25), n=np.int64(3), arr=np.array(2.0))
        exp.metrics.log(epoch=1, train={"loss": 0.4}, eval={"loss": 0.6})
        exp.metrics.log(x=1)
        exp.tracks("robot/position").append(_ts=0.1, x=1.0)
        exp.tracks("robot/position").append(_ts=0.1, y=2.0, pose={"q": 1})
        exp.tracks("robot/position").append(_ts=0.2, x=3.0)
        exp.tracks("robot_position").append(_ts=0.5, z=9)
        exp.files("imgs/a").save_text("hello", to="greeting.txt")
    return root / "proj" / "sweeps" / "lr-0.01" / "run1"


def test_experiment_json(run):
    info = json.loads((run / "experiment.json").read_text())
    for key in ("name", "project", "description", "tags", "bindrs", "prefix", "metadata", "created_at",
                "updated_at", "write_protected", "status"):
        assert key in info
    assert info["name"] == "run1" and info["project"] == "proj"
    assert info["prefix"] == "proj/sweeps/lr-0.01/run1"
    assert info["tags"] == ["a", "b"] and info["bindrs"] == [] and info["metadata"] == {"k": 1}
    assert info["write_protected"] is False and info["status"] == "COMPLETED"
    assert ISO.match(info["created_at"]) and ISO.match(info["updated_at"])


def test_parameters_json(run):
    p = json.loads((run / "parameters.json").read_text())
    assert p["data"] == {"lr": 0.02, "model.name": "resnet", "model.layers": 18, "extra": True}
    assert isinstance(p["version"], int) and p["version"] >= 1
    assert ISO.match(p["updatedAt"])


def test_logs_jsonl(run):
    lines = _lines(run / "logs" / "logs.jsonl")
    assert [x["sequenceNumber"] for x in lines] == [0, 1]
    assert lines[0]["level"] == "info" and lines[0]["message"] == "hello" and lines[0]["metadata"] == {"x": 1}
    assert lines[1]["level"] == "warn" and lines[1]["metadata"] == {"step": 3}
    assert all(ISO.match(x["timestamp"]) for x in lines)
    assert set(lines[0]) == {"sequenceNumber", "timestamp", "level", "message", "metadata"}


def test_metrics_data_and_metadata(run):
    lines = _lines(run / "metrics" / "train" / "data.jsonl")
    assert [x["index"] for x in lines] == [0, 1, 2]
    assert set(lines[0]) == {"index", "data", "createdAt"} and ISO.match(lines[0]["createdAt"])
    assert lines[0]["data"]["loss"] == 0.5 and isinstance(lines[0]["data"]["_ts"], float)
    assert math.isnan(lines[1]["data"]["loss"]) and lines[1]["data"]["acc"] == math.inf
    assert lines[1]["data"]["neg"] == -math.inf
    raw = (run / "metrics" / "train" / "data.jsonl").read_text()
    assert "NaN" in raw and "Infinity" in raw and "-Infinity" in raw
    assert lines[2]["data"]["loss"] == 0.4 and lines[2]["data"]["epoch"] == 1
    meta = json.loads((run / "metrics" / "train" / "metadata.json").read_text())
    for key in ("metricId", "name", "description", "tags", "metadata", "totalDataPoints", "nextIndex",
                "createdAt", "updatedAt"):
        assert key in meta
    assert meta["name"] == "train" and meta["totalDataPoints"] == 3 and meta["nextIndex"] == 3
    nested = _lines(run / "metrics" / "eval" / "sub" / "data.jsonl")
    assert nested[0]["data"]["acc"] == 0.25 and nested[0]["data"]["n"] == 3 and nested[0]["data"]["arr"] == 2.0
    assert _lines(run / "metrics" / "None" / "data.jsonl")[0]["data"]["x"] == 1
    assert _lines(run / "metrics" / "eval" / "data.jsonl")[0]["data"]["loss"] == 0.6


def test_tracks(run):
    folder = run / "tracks" / "robot_position"
    lines = _lines(folder / "data.jsonl")
    assert lines[0] == {"timestamp": 0.1, "x": 1.0, "y": 2.0, "pose.q": 1}
    assert lines[1] == {"timestamp": 0.2, "x": 3.0}
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["topic"] == "robot/position" and meta["columns"] == ["pose.q", "x", "y"]
    assert meta["totalEntries"] == 2 and meta["firstTimestamp"] == 0.1 and meta["lastTimestamp"] == 0.2
    for key in ("trackId", "createdAt"):
        assert key in meta
    # a different topic mapping to the same folder name gets its own folder instead of mixing
    other = json.loads((run / "tracks" / "robot_position~2" / "metadata.json").read_text())
    assert other["topic"] == "robot_position"


def test_files(run):
    idx = json.loads((run / "files" / ".files_metadata.json").read_text())
    (e,) = idx["files"]
    for key in ("id", "experimentId", "path", "filename", "description", "tags", "bindrs", "contentType",
                "sizeBytes", "checksum", "metadata", "uploadedAt", "updatedAt", "deletedAt"):
        assert key in e
    assert e["path"] == "/imgs/a" and e["filename"] == "greeting.txt" and e["sizeBytes"] == 5
    assert e["checksum"] == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert (run / "files" / "imgs" / "a" / e["id"] / "greeting.txt").read_text() == "hello"
    assert e["deletedAt"] is None


def test_load_reads_everything_back(run, tmp_path):
    v = ml_dash.load("proj/sweeps/lr-0.01/run1", dash_root=tmp_path / ".dash")
    assert v.status == "COMPLETED"
    assert v.metrics.names() == ["None", "eval", "eval/sub", "train"]
    assert [r["data"]["step"] for r in v.metrics("train").read()[:2]] == [0, 1]
    assert [x["message"] for x in v.logs.read()] == ["hello", "careful"]
    assert v.tracks("robot/position").read() == [{"timestamp": 0.1, "x": 1.0, "y": 2.0, "pose.q": 1},
                                                 {"timestamp": 0.2, "x": 3.0}]
    assert v.tracks("robot_position").read() == [{"timestamp": 0.5, "z": 9}]
    assert sorted(v.tracks.topics()) == ["robot/position", "robot_position"]
    assert v.params.get()["model.layers"] == 18
    assert v.params.get(flatten=False)["model"] == {"name": "resnet", "layers": 18}
    (f,) = v.files.list()
    assert Path(f["localPath"]).read_text() == "hello"


def test_reopening_appends_without_reusing_indices(tmp_path):
    root = tmp_path / ".dash"
    for _ in range(3):
        with Experiment("p/again", dash_root=root).run as exp:
            exp.log("x")
            exp.metrics("m").log(v=1)
    v = ml_dash.load("p/again", dash_root=root)
    assert [r["index"] for r in v.metrics("m").read()] == [0, 1, 2]
    assert [r["sequenceNumber"] for r in v.logs.read()] == [0, 1, 2]


def test_torn_last_line_is_ignored_and_cut_by_the_next_writer(tmp_path):
    root = tmp_path / ".dash"
    with Experiment("p/torn", dash_root=root).run as exp:
        exp.metrics("m").log(v=1)
    data = root / "p" / "torn" / "metrics" / "m" / "data.jsonl"
    with open(data, "a") as f:
        f.write('{"index": 1, "data": {"v"')
    assert [r["index"] for r in ml_dash.load("p/torn", root).metrics("m").read()] == [0]
    meta = data.parent / "metadata.json"
    meta.write_text("{corrupt")  # a torn metadata file must not reset indices
    with Experiment("p/torn", dash_root=root).run as exp:
        exp.metrics("m").log(v=2)
    rows = ml_dash.load("p/torn", root).metrics("m").read()
    assert [(r["index"], r["data"]["v"]) for r in rows] == [(0, 1), (1, 2)]
    assert json.loads(meta.read_text())["nextIndex"] == 2


def test_reading_a_live_experiment_sees_everything_logged_before(tmp_path):
    exp = Experiment("p/live", dash_root=tmp_path, buffer_config=BufferConfig(write_interval=60)).run.start()
    for i in range(10):
        exp.metrics("m").log(i=i)
    assert [r["data"]["i"] for r in exp.metrics("m").read()] == list(range(10))
    exp.run.complete()


def test_track_metadata_counts_every_writer_though_each_rewrites_it_once_per_pass(tmp_path):
    """A writer thread rewrites a topic's metadata.json once per pass (not per batch): another writer's entries
    are counted from the bytes it appended, and a file whose metadata.json lags behind is counted again."""
    from ml_dash.layout import ExperimentDir, meta_file

    a, b = ExperimentDir(tmp_path, "p/r"), ExperimentDir(tmp_path, "p/r")
    a.defer_meta = b.defer_meta = True
    a.append_tracks("pos", [{"timestamp": 1.0, "x": 1}, {"timestamp": 2.0, "x": 2}])
    b.append_tracks("pos", [{"timestamp": 3.0, "y": 3}])  # a's counts are not in metadata.json yet
    a.append_tracks("pos", [{"timestamp": 4.0, "x": 4}])
    b.write_metas()
    a.write_metas()  # written last: must count b's entry too
    path = meta_file(a.stream_path("tracks", "pos"))
    meta = json.loads(path.read_text())
    assert (meta["totalEntries"], meta["columns"], meta["firstTimestamp"], meta["lastTimestamp"]) == \
        (4, ["x", "y"], 1.0, 4.0)
    b.write_metas()  # nothing new for b: unchanged
    a.append_tracks("pos", [{"timestamp": 5.0, "z": 5}])  # a process killed before its pass: metadata.json lags
    c = ExperimentDir(tmp_path, "p/r")
    c.append_tracks("pos", [{"timestamp": 6.0, "x": 6}])  # not deferred: written now, after counting the file
    meta = json.loads(path.read_text())
    assert (meta["totalEntries"], meta["columns"], meta["lastTimestamp"]) == (6, ["x", "y", "z"], 6.0)
    assert [e["timestamp"] for e in _lines(a.stream_path("tracks", "pos"))] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
