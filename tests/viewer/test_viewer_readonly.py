"""No viewer route writes: a run whose process was killed -9 shows the rows its spill ring kept, and a whole
browser session over it (runs table, run page, charts, logs, tracks, live stream) changes no file of the root."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

from ml_dash import load
from viewer_env import _env

BURST = """
import time
from ml_dash import Experiment
exp = Experiment("proj/killed")
exp.run.start()
m = exp.metrics("train")
for i in range(2000):
    m.log(step=i, loss=1.0 / (i + 1))
for i in range(100):
    exp.log(f"line {i}")
for i in range(100):
    exp.tracks("robot/pos").append(_ts=float(i), x=float(i), y=0.0)
print("BURST_DONE", flush=True)
time.sleep(120)
"""


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def test_a_killed_run_is_shown_with_its_ring_rows_and_nothing_is_written(tmp_path: Path, start_viewer, page) -> None:
    root = tmp_path / ".dash"
    script = tmp_path / "burst.py"
    script.write_text(textwrap.dedent(BURST))
    env = _env()
    env["ML_DASH_ROOT"] = str(root)
    p = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and "BURST_DONE" in p.stdout.readline()
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    rings = list((root / "proj" / "killed").rglob("*.ring"))
    assert rings, "the killed process left its spill ring"
    data = root / "proj" / "killed" / "metrics" / "train" / "data.jsonl"
    in_file = len(data.read_bytes().splitlines()) if data.exists() else 0
    before = _snapshot(root)
    v = start_viewer(root)
    pg = page.page
    pg.goto(v.url + "/")
    pg.wait_for_function("() => window.__mlDash && window.__mlDash.ready", timeout=90_000)
    pg.goto(v.url + "/run/proj/killed")
    pg.wait_for_function("() => window.__mlDash && window.__mlDash.ready", timeout=90_000)
    c = page.chart("train/loss")
    info = _get(v.url + "/api/view/run?run=proj/killed")
    shown = info["streams"]["train"]["rows"]
    series = _get(v.url + "/api/view/series?run=proj/killed&stream=train&field=step&n=5000")
    steps = [y for y in series["runs"][0]["y"] if y is not None]
    logs = _get(v.url + "/api/view/logs?run=proj/killed&limit=5000")
    track = _get(v.url + "/api/view/track?run=proj/killed&topic=robot/pos")
    assert _snapshot(root) == before, "the viewer changed files under the root"
    assert all(r.exists() for r in rings), "the viewer recovered (wrote) the ring"
    # what the viewer showed is what recovery writes: the burst, a clean prefix without gaps or duplicates
    kept = [r["data"]["step"] for r in load("proj/killed", dash_root=root).metrics("train").read()]
    assert len(kept) >= 1980 and shown == len(kept) and c["points"] > 0
    assert in_file < len(kept), "the kill came after the writer had written every row: nothing came from the ring"
    assert steps == [float(s) for s in kept]
    assert [r["message"] for r in logs["rows"]] == [g["message"] for g in load("proj/killed", dash_root=root).logs.read()]
    assert len(logs["rows"]) >= 90 and track["rows"] >= 90
    assert not page.errors, page.errors
