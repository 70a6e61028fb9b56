"""A training step that raises: the run ends FAILED (CANCELLED for Ctrl-C) with the earlier rows on disk."""

from __future__ import annotations

import os
import subprocess
import sys

import ml_dash_hf
import pytest
from hf_tiny import Exploding, RegressionDataset, make_args, rows
from ml_dash import load
from ml_dash_hf import MLDashCallback
from transformers import Trainer

pytestmark = pytest.mark.timeout(120)  # a hang (e.g. at close) fails the test instead of the whole run

HERE = os.path.dirname(os.path.abspath(__file__))


def _trainer(tmp_path, cb, model):
    args = make_args(tmp_path, max_steps=8, logging_steps=1)
    return Trainer(model=model, args=args, train_dataset=RegressionDataset(32), callbacks=[cb])


def test_wrapper_marks_failed_at_once_and_reraises(tmp_path, dash_root):
    cb = MLDashCallback("hf-tests/fail", dash_root=dash_root)
    trainer = _trainer(tmp_path, cb, Exploding(fail_at=5))
    with pytest.raises(RuntimeError, match="boom in forward call 5"):
        ml_dash_hf.train(trainer)
    # already on disk, while this process is still alive: no exit hook involved
    view = load("hf-tests/fail", dash_root=dash_root)
    assert view.status == "FAILED"
    assert "RuntimeError" in view.info["statusReason"] and "boom" in view.info["statusReason"]
    assert [r["step"] for r in rows(view, "train")] == [1, 2, 3, 4]
    errors = [e for e in view.logs.read() if e["level"] == "error"]
    assert errors and "boom in forward call 5" in errors[-1]["message"]
    assert "Traceback" in errors[-1]["metadata"]["traceback"]
    params = view.params.get()
    assert params["model.class"] == "Exploding" and params["model.num_parameters"] == 5
    assert not any(
        k.startswith("model.")
        and k not in {"model.class", "model.num_parameters", "model.num_trainable_parameters"}
        for k in params
    )


def test_guard_context_manager_marks_cancelled_on_keyboard_interrupt(tmp_path, dash_root):
    cb = MLDashCallback("hf-tests/cancel", dash_root=dash_root)
    trainer = _trainer(tmp_path, cb, Exploding(fail_at=3, exc=KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        with cb.guard():
            trainer.train()
    view = load("hf-tests/cancel", dash_root=dash_root)
    assert view.status == "CANCELLED"
    assert [r["step"] for r in rows(view, "train")] == [1, 2]


def test_rerun_after_failure_reopens_the_same_run(tmp_path, dash_root):
    cb = MLDashCallback("hf-tests/retry", dash_root=dash_root)
    model = Exploding(fail_at=3)
    trainer = _trainer(tmp_path, cb, model)
    with pytest.raises(RuntimeError):
        ml_dash_hf.train(trainer)
    assert load("hf-tests/retry", dash_root=dash_root).status == "FAILED"
    ml_dash_hf.train(trainer)  # the model fails only once
    view = load("hf-tests/retry", dash_root=dash_root)
    assert view.status == "COMPLETED"
    assert [r["step"] for r in rows(view, "train")] == [1, 2, *range(1, 9)]


def test_train_wrapper_needs_the_callback(tmp_path):
    trainer = Trainer(model=Exploding(), args=make_args(tmp_path), train_dataset=RegressionDataset(8))
    with pytest.raises(ValueError, match="no MLDashCallback"):
        ml_dash_hf.train(trainer)


@pytest.mark.timeout(300)  # a fresh interpreter imports torch and transformers: minutes on a loaded machine
def test_unguarded_exception_is_marked_failed_by_the_exit_hook(tmp_path, dash_root):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ML_DASH_QUIET": "1"}
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "hf_crash_script.py"), dash_root, str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert proc.returncode != 0
    assert "boom in forward call 5" in proc.stderr
    assert "NOT REACHED" not in proc.stdout
    view = load("hf-tests/crash", dash_root=dash_root)
    assert view.status == "FAILED"
    assert [r["step"] for r in rows(view, "train")] == [1, 2, 3, 4]
