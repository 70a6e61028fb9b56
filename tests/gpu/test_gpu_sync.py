"""Logging CUDA tensors never synchronises the training thread with the GPU (skipped where no GPU exists).

Two independent checks, both on every log path (metrics, tracks, params, and the three adapters' entry points):
- `torch.cuda.set_sync_debug_mode("error")` for the whole run, the worker's reads included: any synchronising
  call PyTorch knows of raises, and a value the worker could not read would show up as an `_errors` entry;
- a long kernel is queued first (`torch.cuda._sleep`): if any log call waited for the GPU, the kernel would have
  finished by the time the calls return.
And the value recorded is the value at call time, although the tensor is changed in place right after the call.
"""

from __future__ import annotations

import contextlib
import time

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")

import ml_dash  # noqa: E402

SLEEP_CYCLES = 2_000_000_000  # about 1 s of GPU time at ~2 GHz: far longer than any number of log calls


@contextlib.contextmanager
def gpu_busy_and_strict():
    """Queue a long kernel, forbid synchronising calls, and check that the kernel outlived the block."""
    torch.cuda.synchronize()
    torch.cuda._sleep(SLEEP_CYCLES)
    done = torch.cuda.Event()
    done.record()
    torch.cuda.set_sync_debug_mode("error")
    t0 = time.perf_counter()
    try:
        yield
        still_running = not done.query()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    elapsed = time.perf_counter() - t0
    assert still_running, f"the GPU kernel finished while logging ({elapsed:.3f} s): a log call waited for the GPU"


def _value(x: float):
    return torch.tensor(x, device="cuda")


def test_core_log_paths_never_sync_and_keep_call_time_values():
    loss = _value(1.25)
    vec = torch.tensor([1.0, 2.0], device="cuda")
    exp = ml_dash.Experiment("gpu/core")
    exp.run.start()
    with gpu_busy_and_strict():
        for step in range(100):
            exp.metrics("train").log(step=step, loss=loss, vec=vec, lst=[loss, 2.0])
            exp.tracks("pose").append(x=loss, y=vec[0])
        exp.params.set(lr=loss, model={"width": vec[1]})
        loss.add_(100)  # in place, right after the calls: queued after the snapshots, so not recorded
        vec.mul_(0)
    torch.cuda.set_sync_debug_mode("error")  # the worker's reads (flush) must not sync either
    try:
        exp.flush()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    exp.run.complete()
    run = ml_dash.load("gpu/core")
    rows = [r["data"] for r in run.metrics("train").read()]
    assert len(rows) == 100
    assert all("_errors" not in r for r in rows), rows[0]
    assert rows[-1]["loss"] == 1.25 and rows[-1]["vec"] == [1.0, 2.0] and rows[-1]["lst"] == [1.25, 2.0]
    tracks = run.tracks("pose").read()
    assert tracks[-1]["x"] == 1.25 and tracks[-1]["y"] == 1.0
    assert run.params.get() == {"lr": 1.25, "model.width": 2.0}


def test_lightning_logger_never_syncs():
    pytest.importorskip("lightning")
    logger = _lightning_logger("gpu/lightning")
    t = _value(0.5)
    with gpu_busy_and_strict():
        logger.log_hyperparams({"lr": t, "nested": {"w": t}})
        for step in range(50):
            logger.log_metrics({"train_loss": t, "val_acc": t, "epoch": 0}, step=step)
        t.add_(1)
    logger.finalize("success")
    logger.experiment.run.complete()
    rows = ml_dash.load("gpu/lightning").metrics("train").read()
    assert rows[-1]["data"]["loss"] == 0.5
    assert ml_dash.load("gpu/lightning").params.get()["lr"] == 0.5


def _lightning_logger(path: str):
    """Build the logger whichever name the run-path parameter has in this version of the adapter."""
    import inspect

    from ml_dash_lightning import MLDashLogger

    params = inspect.signature(MLDashLogger).parameters
    for name in ("run", "run_path", "experiment_prefix", "dash_prefix"):
        if name in params:
            return MLDashLogger(**{name: path})
    return MLDashLogger(path)


def test_hf_callback_never_syncs():
    pytest.importorskip("transformers")
    from ml_dash_hf import MLDashCallback
    from transformers import TrainerControl, TrainerState, TrainingArguments

    cb = MLDashCallback("gpu/hf")
    args = TrainingArguments(output_dir="out", report_to="none")
    state = TrainerState()
    state.is_world_process_zero = True
    control = TrainerControl()
    t = _value(0.75)
    cb.on_train_begin(args, state, control)
    with gpu_busy_and_strict():
        for step in range(1, 51):
            state.global_step = step
            state.epoch = step / 50
            cb.on_log(args, state, control, logs={"loss": t, "grad_norm": t, "learning_rate": 1e-3})
        t.add_(1)
    cb.on_train_end(args, state, control)
    rows = ml_dash.load("gpu/hf").metrics("train").read()
    assert rows and rows[-1]["data"]["loss"] == 0.75


def test_keras_callback_never_syncs(monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    from ml_dash_keras import MLDashCallback

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(loss="mse")
    cb = MLDashCallback("gpu/keras")
    cb.set_model(model)
    cb.set_params({"epochs": 1, "steps": 50, "verbose": 0})
    t = _value(0.25)
    cb.on_train_begin()
    cb.on_epoch_begin(0)
    with gpu_busy_and_strict():
        for b in range(50):
            cb.on_train_batch_end(b, logs={"loss": t})
        t.add_(1)
    cb.on_epoch_end(0, logs={"loss": t})
    cb.on_train_end()
    rows = ml_dash.load("gpu/keras").metrics("train").read()
    assert rows and rows[0]["data"]["loss"] == 0.25
