"""Real Trainer runs on a tiny model: metrics, hyperparameters and run status as ML-Dash stores them."""

from __future__ import annotations

import os
import signal
from argparse import Namespace
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning_tiny import loaders, make_module, trainer_kwargs
from ml_dash import load
from ml_dash_lightning import MLDashLogger

Tiny = make_module(pl)


def rows(root: str, prefix: str, stream: str) -> list[dict]:
    return [r["data"] for r in load(prefix, dash_root=root).metrics(stream).read()]


def test_failing_step_marks_failed_and_keeps_what_came_before(dash_root):
    logger = MLDashLogger("proj/fail", dash_root=dash_root)
    trainer = pl.Trainer(logger=logger, **trainer_kwargs())
    with pytest.raises(RuntimeError, match="boom at step 5"):
        trainer.fit(Tiny(fail_at_step=5), loaders())
    view = load("proj/fail", dash_root=dash_root)
    assert view.status == "FAILED"
    assert "boom at step 5" in view.info.get("statusReason", "")
    got = rows(dash_root, "proj/fail", "train")
    assert [r["step"] for r in got] == [0, 1, 2, 3, 4]
    assert all(isinstance(r["loss"], float) for r in got)
    assert view.params.get()["fail_at_step"] == 5


def test_ctrl_c_is_cancelled(dash_root):
    logger = MLDashLogger("proj/ctrlc", dash_root=dash_root)
    trainer = pl.Trainer(logger=logger, **trainer_kwargs())
    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit):  # Lightning turns Ctrl-C into finalize("failed") + sys.exit(1)
            trainer.fit(Tiny(interrupt_at_step=3), loaders())
    finally:
        signal.signal(signal.SIGINT, handler)
    view = load("proj/ctrlc", dash_root=dash_root)
    assert view.status == "CANCELLED"
    assert [r["step"] for r in rows(dash_root, "proj/ctrlc", "train")] == [0, 1, 2]


class SigtermAt3(Tiny):
    def training_step(self, batch, batch_idx):
        if (
            self.global_step == 3
        ):  # what Lightning's own SIGTERM handler sets; it then raises SIGTERMException
            self.trainer._signal_connector.received_sigterm = True
        return super().training_step(batch, batch_idx)


def test_lightning_sigterm_exception_is_cancelled(dash_root):
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    logger = MLDashLogger("proj/sigterm", dash_root=dash_root)
    with pytest.raises(SIGTERMException):
        pl.Trainer(logger=logger, **trainer_kwargs()).fit(SigtermAt3(), loaders())
    view = load("proj/sigterm", dash_root=dash_root)
    assert view.status == "CANCELLED" and view.info["statusReason"].startswith("SIGTERMException")
    assert [r["step"] for r in rows(dash_root, "proj/sigterm", "train")] == [0, 1, 2, 3]


def test_finished_completes_and_later_logging_reopens(dash_root):
    logger = MLDashLogger("proj/finished", dash_root=dash_root)
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.finalize("finished")  # Lightning's SLURM requeue handler
    view = load("proj/finished", dash_root=dash_root)
    assert view.status == "COMPLETED" and view.info["statusReason"] == "finished (requeue)"
    logger.log_metrics({"loss": 0.5}, step=1)
    assert load("proj/finished", dash_root=dash_root).status == "RUNNING"
    logger.experiment.flush()
    assert [r["step"] for r in rows(dash_root, "proj/finished", "train")] == [0, 1]


def test_logging_after_finalize_still_works(dash_root):
    logger = MLDashLogger("proj/after", dash_root=dash_root)
    trainer = pl.Trainer(logger=logger, **trainer_kwargs(max_epochs=1))
    trainer.fit(Tiny(), loaders())
    assert load("proj/after", dash_root=dash_root).status == "COMPLETED"  # the logger opened it, so it closes it
    logger.log_metrics({"test_extra": 1.5}, step=100)
    logger.experiment.log("after fit")
    logger.experiment.flush()
    assert rows(dash_root, "proj/after", "test")[-1]["extra"] == 1.5
    assert rows(dash_root, "proj/after", "test")[-1]["step"] == 100
    assert any(r["message"] == "after fit" for r in load("proj/after", dash_root=dash_root).logs.read())

    # after a failure closed the run, the next call re-opens it
    with pytest.raises(RuntimeError):
        pl.Trainer(logger=logger, **trainer_kwargs(max_epochs=1)).fit(Tiny(fail_at_step=1), loaders())
    assert load("proj/after", dash_root=dash_root).status == "FAILED"
    logger.log_metrics({"val_late": 2.0}, step=7)
    logger.experiment.flush()
    assert rows(dash_root, "proj/after", "val")[-1]["late"] == 2.0


class Color(Enum):
    RED = "red"


@dataclass
class Opt:
    name: str = "adam"
    betas: tuple = (0.9, 0.99)
    sched: dict = field(default_factory=lambda: {"kind": "cos", "warmup": 10})


