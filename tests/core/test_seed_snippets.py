"""Every code snippet of the seed document runs unchanged, each in its own process, and does what it says.

Names a snippet uses without defining (train_model, loss, model, torch, experiment, BufferConfig, Experiment)
come from a short prelude; nothing else is added.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from ml_dash import load

HERE = Path(__file__).parent
SEED = HERE.parents[2] / "shared" / "seed" / "background-buffering.md"
if not SEED.exists():  # CI lays ../shared beside the clone; a copy travels with the tests
    SEED = HERE / "seed" / "background-buffering.md"

BLOCKS = re.findall(r"```(\w*)\n(.*?)```", SEED.read_text(), re.S)
PY = [code for lang, code in BLOCKS if lang == "python"]


def _prelude(code: str) -> str:
    lines = []
    if "Experiment(" in code and "import Experiment" not in code:
        lines.append("from ml_dash import Experiment")
    if "BufferConfig(" in code and "import BufferConfig" not in code:
        lines.append("from ml_dash.buffer import BufferConfig")
    if "torch." in code and "import torch" not in code:
        lines.append("import torch")
    if "train_model(" in code:
        lines.append("def train_model():\n    return 0.25")
    if re.search(r"\bloss=loss\b", code):
        lines.append("loss = 0.25")
    if re.search(r"\bmodel\b", code) and "torch.save(model" in code:
        lines.append("model = torch.nn.Linear(2, 1)")
    if "experiment." in code and "as experiment" not in code:
        lines.append("from ml_dash import Experiment as _E")
        lines.append('experiment = _E("my-project/exp").run.start()')
    return "\n".join(lines) + "\n"


def _run(code: str, tmp_path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "snippet.py"
    script.write_text(_prelude(code) + code)
    e = {k: v for k, v in os.environ.items() if not k.startswith("ML_DASH_")}
    e.update(env or {})
    return subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=240, env=e)


def test_the_seed_has_the_snippets_we_expect():
    assert len(PY) == 10, [c.splitlines()[0] for c in PY]


@pytest.mark.parametrize("index", range(len(PY)))
def test_snippet_runs_unchanged(index, tmp_path):
    code = PY[index]
    r = _run(code, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    if "xperiment" not in code:  # the configuration-only snippet
        assert "BufferConfig(" in code
        return
    run = load("my-project/exp", dash_root=tmp_path / ".dash")
    assert run.status == "COMPLETED"
    logs = run.logs.read()
    # what each snippet promises, read back from disk
    if "for batch in range(1000)" in code:
        rows = run.metrics("train").read()
        assert len(rows) == 100_000
        assert [r["index"] for r in rows] == list(range(100_000))
        assert rows[-1]["data"]["epoch"] == 99 and rows[-1]["data"]["batch"] == 999
        assert logs[0]["message"] == "Training started"
        assert run.params.get() == {"learning_rate": 0.001}
        assert "[ML-Dash] Flushing buffered data..." in r.stderr
    if "executor.map(worker" in code:
        assert sorted(x["message"] for x in logs) == sorted(f"Worker {i}" for i in range(1000))
        steps = sorted(x["data"]["step"] for x in run.metrics("train").read())
        assert steps == list(range(1000))
    if "range(10000)" in code:
        assert [x["message"] for x in logs] == [f"Step {i}" for i in range(10000)]
    if "for i in range(1000):" in code and "Returns instantly" in code or "Blocks!" in code:
        assert [x["message"] for x in logs] == [f"Step {i}" for i in range(1000)]
    if "Important checkpoint" in code:
        assert logs[-1]["message"] == "Important checkpoint"
    if "torch.save(model" in code:
        assert len(run.metrics("train").read()) == 100
        assert (tmp_path / "checkpoint.pt").exists()
    if "Using custom buffer config" in code or "Immediate write" in code:
        assert logs[-1]["message"] in ("Using custom buffer config", "Immediate write")


def test_manual_flush_makes_metrics_durable_before_the_checkpoint(tmp_path):
    code = next(c for c in PY if "torch.save(model" in c)
    probe = code.replace('torch.save(model, "checkpoint.pt")',
                         'torch.save(model, "checkpoint.pt")\n'
                         '    import json; n = sum(1 for _ in open(".dash/my-project/exp/metrics/train/data.jsonl"))\n'
                         '    print("ROWS_AT_CHECKPOINT", n)')
    r = _run(probe, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "ROWS_AT_CHECKPOINT 100" in r.stdout


def test_disabling_buffering_writes_through(tmp_path):
    code = next(c for c in PY if "Immediate write" in c)
    probe = code.replace('exp.log("Immediate write")',
                         'exp.log("Immediate write")\n'
                         '    print("LINES", sum(1 for _ in open(".dash/my-project/exp/logs/logs.jsonl")))')
    r = _run(probe, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "LINES 1" in r.stdout


def test_environment_snippet_configures_the_buffer(tmp_path):
    bash = next(code for lang, code in BLOCKS if lang == "bash" and "ML_DASH_FLUSH_INTERVAL" in code)
    check = ("from ml_dash.buffer import BufferConfig; c = BufferConfig(); "
             "print(c.buffer_enabled, c.flush_interval, c.log_batch_size, c.metric_batch_size, "
             "c.track_batch_size, c.file_upload_workers)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ML_DASH_")}
    r = subprocess.run(["bash", "-c", bash.replace("5.0", "7.5").replace("=4", "=3") + f'\n"{sys.executable}" -c "{check}"'],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "7.5", "100", "100", "100", "3"]


def test_progress_messages_have_the_seeds_shape(tmp_path):
    code = """
from ml_dash import Experiment
import numpy as np
with Experiment("my-project/my-experiment").run as exp:
    for i in range(1000):
        exp.log(f"Step {i}")
    for i in range(100):
        exp.metrics("train").log(step=i, loss=0.5)
    for i in range(50):
        exp.tracks("robot/pos").append(_ts=float(i), x=1.0)
    for i in range(10):
        exp.files("frames").save_image(np.zeros((4, 4, 3), dtype=np.uint8), to=f"frame_{i + 1:04d}.jpg")
"""
    # no periodic flush before close (a slow machine may take over a minute here): every count is still pending
    r = _run(code, tmp_path, env={"ML_DASH_FLUSH_INTERVAL": "3600"})
    assert r.returncode == 0, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[0] == "[ML-Dash] Flushing buffered data..."
    assert lines[1] == "[ML-Dash]   - 1000 log(s), 100 metric(s), 50 track(s), 10 file(s)"
    assert lines[2] == "[ML-Dash]   Uploading 10 file(s)..."
    assert sorted(lines[3:13]) == sorted(f"[ML-Dash]   [{k}/10] Uploaded frame_{i:04d}.jpg"
                                         for k, i in zip(range(1, 11), range(1, 11), strict=True)) or \
        [ln.split("] Uploaded ")[0] for ln in lines[3:13]] == [f"[ML-Dash]   [{k}/10" for k in range(1, 11)]
    assert lines[13] == "[ML-Dash] ✓ All data flushed successfully"
    assert lines[14] == "✓ Experiment completed: my-experiment"
    assert len(lines) == 15


def test_quiet_and_empty_runs_print_nothing(tmp_path):
    r = _run('from ml_dash import Experiment\nwith Experiment("my-project/exp").run as e:\n    pass\n', tmp_path)
    assert r.returncode == 0 and r.stderr == ""
    r = _run('from ml_dash import Experiment\nwith Experiment("my-project/exp").run as e:\n    e.log("x")\n',
             tmp_path, env={"ML_DASH_QUIET": "1"})
    assert r.returncode == 0 and r.stderr == ""
