"""A real Trainer.train() on a tiny GPT-2: every logged key reads back in the right stream at the right step."""

from __future__ import annotations

import math

import pytest
from hf_tiny import TokenDataset, expected_stream, make_args, rows, tiny_gpt2
from ml_dash import load
from ml_dash_hf import MLDashCallback
from transformers import Trainer, TrainerCallback

pytestmark = pytest.mark.timeout(120)  # a hang (e.g. at close) fails the test instead of the whole run


def test_train_eval_checkpoint_reads_back(tmp_path, dash_root):
    model = tiny_gpt2()
    args = make_args(
        tmp_path,
        max_steps=6,
        logging_steps=2,
        eval_strategy="steps",
        eval_steps=3,
        save_strategy="steps",
        save_steps=3,
    )
    cb = MLDashCallback("hf-tests/train-eval", dash_root=dash_root, log_checkpoints="checkpoint")
    eval_ds = TokenDataset(8, seed=1)
    trainer = Trainer(
        model=model, args=args, train_dataset=TokenDataset(16), eval_dataset=eval_ds, callbacks=[cb]
    )
    out = trainer.train()
    after_eval = trainer.evaluate()
    pred = trainer.predict(TokenDataset(8, seed=2))

    view = load("hf-tests/train-eval", dash_root=dash_root)
    assert view.status == "COMPLETED"

    # every entry the Trainer itself recorded, in order, in its stream, with step and epoch
    expected: dict[str, list[dict]] = {}
    for entry in trainer.state.log_history:
        stream, fields = expected_stream(entry)
        expected.setdefault(stream, []).append({"step": entry["step"], "epoch": entry["epoch"], **fields})
    assert set(expected) == {"train", "eval", "summary"}
    assert [r["step"] for r in expected["eval"]] == [3, 6, 6]  # two during training, one trainer.evaluate()
    for stream, want in expected.items():
        assert rows(view, stream) == want, stream
    # the summary is what train() returned, under HF's own names
    (summary,) = rows(view, "summary")
    assert {k: summary[k] for k in out.metrics if k != "epoch"} == {
        k: v for k, v in out.metrics.items() if k != "epoch"
    }
    assert summary["train_loss"] == pytest.approx(out.training_loss)
    assert after_eval["eval_loss"] == rows(view, "eval")[-1]["loss"]

    # predict() has no on_log: its metrics arrive once, through on_predict, in stream "test"
    (test_row,) = rows(view, "test")
    assert test_row == {
        "step": 6,
        "epoch": trainer.state.epoch,
        **{k[len("test_") :]: v for k, v in pred.metrics.items()},
    }
    assert math.isfinite(test_row["loss"])
    assert set(view.metrics.names()) == {"train", "eval", "summary", "test"}

    # params: TrainingArguments as args.<name>, the model config as model.<name>, the parameter count
    params = view.params.get()
    for key, value in args.to_dict().items():
        if value is None or isinstance(value, (bool, int, float, str)):
            assert params[f"args.{key}"] == value, key
    assert params["args.report_to"] == list(args.report_to)
    config = model.config.to_dict()
    for key in ("n_embd", "n_layer", "n_head", "vocab_size", "model_type"):
        assert params[f"model.{key}"] == config[key]
    assert params["model.num_parameters"] == sum(p.numel() for p in model.parameters())
    assert params["model.num_trainable_parameters"] == params["model.num_parameters"]
    assert params["model.class"] == "GPT2LMHeadModel"

    # the two checkpoints the Trainer saved
    stored = {(f["path"], f["filename"]) for f in view.files.list()}
    for step in (3, 6):
        for name in ("config.json", "model.safetensors", "trainer_state.json"):
            assert (f"/checkpoints/checkpoint-{step}", name) in stored
    messages = [entry["message"] for entry in view.logs.read()]
    assert "Trainer.train() started" in messages and "Trainer.train() finished" in messages


