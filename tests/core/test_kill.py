"""kill -9 (issue 3): what was logged more than write_interval before the kill is on disk and reads back cleanly;
a run whose process died reads back as CRASHED once its heartbeat is stale."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "helpers"))

import dashtest as dt  # noqa: E402
import ml_dash.reader  # noqa: E402
from ml_dash import Experiment, load  # noqa: E402
from ml_dash.buffer import BufferConfig  # noqa: E402

PREFIX = "proj/run"

BURST = """
import time
from ml_dash import Experiment
exp = Experiment("proj/run")
exp.params.set(lr=0.1)
for i in range(2000):
    exp.metrics("train").log(step=i, loss=0.5)
for i in range(100):
    exp.log(f"log {i}")
for i in range(100):
    exp.tracks("pos").append(_ts=float(i), x=i)
print("BURST_DONE", flush=True)
time.sleep(120)
"""


def burst_then_kill(tmp_path: Path, delay: float) -> Path:
    p = dt.start_py(tmp_path, BURST)  # default write_interval (0.2 s)
    dt.wait_line(p, "BURST_DONE")
    time.sleep(delay)
    dt.kill9(p)
    return tmp_path / ".dash"


def test_kill9_half_a_second_after_burst_keeps_everything(tmp_path: Path) -> None:
    root = burst_then_kill(tmp_path, 0.5)
    v = load(PREFIX, dash_root=root)
    rows = v.metrics("train").read()
    assert [r["data"]["step"] for r in rows] == list(range(2000))
    assert [r["index"] for r in rows] == list(range(2000))
    logs = v.logs.read()
    assert [g["message"] for g in logs] == [f"log {i}" for i in range(100)]
    assert [g["sequenceNumber"] for g in logs] == list(range(100))
    assert [t["x"] for t in v.tracks("pos").read()] == list(range(100))
    assert v.params.get() == {"lr": 0.1}
    meta = json.loads((v.folder / "metrics" / "train" / "metadata.json").read_text())
    assert meta["totalDataPoints"] == 2000
    # the run never got a final status: RUNNING while the heartbeat is fresh, CRASHED once it is stale
    assert v.info["status"] == "RUNNING"
    assert v.status == "RUNNING"
    dt.set_info(root, PREFIX, heartbeatAt="2000-01-01T00:00:00.000000Z")
    assert load(PREFIX, dash_root=root).status == "CRASHED"


def test_crashed_via_stale_after(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = burst_then_kill(tmp_path, 0.5)
    assert load(PREFIX, dash_root=root).status == "RUNNING"
    time.sleep(0.05)
    monkeypatch.setattr(ml_dash.reader, "STALE_AFTER", 0.01)
    assert load(PREFIX, dash_root=root).status == "CRASHED"


def test_completed_run_never_reads_as_crashed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exp = Experiment(PREFIX, dash_root=tmp_path)
    exp.metrics("train").log(step=0)
    exp.run.complete()
    monkeypatch.setattr(ml_dash.reader, "STALE_AFTER", 0.0)
    dt.set_info(tmp_path, PREFIX, heartbeatAt="2000-01-01T00:00:00.000000Z")
    assert load(PREFIX, dash_root=tmp_path).status == "COMPLETED"


def test_torn_last_lines_are_ignored_and_cut_by_next_writer(tmp_path: Path) -> None:
    root = burst_then_kill(tmp_path, 0.5)
    folder = root / "proj" / "run"
    data = folder / "metrics" / "train" / "data.jsonl"
    logs = folder / "logs" / "logs.jsonl"
    track = folder / "tracks" / "pos" / "data.jsonl"
    # what a write cut by the kill leaves behind: a partial last line without a newline
    with open(data, "ab") as f:
        f.write(b'{"index": 2000, "data": {"step": 20')
    with open(logs, "ab") as f:
        f.write(b'{"sequenceNumber": 100, "timest')
    with open(track, "ab") as f:
        f.write(b'{"timestamp": 1')
    v = load(PREFIX, dash_root=root)
    assert len(v.metrics("train").read()) == 2000
    assert len(v.logs.read()) == 100
    assert len(v.tracks("pos").read()) == 100
    # re-running the script appends to the same run: indices continue, the torn lines are gone
    exp = Experiment(PREFIX, dash_root=root, buffer_config=BufferConfig(write_interval=0.01))
    for i in range(2000, 2010):
        exp.metrics("train").log(step=i)
    exp.log("after restart")
    exp.tracks("pos").append(_ts=500.0, x=500)
    exp.run.complete()
    v = load(PREFIX, dash_root=root)
    rows = v.metrics("train").read()
    assert [r["index"] for r in rows] == list(range(2010))
    assert [r["data"]["step"] for r in rows] == list(range(2010))
    assert [g["sequenceNumber"] for g in v.logs.read()] == list(range(101))
    assert v.tracks("pos").read()[-1] == {"timestamp": 500.0, "x": 500}
    for p in (data, logs, track):
        for line in p.read_bytes().splitlines():
            json.loads(line)  # every line on disk parses
    assert v.status == "COMPLETED"


def test_corrupt_metadata_does_not_reset_indices(tmp_path: Path) -> None:
    root = burst_then_kill(tmp_path, 0.5)
    meta = root / "proj" / "run" / "metrics" / "train" / "metadata.json"
    meta.write_text('{"totalDataPoints": 0, "nextIndex": 0')  # torn metadata
    exp = Experiment(PREFIX, dash_root=root)
    exp.metrics("train").log(step=2000)
    exp.run.complete()
    rows = load(PREFIX, dash_root=root).metrics("train").read()
    assert [r["index"] for r in rows] == list(range(2001))


def test_heartbeat_is_refreshed_while_running(tmp_path: Path) -> None:
    code = """
import time
from ml_dash import Experiment
exp = Experiment("proj/run")
exp.metrics("train").log(step=0)
print("READY", flush=True)
time.sleep(60)
"""
    p = dt.start_py(tmp_path, code)
    try:
        dt.wait_line(p, "READY")
        time.sleep(0.3)
        first = dt.info(tmp_path / ".dash", PREFIX)["heartbeatAt"]
        deadline = time.monotonic() + 12  # the contract: at least every 10 s
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if dt.info(tmp_path / ".dash", PREFIX)["heartbeatAt"] != first:
                break
        else:
            pytest.fail("heartbeatAt was not refreshed within 12 s")
    finally:
        dt.kill9(p)