def test_hyperparams_of_every_shape(dash_root):
    logger = MLDashLogger("proj/hp", dash_root=dash_root)
    logger.log_hyperparams(Namespace(lr=0.1, opt=Opt(), data=Namespace(path=Path("/d"), color=Color.RED)))
    logger.log_hyperparams(
        {
            "model": {"layers": [1, 2], "act": torch.nn.ReLU, "w": torch.tensor(0.5)},
            "empty": {},
            "none": None,
            "fn": len,
        }
    )
    logger.experiment.flush()
    p = load("proj/hp", dash_root=dash_root).params.get()
    assert p["lr"] == 0.1
    assert p["opt.name"] == "adam" and p["opt.betas"] == [0.9, 0.99]
    assert p["opt.sched.kind"] == "cos" and p["opt.sched.warmup"] == 10
    assert p["data.path"] == "/d" and p["data.color"] == "red"
    assert p["model.layers"] == [1, 2]
    assert p["model.act"] == "torch.nn.modules.activation.ReLU"
    assert p["model.w"] == 0.5
    assert p["none"] is None and p["fn"] == "builtins.len"
    with pytest.raises(TypeError, match="dict, argparse.Namespace or dataclass"):
        logger.log_hyperparams([1, 2])


def test_stream_rule_for_keys_lightning_makes(dash_root):
    logger = MLDashLogger("proj/keys", dash_root=dash_root)
    logger.log_metrics(
        {
            "train/acc": 0.5,
            "loss": 1.0,
            "lr-SGD": 0.1,
            "val_loss/dataloader_idx_1": 2.0,
            "predict_n": 3,
            "train_step": 9,
            "epoch": 4,
        },
        step=12,
    )
    logger.experiment.flush()
    (train,) = rows(dash_root, "proj/keys", "train")
    assert {k: v for k, v in train.items() if k != "_ts"} == {
        "step": 12,
        "epoch": 4,
        "acc": 0.5,
        "loss": 1.0,
        "lr-SGD": 0.1,
        "train_step": 9,
    }
    (val,) = rows(dash_root, "proj/keys", "val")
    assert val["loss/dataloader_idx_1"] == 2.0 and val["epoch"] == 4
    (pred,) = rows(dash_root, "proj/keys", "predict")
    assert pred["n"] == 3 and pred["step"] == 12


def test_names_and_dirs_and_checkpoint_location(dash_root):
    logger = MLDashLogger("proj/sweep/run1", dash_root=dash_root)
    assert logger.name == "proj" and logger.version == "sweep/run1"
    assert logger.save_dir == os.path.abspath(dash_root)
    assert logger.root_dir == os.path.join(os.path.abspath(dash_root), "proj")
    assert logger.log_dir == os.path.join(os.path.abspath(dash_root), "proj", "sweep", "run1")
    trainer = pl.Trainer(logger=logger, **trainer_kwargs(max_epochs=1, enable_checkpointing=True))
    trainer.fit(Tiny(), loaders())
    assert Path(logger.experiment.folder).resolve() == Path(logger.log_dir).resolve()
    assert os.listdir(os.path.join(logger.log_dir, "checkpoints")) == ["epoch=0-step=8.ckpt"]


def test_auto_name_is_shown_once(dash_root, capsys, monkeypatch):
    monkeypatch.delenv("ML_DASH_QUIET", raising=False)
    logger = MLDashLogger(dash_root=dash_root)
    assert (logger.name, logger.version) == ("lightning_logs", 0)  # as Lightning's CSV/TensorBoard loggers
    assert MLDashLogger(dash_root=dash_root).version == 1  # never the same run twice in one process
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.log_metrics({"loss": 0.5}, step=1)
    err = capsys.readouterr().err
    assert err.count("Lightning run:") == 1 and "Lightning run: lightning_logs/version_0 " in err
    logger.experiment.flush()
    assert len(rows(dash_root, "lightning_logs/version_0", "train")) == 2


def test_unusable_root_warns_and_training_goes_on(tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the root folder should be")
    logger = MLDashLogger("proj/io", dash_root=str(blocker))
    trainer = pl.Trainer(logger=logger, **trainer_kwargs(max_epochs=1))
    with pytest.warns(RuntimeWarning, match="training goes on unlogged"):
        trainer.fit(Tiny(), loaders())
    assert trainer.global_step == 8
    logger.log_metrics({"loss": 1.0}, step=9)  # still a no-op, never raises


def test_bad_arguments_are_refused_early(dash_root):
    with pytest.raises(ValueError, match="at least two segments"):
        MLDashLogger("justone", dash_root=dash_root)
    with pytest.raises(ValueError, match=r"'\.\.'"):
        MLDashLogger("proj/../x", dash_root=dash_root)
    with pytest.raises(TypeError, match="run must be a str"):
        MLDashLogger(3, dash_root=dash_root)
    with pytest.raises(ValueError, match="ML_DASH_API_URL"):
        MLDashLogger("proj/x", dash_root=dash_root, dash_url=True)
    with pytest.raises(ValueError, match="log_model"):
        MLDashLogger("proj/x", dash_root=dash_root, log_model="best")
    with pytest.raises(TypeError, match="ml_dash.Experiment"):
        MLDashLogger(experiment="proj/x")
    assert not os.path.exists(dash_root)  # nothing was created by any of these


def test_existing_experiment_is_used(dash_root):
    from ml_dash import Experiment

    exp = Experiment("proj/given", dash_root=dash_root)
    with pytest.raises(ValueError, match="not both"):
        MLDashLogger(experiment=exp, run="proj/other")
    with exp.run:
        logger = MLDashLogger(experiment=exp)
        assert logger.experiment is exp and logger.version == "given"
        assert logger.save_dir == os.path.abspath(dash_root)
        pl.Trainer(logger=logger, **trainer_kwargs(max_epochs=1)).fit(Tiny(), loaders())
    view = load("proj/given", dash_root=dash_root)
    assert view.status == "COMPLETED"
    assert len(rows(dash_root, "proj/given", "train")) == 8
