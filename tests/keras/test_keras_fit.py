"""Real Keras 3 fits of a tiny model, on the torch and the jax backend, each in its own process.

KERAS_BACKEND must be set before the first ``import keras``, so every backend's scenarios run in a subprocess
(tests/keras/scenarios.py); the checks here read back what they left on disk with ``ml_dash.load``.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from ml_dash import load

SCRIPT = Path(__file__).with_name("scenarios.py")
BACKENDS = [
    pytest.param(
        b, marks=pytest.mark.skipif(importlib.util.find_spec(b) is None, reason=f"{b} not installed")
    )
    for b in ("torch", "jax")
]
pytestmark = pytest.mark.skipif(importlib.util.find_spec("keras") is None, reason="keras not installed")


def run_scenario(backend: str, which: str, root: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "ML_DASH_ROOT")}
    env.update(KERAS_BACKEND=backend, ML_DASH_QUIET="1", JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="")
    return subprocess.run(
        [sys.executable, str(SCRIPT), which, str(root)], env=env, capture_output=True, text=True, timeout=240
    )


@pytest.fixture(scope="module", params=BACKENDS)
def runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, dict]:
    root = tmp_path_factory.mktemp(f"keras-{request.param}")
    proc = run_scenario(request.param, "runs", root)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return request.param, root, json.loads((root / "report.json").read_text())


@pytest.fixture(scope="module", params=BACKENDS)
def raised(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp(f"keras-raise-{request.param}")
    return request.param, root, run_scenario(request.param, "raise", root)


def rows(view, stream: str) -> list[dict]:
    out = [r["data"] for r in view.metrics(stream).read()]
    for r in out:
        r.pop("_ts")
    return out


def test_epoch_and_batch_rows_params_and_status(runs):
    backend, root, report = runs
    v = load("kt/basic", dash_root=root)
    assert v.status == "COMPLETED" and report["basic_status_after_fit"] == "COMPLETED"
    train = rows(v, "train")
    # 32 samples, batch 8: 4 batches an epoch, 2 epochs; log_freq=3 -> batch rows at global steps 3 and 6
    epoch_rows = [r for r in train if "batch" not in r]
    batch_rows = [r for r in train if "batch" in r]
    assert [(r["step"], r["epoch"]) for r in epoch_rows] == [(4, 0), (8, 1)]
    assert [(r["step"], r["epoch"], r["batch"]) for r in batch_rows] == [(3, 0, 2), (6, 1, 1)]
    assert [r["step"] for r in train] == sorted(r["step"] for r in train)
    for r in train:
        assert set(r) - {"batch"} == {"loss", "mae", "step", "epoch"}
        assert math.isfinite(r["loss"])
    assert report["basic_iterations"] == 8  # step numbering = the optimizer's update count
    val = rows(v, "val")
    assert [(r["step"], r["epoch"]) for r in val] == [(4, 0), (8, 1)]
    assert all(set(r) == {"loss", "mae", "step", "epoch"} for r in val)
    assert report["basic_test_rows_after_fit"] == 0  # fit's validation is not a `test` row

    p = v.params.get()
    assert p["lr"] == 0.01 and p["arch.hidden"] == 4  # the user's params, as given
    assert p["fit.epochs"] == 2 and p["fit.steps"] == 4
    assert p["optimizer.name"] == "adam" and p["optimizer.learning_rate"] == pytest.approx(0.01)
    assert p["model.layers"] == 2 and p["model.params"] == 3 * 4 + 4 + 4 + 1
    assert p["keras.backend"] == backend
    assert v.info.get("statusReason") is None


def test_evaluate_and_predict_rows(runs):
    _, root, report = runs
    v = load("kt/basic", dash_root=root)
    (test,) = rows(v, "test")
    last_val = rows(v, "val")[-1]
    assert (test["step"], test["epoch"]) == (8, 1)
    assert set(test) == {"loss", "mae", "step", "epoch"}
    assert test["loss"] == pytest.approx(last_val["loss"], rel=1e-4)  # same data, same weights
    (pred,) = rows(v, "predict")
    assert report["predict_shape"] == [32, 1]
    assert (pred["batches"], pred["samples"], pred["step"], pred["epoch"]) == (4, 32, 8, 1)
    assert pred["seconds"] >= 0
    assert v.status == "COMPLETED"  # re-opened for evaluate/predict and closed again


def test_save_model_stores_keras_file(runs):
    _, root, _ = runs
    (entry,) = load("kt/basic", dash_root=root).files.list()
    assert entry["path"] == "/models" and entry["filename"] == "model.keras"
    stored = next((root / "kt/basic/files/models").glob("*/model.keras"))
    with zipfile.ZipFile(stored) as z:  # a .keras file is a zip with the model's config
        assert "config.json" in z.namelist()
        assert json.loads(z.read("config.json"))["class_name"] == "Sequential"


def test_early_stopping_recorded(runs):
    _, root, report = runs
    v = load("kt/early", dash_root=root)
    assert v.status == "COMPLETED"
    assert v.info["statusReason"].startswith("EarlyStopping: stopped at epoch 1 (monitor=loss")
    assert report["early_stop_reason"] == v.info["statusReason"]
    assert [r["epoch"] for r in rows(v, "train")] == [0, 1]  # of epochs=5
    assert any(log["message"].startswith("EarlyStopping") for log in v.logs.read())


def test_terminate_on_nan_recorded(runs):
    _, root, _ = runs
    v = load("kt/nan", dash_root=root)
    assert v.status == "FAILED"
    assert v.info["statusReason"].startswith("TerminateOnNaN: non-finite loss")
    train = rows(v, "train")
    assert [(r["step"], r.get("batch")) for r in train] == [(1, 0), (1, None)]  # stopped after batch 0
    assert all(math.isnan(r["loss"]) for r in train)
    assert any(log["level"] == "error" and "TerminateOnNaN" in log["message"] for log in v.logs.read())


def test_user_experiment_left_to_the_user(runs):
    _, root, report = runs
    v = load("kt/user", dash_root=root)
    assert report["user_caught"] and v.status == "FAILED"  # `with exp.run:` saw the exception
    assert [r["step"] for r in rows(v, "train")] == [4]  # epoch 0 done, epoch 1 raised
    assert report["user_open_status_after_fit"] == "RUNNING"  # the callback did not close the user's run
    assert load("kt/user-open", dash_root=root).status == "COMPLETED"


def test_caught_exception_then_refit(runs):
    _, root, report = runs
    assert report["refit_status_after_raise"] == "RUNNING"  # nothing told the run (see the README)
    v = load("kt/refit", dash_root=root)
    assert v.status == "COMPLETED"
    assert any(
        log["level"] == "warn" and "did not reach on_train_end" in log["message"] for log in v.logs.read()
    )
    # the first fit stopped after 2 batches; numbering continues from the optimizer's count
    assert [(r["step"], r["epoch"]) for r in rows(v, "train")] == [(6, 0)]


def test_only_rank_zero_logs(runs):
    _, root, report = runs
    assert report["rank1_experiment"] == "None"
    assert not (root / "kt" / "rank1").exists()


def test_steps_per_execution(runs):
    backend, root, _ = runs
    if backend == "torch":
        pytest.skip("the torch backend only supports steps_per_execution=1")
    train = rows(load("kt/spe", dash_root=root), "train")
    # 5 batches an epoch run in pairs (hooks at batches 1, 3, 5 -> steps 2, 4, 5); rows once 3 steps passed
    assert [(r["step"], r.get("batch")) for r in train] == [(4, 3), (5, None), (7, 1), (9, 3), (10, None)]


def test_bad_arguments_are_refused(runs):
    _, _, report = runs
    errors = report["errors"]
    assert errors["log_freq0"].startswith("ValueError: log_freq")
    assert errors["log_freq_str"].startswith("ValueError: log_freq")
    assert errors["prefix_no_slash"].startswith("ValueError: MLDashCallback: ") and "segments" in errors["prefix_no_slash"]
    assert errors["both"].startswith("ValueError: MLDashCallback: pass either experiment= or the arguments")
    assert errors["exp_and_root"].startswith("ValueError: MLDashCallback: pass either experiment=")
    assert "dash_root" in errors["exp_and_root"]
    assert errors["unknown_kwarg"].startswith("TypeError: MLDashCallback: ") and "colour" in errors["unknown_kwarg"]
    assert errors["save_model_str"].startswith("TypeError: save_model")


def test_exception_in_fit_leaves_failed_run_with_earlier_rows(raised):
    _, root, proc = raised
    assert proc.returncode != 0 and "boom in batch" in proc.stderr
    v = load("kt/raise", dash_root=root)
    assert v.status == "FAILED"  # the core's exit hook: the exception reached sys.excepthook
    assert "boom in batch" in (v.info.get("statusReason") or "")
    train = rows(v, "train")
    assert [r["step"] for r in train if "batch" not in r] == [4]
    assert [r["step"] for r in train if "batch" in r] == [1, 2, 3, 4, 5, 6]  # the 7th batch raised
    assert [r["step"] for r in rows(v, "val")] == [4]


def test_user_metrics_named_like_row_fields_are_kept(runs):
    """Metrics named epoch, step, train_step (and so val_epoch, val_step, ...) never replace Keras's own."""
    _, root, _ = runs
    v = load("kt/names", dash_root=root)
    train = rows(v, "train")
    assert [(r["step"], r["epoch"], r.get("batch")) for r in train] == [(4, 0, 3), (4, 0, None), (8, 1, 3), (8, 1, None)]
    for r in train:
        assert (r["epoch_"], r["step_"], r["train_step"]) == (7.0, 11.0, 13.0)
    val = rows(v, "val")
    assert [(r["step"], r["epoch"]) for r in val] == [(4, 0), (8, 1)]
    for r in val:
        assert (r["val_epoch"], r["val_step"], r["train_step"]) == (7.0, 11.0, 13.0)
