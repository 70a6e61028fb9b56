"""kill -9 right after the last call: the spill ring (a file-backed shared mapping in the run's private folder)
keeps what the writer thread had not written yet, and the next read or open of the run turns it into the journal,
once and in order."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "helpers"))

import dashtest as dt  # noqa: E402
from ml_dash import Experiment, load  # noqa: E402
from ml_dash.buffer import BufferConfig  # noqa: E402
from ml_dash.ring import recover  # noqa: E402

PREFIX = "proj/run"

BURST = """
import time
from ml_dash import Experiment
exp = Experiment("proj/run")
exp.run.start()
m = exp.metrics("train")
for i in range(2000):
    m.log(step=i, loss=0.5, acc=0.9)
for i in range(100):
    exp.log(f"log {i}")
for i in range(100):
    exp.tracks("robot/pos").append(_ts=float(i), x=i)
print("BURST_DONE", flush=True)
time.sleep(120)
"""


def _ring_files(root: Path) -> list[Path]:
    return list((root / "proj" / "run" / ".ml_dash" / "ring").glob("*.ring"))


def test_kill9_at_0s_keeps_the_burst(tmp_path: Path) -> None:
    for trial in range(2):
        base = tmp_path / str(trial)
        base.mkdir()
        p = dt.start_py(base, BURST)
        dt.wait_line(p, "BURST_DONE")
        dt.kill9(p)  # no delay: the writer thread has had no time to write the burst
        root = base / ".dash"
        v = load(PREFIX, dash_root=root)  # a reader, not a re-open of the run, makes the rows visible
        steps = [r["data"]["step"] for r in v.metrics("train").read()]
        assert len(steps) >= 1980, f"trial {trial}: {len(steps)} of 2000 rows kept"
        assert steps == list(range(len(steps))), "rows must be a clean prefix of the burst: no gap, no duplicate"
        assert [r["index"] for r in v.metrics("train").read()] == list(range(len(steps)))
        logs = v.logs.read()
        assert [g["message"] for g in logs] == [f"log {i}" for i in range(len(logs))] and len(logs) >= 90
        xs = [t["x"] for t in v.tracks("robot/pos").read()]
        assert xs == list(range(len(xs))) and len(xs) >= 90
        meta = json.loads((v.folder / "metrics" / "train" / "metadata.json").read_text())
        assert meta["totalDataPoints"] == len(steps)
        assert not _ring_files(root), "a recovered ring is removed"
        # reading again adds nothing
        assert len(load(PREFIX, dash_root=root).metrics("train").read()) == len(steps)


def test_ring_of_a_live_process_is_left_to_its_writer(tmp_path: Path) -> None:
    code = """
import time
from ml_dash import Experiment
from ml_dash.buffer import BufferConfig
exp = Experiment("proj/run", buffer_config=BufferConfig(write_interval=3600))
exp.run.start()
for i in range(16):
    exp.metrics("train").log(step=i)
print("LOGGED", flush=True)
time.sleep(120)
"""
    p = dt.start_py(tmp_path, code)
    try:
        dt.wait_line(p, "LOGGED")
        root = tmp_path / ".dash"
        assert len(_ring_files(root)) == 1
        v = load(PREFIX, dash_root=root)
        # the owner is alive (it holds the ring's lock): a reader leaves its rows to its writer
        assert v.metrics("train").read() == []
        assert len(_ring_files(root)) == 1
    finally:
        dt.kill9(p)
    rows = load(PREFIX, dash_root=tmp_path / ".dash").metrics("train").read()
    assert [r["data"]["step"] for r in rows] == list(range(16))


def test_rows_being_written_at_the_kill_are_not_duplicated(tmp_path: Path) -> None:
    """The writer took rows from the ring and appended part of them when the process died: recovery writes
    only the rest."""
    exp = Experiment(PREFIX, dash_root=tmp_path, buffer_config=BufferConfig(write_interval=3600, quiet=True))
    exp.run.start()
    buf = exp._buf
    assert buf is not None and buf.ring is not None
    buf._thread = None  # hold the worker back: this test plays its part by hand
    for i in range(64):
        exp.metrics("train").log(step=i)
        exp.log(f"line {i}")
    with buf._ring_lock:
        chunk, ranges = buf.ring.take(1 << 20)  # marks the range in flight
    from ml_dash.ring import decode_lines, split_items

    metrics, _, logs = split_items(decode_lines(chunk))
    assert len(metrics) == 64 and len(logs) == 64
    exp._dir.append_metrics("train", [d for _, d in metrics[:40]])  # 40 rows reached the file, then the kill
    ring_path = buf.ring.path
    buf.ring.close(remove=False)  # the process is gone: its mapping and lock with it
    buf.ring = None
    assert recover(exp._dir) == 24 + 64
    v = load(PREFIX, dash_root=tmp_path)
    assert [r["data"]["step"] for r in v.metrics("train").read()] == list(range(64))
    assert [g["message"] for g in v.logs.read()] == [f"line {i}" for i in range(64)]
    assert not ring_path.exists()
    exp.run.complete()


def test_values_that_orjson_cannot_write_go_through_the_ring_unchanged(tmp_path: Path) -> None:
    code = """
from ml_dash import Experiment
exp = Experiment("proj/run")
exp.run.start()
m = exp.metrics("train")
m.log(step=0, loss=float("nan"), hi=float("inf"), lo=float("-inf"))
m.log(step=1, big=2**70, none=None, text="caf\\u00e9 \\udcff")
exp.metrics().log(x=1)
exp.log("with meta", level="warn", epoch=3)
for i in range(4):  # 8 records in all: the training thread spills every 8
    exp.metrics("train").log(step=2 + i)
print("DONE", flush=True)
import time; time.sleep(120)
"""
    p = dt.start_py(tmp_path, code)
    dt.wait_line(p, "DONE")
    dt.kill9(p)
    v = load(PREFIX, dash_root=tmp_path / ".dash")
    rows = [r["data"] for r in v.metrics("train").read()]
    assert [r["step"] for r in rows] == list(range(6))
    assert math.isnan(rows[0]["loss"]) and rows[0]["hi"] == math.inf and rows[0]["lo"] == -math.inf
    assert rows[1]["big"] == 2**70 and rows[1]["none"] is None and rows[1]["text"] == "caf\u00e9 \udcff"
    assert [r["data"]["x"] for r in v.metrics(None).read()] == [1]
    logs = v.logs.read()
    assert logs[0]["level"] == "warn" and logs[0]["metadata"] == {"epoch": 3}


def test_clean_close_leaves_no_ring(tmp_path: Path) -> None:
    exp = Experiment(PREFIX, dash_root=tmp_path, buffer_config=BufferConfig(quiet=True))
    with exp.run:
        for i in range(1000):
            exp.metrics("train").log(step=i)
        assert len(_ring_files(tmp_path)) == 1
    assert not _ring_files(tmp_path)
    assert len(load(PREFIX, dash_root=tmp_path).metrics("train").read()) == 1000
