"""Argument checks, key routing, process rank, a caller-owned experiment, default prefix, odd values."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch
from hf_tiny import TokenDataset, make_args, rows, tiny_gpt2
from ml_dash import Experiment, load
from ml_dash_hf import MLDashCallback
from ml_dash_hf._mapping import default_prefix, route
from transformers import Trainer, TrainerControl, TrainerState

pytestmark = pytest.mark.timeout(120)  # a hang (e.g. at close) fails the test instead of the whole run


@pytest.mark.parametrize(
    ("logs", "expected"),
    [
        (
            {"loss": 1.0, "grad_norm": 2.0, "learning_rate": 0.1, "epoch": 0.5},
            {"train": {"loss": 1.0, "grad_norm": 2.0, "learning_rate": 0.1}},
        ),
        ({"eval_loss": 1.0, "eval_runtime": 0.1, "epoch": 1.0}, {"eval": {"loss": 1.0, "runtime": 0.1}}),
        ({"eval_squad_f1": 0.3}, {"eval": {"squad_f1": 0.3}}),  # several eval datasets: eval_<name>_<metric>
        (
            {"test_acc": 0.9, "val/acc": 0.8, "predict_x": 1},
            {"test": {"acc": 0.9}, "val": {"acc": 0.8}, "predict": {"x": 1}},
        ),
        (
            {"train_runtime": 1.0, "train_tokens_per_second": 5.0},
            {"train": {"runtime": 1.0, "tokens_per_second": 5.0}},
        ),
        (
            {"train_runtime": 1.0, "total_flos": 3.0, "train_loss": 0.5, "epoch": 2.0},
            {"summary": {"train_runtime": 1.0, "total_flos": 3.0, "train_loss": 0.5}},
        ),
        (
            {"eval_": 1.0, "evaluation": 2.0, "eval_epoch": 3.0},
            {"train": {"eval_": 1.0, "evaluation": 2.0}, "eval": {"eval_epoch": 3.0}},
        ),
        ({"epoch": 1.0}, {}),
    ],
)
def test_route(logs, expected):
    assert route(logs) == expected


def test_bad_arguments_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="log_checkpoints"):
        MLDashCallback("p/r", log_checkpoints="all")
    with pytest.raises(ValueError, match="log_checkpoints"):
        MLDashCallback("p/r", log_checkpoints=True)
    with pytest.raises(TypeError, match="prefix"):
        MLDashCallback(42)
    exp = Experiment("p/r", dash_root=str(tmp_path / ".dash"))
    with pytest.raises(ValueError, match="either experiment= or"):
        MLDashCallback("p/r", experiment=exp)
    with pytest.raises(ValueError, match="dash_root"):
        MLDashCallback(experiment=exp, dash_root=str(tmp_path))
    with pytest.raises(TypeError, match="ml_dash.Experiment"):
        MLDashCallback(experiment="p/r")


def test_other_processes_record_nothing(tmp_path, dash_root):
    cb = MLDashCallback("hf-tests/rank1", dash_root=dash_root, log_checkpoints="checkpoint")
    args = make_args(tmp_path)
    state = TrainerState(
        is_world_process_zero=False, is_local_process_zero=True, global_step=2, epoch=0.5, max_steps=6
    )
    control = TrainerControl()
    model = tiny_gpt2()
    cb.on_train_begin(args, state, control, model=model)
    cb.on_log(args, state, control, logs={"loss": 1.0, "epoch": 0.5})
    cb.on_evaluate(args, state, control, metrics={"eval_loss": 1.0})
    cb.on_predict(args, state, control, metrics={"test_loss": 1.0})
    cb.on_save(args, state, control)
    cb.on_train_end(args, state, control, model=model)
    with cb.guard():
        pass
    assert cb.experiment is None
    assert not os.path.exists(dash_root)


def test_on_log_takes_a_bare_state_and_a_run_closed_under_it(tmp_path, dash_root):
    """The per-step path reads a TrainerState's attributes directly; a state object without ``log_history`` or
    ``is_world_process_zero`` (another trainer's) still records, and so does a step after the run was closed."""
    from types import SimpleNamespace

    cb = MLDashCallback("hf-tests/bare", dash_root=dash_root)
    args = make_args(tmp_path)
    cb.on_train_begin(args, TrainerState(global_step=0, epoch=0.0), TrainerControl())
    bare = SimpleNamespace(global_step=1, epoch=0.25)
    cb.on_log(args, bare, None, logs={"loss": 1.5, "epoch": 0.25})
    bare.global_step = 2
    cb.on_log(args, bare, None, logs={"loss": 1.25})  # no epoch in the logs: the state's
    cb.experiment.run.complete()
    cb.on_log(args, TrainerState(global_step=3, epoch=0.75), None, logs={"loss": 1.0, "epoch": 0.75})
    cb.on_train_end(args, TrainerState(global_step=3, epoch=0.75), TrainerControl())
    got = rows(load("hf-tests/bare", dash_root=dash_root), "train")
    assert got == [{"step": 1, "epoch": 0.25, "loss": 1.5}, {"step": 2, "epoch": 0.25, "loss": 1.25},
                   {"step": 3, "epoch": 0.75, "loss": 1.0}]


def test_a_caller_owned_experiment_stays_open_until_its_owner_closes_it(tmp_path, dash_root):
    exp = Experiment("hf-tests/owned", dash_root=dash_root)
    with exp.run:
        exp.params.set(note="mine")
        trainer = Trainer(
            model=tiny_gpt2(),
            args=make_args(tmp_path, max_steps=4, logging_steps=2),
            train_dataset=TokenDataset(16),
            callbacks=[MLDashCallback(experiment=exp)],
        )
        trainer.train()
        assert exp.is_open and exp.status == "RUNNING"
        assert [r["step"] for r in rows(load("hf-tests/owned", dash_root=dash_root), "train")] == [2, 4]
        exp.metrics("train").log(step=5, extra=1.0)
    view = load("hf-tests/owned", dash_root=dash_root)
    assert view.status == "COMPLETED"
    assert view.params.get()["note"] == "mine" and view.params.get()["args.max_steps"] == 4
    assert [r["step"] for r in rows(view, "train")] == [2, 4, 5]


def test_default_prefix_uses_project_and_run_name(tmp_path, monkeypatch):
    root = tmp_path / "root"
    monkeypatch.setenv("ML_DASH_ROOT", str(root))
    monkeypatch.chdir(tmp_path)
    args = make_args(tmp_path, max_steps=2, logging_steps=1, run_name="my run/1")
    trainer = Trainer(
        model=tiny_gpt2(), args=args, train_dataset=TokenDataset(8), callbacks=[MLDashCallback()]
    )
    trainer.train()
    prefix = default_prefix(args)
    assert prefix == f"{getattr(args, 'project', None) or 'huggingface'}/my-run-1"
    view = load(prefix, dash_root=str(root))
    assert view.status == "COMPLETED" and [r["step"] for r in rows(view, "train")] == [1, 2]


def test_default_prefix_falls_back_to_the_output_folder():
    class Args:
        output_dir = "/data/runs/bert-base"
        run_name = "/data/runs/bert-base"  # transformers 4.x default: run_name = output_dir

    assert default_prefix(Args()) == "huggingface/bert-base"


def test_odd_values_are_skipped_with_a_warning_and_the_rest_recorded(tmp_path, dash_root):
    cb = MLDashCallback("hf-tests/odd", dash_root=dash_root)
    trainer = Trainer(
        model=tiny_gpt2(),
        args=make_args(tmp_path, max_steps=2),
        train_dataset=TokenDataset(8),
        callbacks=[cb],
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.log(
            {
                "eval_hist": [1, 2, 3],
                "eval_acc": np.float32(0.5),
                "eval_n": torch.tensor(3),
                "eval_name": "x",
                "eval_cm": np.zeros((2, 2)),
            }
        )
    assert any("'hist'" in str(w.message) for w in caught) and any("'cm'" in str(w.message) for w in caught)
    view = load("hf-tests/odd", dash_root=dash_root)
    (row,) = rows(view, "eval")
    assert row == {"step": 0, "epoch": trainer.state.epoch, "acc": 0.5, "n": 3, "name": "x"}
    # a log outside train() reopens an owned run only for that event
    assert view.status == "COMPLETED"


def test_each_kind_of_value_reaches_the_store_under_its_routed_key(tmp_path, dash_root):
    # Trainer.log inside train(): plain numbers take the per-step path (checked once, routed once per key tuple),
    # anything else the converting one; both must store the same rows, and neither may change the Trainer's dict
    cb = MLDashCallback("hf-tests/values", dash_root=dash_root)
    trainer = Trainer(model=tiny_gpt2(), args=make_args(tmp_path, max_steps=4), train_dataset=TokenDataset(8),
                      callbacks=[cb])
    state = trainer.state
    cb.on_train_begin(trainer.args, state, trainer.control)
    sent = [
        {"loss": float("nan"), "grad_norm": float("inf"), "learning_rate": float("-inf")},
        {"loss": np.float32(0.25), "grad_norm": torch.tensor(2.0), "learning_rate": np.float64(0.5)},
        {"train/acc": 0.5, "eval_loss": 0.125, "eval/top/k": 3, "train_step": 7, "flag": True, "none": None},
        {"note": "text", "loss": 1},
    ]
    for i, logs in enumerate(sent):
        state.global_step, state.epoch = i + 1, (i + 1) / 4
        before = dict(logs)
        trainer.log(logs)
        assert logs == {**before, "epoch": state.epoch}  # only the Trainer's own epoch was added
    cb.on_train_end(trainer.args, state, trainer.control)
    view = load("hf-tests/values", dash_root=dash_root)
    train, evals = rows(view, "train"), rows(view, "eval")
    first = train[0]
    assert first["step"] == 1 and first["epoch"] == 0.25 and np.isnan(first["loss"])
    assert (first["grad_norm"], first["learning_rate"]) == (float("inf"), float("-inf"))
    assert train[1:] == [
        {"step": 2, "epoch": 0.5, "loss": 0.25, "grad_norm": 2.0, "learning_rate": 0.5},
        {"step": 3, "epoch": 0.75, "acc": 0.5, "train_step": 7, "flag": True, "none": None},
        {"step": 4, "epoch": 1.0, "note": "text", "loss": 1},
    ]
    assert evals == [{"step": 3, "epoch": 0.75, "loss": 0.125, "top/k": 3}]
