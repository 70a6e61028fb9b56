"""Pickling (ddp_spawn pickles the logger) and the rank-0-only rule."""

from __future__ import annotations

import os
import pickle

from lightning_utilities.core.rank_zero import rank_zero_only
from ml_dash import load
from ml_dash_lightning import MLDashLogger


def test_pickled_copy_reattaches_to_the_same_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    logger = MLDashLogger("proj/pickled", dash_root="rel", log_model="all")  # a relative root
    logger.log_hyperparams({"lr": 0.1})
    logger.log_metrics({"train_loss": 1.0, "epoch": 0}, step=0)
    folder = logger.experiment.folder
    logger.experiment.flush()  # two writers in one process: make the order of the rows certain

    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # the copy must not follow the working directory
    copy = pickle.loads(pickle.dumps(logger))
    assert type(copy) is type(logger)
    assert copy.version == "pickled" and copy.save_dir == str(tmp_path / "rel")
    copy.log_metrics({"train_loss": 0.5}, step=1)  # epoch carries over from the original's last row
    assert copy.experiment is not logger.experiment
    assert str(copy.experiment.folder) == str(folder)
    copy.experiment.flush()

    view = load("proj/pickled", dash_root=str(tmp_path / "rel"))
    got = [(r["data"]["step"], r["data"]["epoch"], r["data"]["loss"]) for r in view.metrics("train").read()]
    assert got == [(0, 0, 1.0), (1, 0, 0.5)]
    assert [r["index"] for r in view.metrics("train").read()] == [0, 1]
    assert view.params.get()["lr"] == 0.1
    assert not (tmp_path / "elsewhere" / "rel").exists()


def test_pickling_before_first_use_creates_nothing(dash_root):
    copy = pickle.loads(pickle.dumps(MLDashLogger("proj/lazy", dash_root=dash_root)))
    assert not os.path.exists(dash_root)
    copy.log_metrics({"loss": 1.0}, step=0)
    copy.experiment.flush()
    assert len(load("proj/lazy", dash_root=dash_root).metrics("train").read()) == 1


def test_other_ranks_do_nothing(dash_root, monkeypatch):
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    logger = MLDashLogger("proj/rank1", dash_root=dash_root)
    logger.log_hyperparams({"a": 1})
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.experiment.log("nothing")  # a no-op object off rank 0
    logger.finalize("success")
    assert not os.path.exists(dash_root)
