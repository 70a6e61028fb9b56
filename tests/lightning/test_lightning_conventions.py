"""MLDashLogger behaves as Lightning's own loggers do, checked with real tiny fits.

The four conventions: hyperparameters of any type never crash ``fit``; ``self.log("epoch", x)`` is stored;
``prefix=`` is Lightning's metric-key prefix; default names ``lightning_logs`` / ``version_N`` with ``save_dir``
and ``log_dir`` laid out like CSVLogger's. Plus the run-ownership policy (docs/design.md).
"""

from __future__ import annotations

import os
import warnings

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from lightning_tiny import loaders, make_module, trainer_kwargs
from ml_dash import Experiment, load
from ml_dash_lightning import MLDashLogger

Tiny = make_module(pl)


class OddHparams(Tiny):
    """save_hyperparameters() with values the core cannot store as they are."""

    def __init__(self, c=np.complex64(1 + 2j), b=np.bytes_(b"ab"), when=np.datetime64("2024-05-01"),
                 t=torch.tensor(3 + 4j), plain=0.5):
        super().__init__()
        self.save_hyperparameters()


class LogsEpochOnly(Tiny):
    def training_step(self, batch, batch_idx):
        x, y = batch
        self.log("epoch", float(self.current_epoch) + 0.5)  # the only key of that log call
        return torch.nn.functional.mse_loss(self(x), y)

    def validation_step(self, batch, batch_idx):
        pass


def _rows(logger, stream):
    return [r["data"] for r in load(logger.run, dash_root=logger.save_dir).metrics(stream).read()]


def test_unstorable_hyperparameters_never_crash_fit(tmp_path):
    logger = MLDashLogger(save_dir=tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pl.Trainer(logger=logger, **trainer_kwargs(max_epochs=1)).fit(OddHparams(), loaders())
    view = load(logger.run, dash_root=logger.save_dir)
    assert view.status == "COMPLETED"
    p = view.params.get()
    assert p["c"] == "(1+2j)" and p["b"] == "b'ab'" and p["when"] == "2024-05-01" and p["t"] == "(3+4j)"
    assert p["plain"] == 0.5 and p["lr"] == 0.05
    mine = [w for w in caught if "stored as text" in str(w.message)]
    assert len(mine) == 1 and "c (complex" in str(mine[0].message)


def test_a_log_call_with_only_epoch_is_stored(tmp_path):
    logger = MLDashLogger(save_dir=tmp_path)
    pl.Trainer(logger=logger, **trainer_kwargs(max_epochs=2)).fit(LogsEpochOnly(), loaders())
    got = _rows(logger, "train")
    assert [r["step"] for r in got] == list(range(16))
    assert [r["epoch"] for r in got] == [0.5] * 8 + [1.5] * 8  # the user's value, as CSVLogger stores it
    csv = CSVLogger(tmp_path / "csv")
    pl.Trainer(logger=csv, **trainer_kwargs(max_epochs=2)).fit(LogsEpochOnly(), loaders())
    lines = open(os.path.join(csv.log_dir, "metrics.csv")).read().split()
    assert len(lines) - 1 == len(got)  # one stored row per log call, like Lightning's CSV logger


def test_prefix_has_lightnings_meaning(tmp_path):
    logger = MLDashLogger(save_dir=tmp_path, prefix="fold1")
    assert logger.prefix == "fold1" and logger.run == "lightning_logs/version_0"
    pl.Trainer(logger=logger, **trainer_kwargs(max_epochs=1)).fit(Tiny(), loaders())
    (first, *_) = _rows(logger, "train")
    assert {"fold1-train_loss", "fold1-lr"} <= set(first) and first["epoch"] == 0
    with pytest.raises(TypeError, match="run='project/name'"):
        MLDashLogger(prefix=3)
    # the ML-Dash run path has its own parameter name
    other = MLDashLogger(run="proj/folder/name", save_dir=tmp_path)
    assert (other.name, other.version, other.prefix) == ("proj", "folder/name", "")


def test_default_names_follow_lightnings_loggers(tmp_path):
    csv = CSVLogger(tmp_path)
    first = MLDashLogger(save_dir=tmp_path)
    assert (first.name, first.version) == (csv.name, csv.version) == ("lightning_logs", 0)
    assert first.save_dir == csv.save_dir == str(tmp_path)
    assert first.root_dir == csv.root_dir and first.log_dir == csv.log_dir
    trainer = pl.Trainer(logger=first, **trainer_kwargs(max_epochs=1, enable_checkpointing=True))
    trainer.fit(Tiny(), loaders())
    assert os.path.isfile(os.path.join(first.log_dir, "experiment.json"))  # ML-Dash's run folder
    assert os.listdir(os.path.join(first.log_dir, "checkpoints")) == ["epoch=0-step=8.ckpt"]
    assert load("lightning_logs/version_0", dash_root=tmp_path).status == "COMPLETED"
    second = MLDashLogger(save_dir=tmp_path, name="sweep")
    assert (second.name, second.version, second.run) == ("sweep", 0, "sweep/version_0")
    assert MLDashLogger(save_dir=tmp_path).version == 1
    named = MLDashLogger(save_dir=tmp_path, name="sweep", version="lr-0.1")
    assert named.log_dir == os.path.join(str(tmp_path), "sweep", "lr-0.1") and named.version == "lr-0.1"
    assert MLDashLogger(save_dir=tmp_path, version=7).log_dir.endswith(os.path.join("lightning_logs", "version_7"))


def test_run_ownership(tmp_path):
    """A run the logger opened is completed at the end of each Trainer call; a later validate() re-opens it,
    appends, and completes it again. A run the user opened is only flushed, never closed."""
    logger = MLDashLogger(run="own/run", save_dir=tmp_path)
    trainer = pl.Trainer(logger=logger, **trainer_kwargs(max_epochs=1))
    model = Tiny()
    trainer.fit(model, loaders(), loaders())
    assert load("own/run", dash_root=tmp_path).status == "COMPLETED"
    n_val = len(_rows(logger, "val"))
    trainer.validate(model, loaders())
    view = load("own/run", dash_root=tmp_path)
    assert view.status == "COMPLETED" and len(_rows(logger, "val")) == n_val + 1

    exp = Experiment("own/user", dash_root=tmp_path)
    with exp.run:
        user = MLDashLogger(experiment=exp)
        pl.Trainer(logger=user, **trainer_kwargs(max_epochs=1)).fit(Tiny(), loaders())
        assert exp.is_open and load("own/user", dash_root=tmp_path).status == "RUNNING"
        assert len(_rows(user, "train")) == 8  # flushed
    assert load("own/user", dash_root=tmp_path).status == "COMPLETED"


def test_every_experiment_argument_reaches_the_run(tmp_path):
    mirror = tmp_path / "mirror"
    logger = MLDashLogger(run="kw/run", save_dir=tmp_path / "main", stores=[str(mirror)], echo=True)
    logger.log_metrics({"loss": 1.0, "epoch": 0}, step=0)
    assert logger.experiment.echo is True
    logger.finalize("success")  # the logger opened the run: it completes it, the mirror gets everything
    assert load("kw/run", dash_root=mirror).metrics("train").read()[0]["data"]["loss"] == 1.0
    assert load("kw/run", dash_root=tmp_path / "main").status == "COMPLETED"
    with pytest.raises(TypeError, match="MLDashLogger: .*colour"):
        MLDashLogger(colour="red")
