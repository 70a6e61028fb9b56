"""Every way a process ends (issue 3): the exit hook, exceptions, Ctrl-C, SIGINT and SIGTERM, in real processes."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "helpers"))

import dashtest as dt  # noqa: E402
from ml_dash import load  # noqa: E402

PREFIX = "proj/run"

BODY = """
import os, sys, signal, time
from ml_dash import Experiment
exp = Experiment("proj/run")
exp.params.set(lr=0.1, model={"name": "mlp", "layers": 2})
for i in range(500):
    exp.metrics("train").log(step=i, loss=1.0 / (i + 1))
for i in range(20):
    exp.log(f"line {i}", step=i)
exp.tracks("robot/pos").append(_ts=1.0, x=1.0)
exp.files("cfg").save_text("hello", to="note.txt")
"""


def check_all_data(root: Path) -> None:
    v = load(PREFIX, dash_root=root)
    rows = v.metrics("train").read()
    assert [r["data"]["step"] for r in rows] == list(range(500))
    assert [r["index"] for r in rows] == list(range(500))
    logs = v.logs.read()
    assert [g["message"] for g in logs] == [f"line {i}" for i in range(20)]
    assert [g["sequenceNumber"] for g in logs] == list(range(20))
    assert v.params.get() == {"lr": 0.1, "model.name": "mlp", "model.layers": 2}
    assert v.tracks("robot/pos").read() == [{"timestamp": 1.0, "x": 1.0}]
    files = v.files.list()
    assert [(f["path"], f["filename"]) for f in files] == [("/cfg", "note.txt")]
    assert Path(files[0]["localPath"]).read_text() == "hello"


def test_plain_exit_without_with_or_complete(tmp_path: Path) -> None:
    r = dt.run_py(tmp_path, BODY + "print('end of script')\n")
    assert r.returncode == 0, r.stderr
    root = tmp_path / ".dash"
    check_all_data(root)
    v = load(PREFIX, dash_root=root)
    assert v.status == "COMPLETED"
    assert "✓ All data flushed successfully" in r.stderr
    assert "Experiment completed: run" in r.stderr


def test_sys_exit_zero_is_completed(tmp_path: Path) -> None:
    r = dt.run_py(tmp_path, BODY + "sys.exit(0)\n")
    assert r.returncode == 0, r.stderr
    check_all_data(tmp_path / ".dash")
    assert load(PREFIX, dash_root=tmp_path / ".dash").status == "COMPLETED"


def test_unhandled_exception_is_failed_with_data(tmp_path: Path) -> None:
    r = dt.run_py(tmp_path, BODY + "raise RuntimeError('boom in training')\n")
    assert r.returncode == 1
    assert "RuntimeError: boom in training" in r.stderr  # the user's traceback is still printed
    root = tmp_path / ".dash"
    check_all_data(root)
    v = load(PREFIX, dash_root=root)
    assert v.status == "FAILED"
    assert "boom in training" in v.info.get("statusReason", "")


def test_exception_inside_with_block_is_failed(tmp_path: Path) -> None:
    code = """
    from ml_dash import Experiment
    with Experiment("proj/run").run as exp:
        exp.metrics("train").log(step=0, loss=1.0)
        raise ValueError("bad batch")
    """
    r = dt.run_py(tmp_path, code)
    assert r.returncode == 1
    v = load(PREFIX, dash_root=tmp_path / ".dash")
    assert v.status == "FAILED"
    assert "ValueError: bad batch" in v.info["statusReason"]
    assert len(v.metrics("train").read()) == 1


def test_keyboard_interrupt_is_cancelled(tmp_path: Path) -> None:
    r = dt.run_py(tmp_path, BODY + "raise KeyboardInterrupt\n")
    assert r.returncode != 0
    root = tmp_path / ".dash"
    check_all_data(root)
    assert load(PREFIX, dash_root=root).status == "CANCELLED"


def test_real_sigint_is_cancelled(tmp_path: Path) -> None:
    code = BODY + """
print("READY", flush=True)
while True:
    exp.metrics("live").log(x=1)
    time.sleep(0.001)
