"""The same logger under `lightning.pytorch` and the standalone `pytorch_lightning` package."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import lightning.pytorch as L
import ml_dash_lightning
import ml_dash_lightning.pl
import pytest
import pytorch_lightning as PL
from lightning_tiny import loaders, make_module, trainer_kwargs
from ml_dash import load


def test_each_namespace_gets_a_logger_of_its_own():
    a, b = ml_dash_lightning.MLDashLogger, ml_dash_lightning.pl.MLDashLogger
    assert issubclass(a, L.loggers.Logger) and not issubclass(a, PL.loggers.Logger)
    assert issubclass(b, PL.loggers.Logger) and not issubclass(b, L.loggers.Logger)
    assert (a.__module__, a.__qualname__) == ("ml_dash_lightning", "MLDashLogger")
    assert (b.__module__, b.__qualname__) == ("ml_dash_lightning.pl", "MLDashLogger")
    assert ml_dash_lightning.make_logger_class("pytorch_lightning") is b
    with pytest.raises(ValueError, match="namespace"):
        ml_dash_lightning.make_logger_class("lightning.fabric")


@pytest.mark.parametrize("ns", ["lightning.pytorch", "pytorch_lightning"])
def test_fit_under_each_namespace(ns, dash_root):
    pl = L if ns == "lightning.pytorch" else PL
    cls = ml_dash_lightning.MLDashLogger if pl is L else ml_dash_lightning.pl.MLDashLogger
    logger = cls(f"proj/{ns.replace('.', '_')}", dash_root=dash_root)
    trainer = pl.Trainer(logger=logger, **trainer_kwargs(max_epochs=1))
    trainer.fit(make_module(pl)(), loaders(), loaders(8))
    copy = pickle.loads(pickle.dumps(logger))
    assert type(copy) is cls
    view = load(logger.run, dash_root=dash_root)
    assert [r["data"]["step"] for r in view.metrics("train").read()] == list(range(8))
    assert len(view.metrics("val").read()) == 1
    assert view.params.get()["lr"] == 0.05
    with pytest.raises(RuntimeError):
        pl.Trainer(logger=logger, **trainer_kwargs(max_epochs=1)).fit(
            make_module(pl)(fail_at_step=0), loaders()
        )
    assert load(logger.run, dash_root=dash_root).status == "FAILED"


def test_pl_module_does_not_import_lightning_pytorch():
    code = "import sys, ml_dash_lightning.pl; print('lightning.pytorch' in sys.modules, 'pytorch_lightning' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]


@pytest.mark.parametrize("ns", ["lightning.pytorch", "pytorch_lightning"])
def test_lightning_cli_class_path(ns, dash_root, tmp_path):
    pytest.importorskip("jsonargparse", reason="LightningCLI needs jsonargparse[signatures]")
    pl = L if ns == "lightning.pytorch" else PL
    cli_mod = pytest.importorskip(f"{ns}.cli")
    path = "ml_dash_lightning.MLDashLogger" if pl is L else "ml_dash_lightning.pl.MLDashLogger"
    cli = cli_mod.LightningCLI(
        make_module(pl),
        run=False,
        save_config_callback=None,
        args=[
            f"--trainer.logger.class_path={path}",
            "--trainer.logger.init_args.run=proj/cli",
            f"--trainer.logger.init_args.dash_root={dash_root}",
            "--trainer.logger.init_args.log_model=all",
            "--trainer.max_epochs=1",
            "--trainer.log_every_n_steps=1",
            "--trainer.accelerator=cpu",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}",
        ],
    )
    logger = cli.trainer.logger
    assert type(logger).__module__ + "." + type(logger).__qualname__ == path
    assert isinstance(logger, pl.loggers.Logger)
    assert logger.run == "proj/cli" and logger.save_dir == os.path.abspath(dash_root)
    cli.trainer.fit(cli.model, loaders())
    assert len(load("proj/cli", dash_root=dash_root).metrics("train").read()) == 8
    assert [e["filename"] for e in load("proj/cli", dash_root=dash_root).files.list()] == [
        "epoch=0-step=8.ckpt"
    ]