class PopKeys(TrainerCallback):
    """Mutates the shared `logs` dict the way PrinterCallback and user callbacks do."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in ("total_flos", "grad_norm", "eval_loss"):
            logs.pop(key, None)


def test_event_sequence_gives_exactly_the_expected_rows(tmp_path, dash_root):
    # 16 samples / batch 4 = 4 steps per epoch; log every 2 steps, evaluate and save every 4, 8 steps
    args = make_args(
        tmp_path,
        max_steps=8,
        logging_steps=2,
        eval_strategy="steps",
        eval_steps=4,
        save_strategy="steps",
        save_steps=4,
    )
    # PopKeys runs before the adapter and removes keys from the shared dict; the adapter still records them
    cb = MLDashCallback("hf-tests/sequence", dash_root=dash_root)
    trainer = Trainer(
        model=tiny_gpt2(),
        args=args,
        train_dataset=TokenDataset(16),
        eval_dataset=TokenDataset(8, seed=1),
        callbacks=[PopKeys(), cb],
    )
    trainer.train()
    view = load("hf-tests/sequence", dash_root=dash_root)
    assert set(view.metrics.names()) == {"train", "eval", "summary"}

    train = rows(view, "train")
    assert [(r["step"], r["epoch"]) for r in train] == [(2, 0.5), (4, 1.0), (6, 1.5), (8, 2.0)]
    assert all(set(r) == {"step", "epoch", "loss", "grad_norm", "learning_rate"} for r in train)

    evals = rows(view, "eval")  # once per evaluation, although on_log and on_evaluate both carry them
    assert [(r["step"], r["epoch"]) for r in evals] == [(4, 1.0), (8, 2.0)]
    assert all(
        set(r) == {"step", "epoch", "loss", "runtime", "samples_per_second", "steps_per_second"}
        for r in evals
    )

    (summary,) = rows(view, "summary")
    assert summary["step"] == 8 and summary["epoch"] == 2.0
    assert set(summary) == {
        "step",
        "epoch",
        "train_runtime",
        "train_samples_per_second",
        "train_steps_per_second",
        "total_flos",
        "train_loss",
    }
    assert summary["total_flos"] == trainer.state.total_flos
    assert view.status == "COMPLETED"
    assert "statusReason" not in view.info or not view.info["statusReason"]


class StopAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True


def test_early_stop_keeps_completed_with_a_reason(tmp_path, dash_root):
    cb = MLDashCallback("hf-tests/early", dash_root=dash_root)
    trainer = Trainer(
        model=tiny_gpt2(),
        args=make_args(tmp_path, max_steps=8, logging_steps=1),
        train_dataset=TokenDataset(16),
        callbacks=[StopAt(3), cb],
    )
    trainer.train()
    view = load("hf-tests/early", dash_root=dash_root)
    assert view.status == "COMPLETED"
    assert view.info["statusReason"] == "training stopped at step 3 of 8"
    assert [r["step"] for r in rows(view, "train")] == [1, 2, 3]


class SilentLogTrainer(Trainer):
    """A subclass whose log() reaches no callback: evaluation metrics then arrive only through on_evaluate."""

    def log(self, logs, start_time=None):
        pass


def test_eval_metrics_arrive_through_on_evaluate_when_on_log_is_bypassed(tmp_path, dash_root):
    args = make_args(tmp_path, max_steps=4, logging_steps=1, eval_strategy="steps", eval_steps=2)
    trainer = SilentLogTrainer(
        model=tiny_gpt2(),
        args=args,
        train_dataset=TokenDataset(16),
        eval_dataset=TokenDataset(8, seed=1),
        callbacks=[MLDashCallback("hf-tests/silent", dash_root=dash_root)],
    )
    trainer.train()
    view = load("hf-tests/silent", dash_root=dash_root)
    assert set(view.metrics.names()) == {"eval"}
    evals = rows(view, "eval")
    assert [(r["step"], r["epoch"]) for r in evals] == [(2, 0.5), (4, 1.0)]
    assert all({"loss", "runtime"} <= set(r) for r in evals)