"""
    p = dt.start_py(tmp_path, code)
    dt.wait_line(p, "READY")
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=30)
    assert p.returncode != 0
    assert "KeyboardInterrupt" in err
    root = tmp_path / ".dash"
    check_all_data(root)
    v = load(PREFIX, dash_root=root)
    assert v.status == "CANCELLED"
    live = v.metrics("live").read()
    dt.assert_gap_free([r["index"] for r in live], "live")


def test_sigterm_flushes_marks_cancelled_and_dies_by_sigterm(tmp_path: Path) -> None:
    code = BODY + """
print("READY", flush=True)
time.sleep(60)
print("NOT REACHED", flush=True)
"""
    p = dt.start_py(tmp_path, code)
    dt.wait_line(p, "READY")
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=30)
    assert p.returncode == -signal.SIGTERM, (p.returncode, err)
    assert "NOT REACHED" not in out
    root = tmp_path / ".dash"
    check_all_data(root)
    v = load(PREFIX, dash_root=root)
    assert v.status == "CANCELLED"
    assert v.info.get("statusReason") == "SIGTERM"


def test_sigterm_runs_previous_python_handler(tmp_path: Path) -> None:
    code = """
import os, signal, time
from pathlib import Path

def handler(signum, frame):
    Path("handler-ran").write_text(str(signum))
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)

signal.signal(signal.SIGTERM, handler)
""" + BODY + """
print("READY", flush=True)
time.sleep(60)
"""
    p = dt.start_py(tmp_path, code)
    dt.wait_line(p, "READY")
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=30)
    assert (tmp_path / "handler-ran").read_text() == str(int(signal.SIGTERM)), err
    assert p.returncode == -signal.SIGTERM, (p.returncode, err)
    root = tmp_path / ".dash"
    check_all_data(root)
    assert load(PREFIX, dash_root=root).status == "CANCELLED"


def test_sigterm_previous_handler_raising_systemexit(tmp_path: Path) -> None:
    """A scheduler-friendly script that turns SIGTERM into sys.exit(3) keeps its exit code."""
    code = """
import sys, signal, time

def handler(signum, frame):
    sys.exit(3)

signal.signal(signal.SIGTERM, handler)
""" + BODY + """
print("READY", flush=True)
time.sleep(60)
"""
    p = dt.start_py(tmp_path, code)
    dt.wait_line(p, "READY")
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 3, err
    root = tmp_path / ".dash"
    check_all_data(root)
    assert load(PREFIX, dash_root=root).status == "CANCELLED"


def test_sigterm_inside_with_block(tmp_path: Path) -> None:
    code = """
import time
from ml_dash import Experiment
with Experiment("proj/run").run as exp:
    for i in range(300):
        exp.metrics("train").log(step=i)
    print("READY", flush=True)
    time.sleep(60)
"""
    p = dt.start_py(tmp_path, code)
    dt.wait_line(p, "READY")
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=30)
    assert p.returncode == -signal.SIGTERM, err
    v = load(PREFIX, dash_root=tmp_path / ".dash")
    assert v.status == "CANCELLED"
    assert [r["data"]["step"] for r in v.metrics("train").read()] == list(range(300))


def test_run_that_recorded_nothing_prints_nothing(tmp_path: Path) -> None:
    code = """
from ml_dash import Experiment
exp = Experiment("proj/run")
exp.run.start()
"""
    r = dt.run_py(tmp_path, code)
    assert r.returncode == 0, r.stderr
    assert "[ML-Dash]" not in r.stderr
    assert load(PREFIX, dash_root=tmp_path / ".dash").status == "COMPLETED"


def test_explicit_status_is_not_overwritten_by_exit_hook(tmp_path: Path) -> None:
    code = """
from ml_dash import Experiment
exp = Experiment("proj/run")
exp.metrics("train").log(step=0)
exp.run.fail("diverged")
raise SystemExit(0)
"""
    r = dt.run_py(tmp_path, code)
    assert r.returncode == 0, r.stderr
    v = load(PREFIX, dash_root=tmp_path / ".dash")
    assert v.status == "FAILED"
    assert v.info["statusReason"] == "diverged"
    json.dumps(v.info)
