"""Runs that must end their own process (so ml-dash's exit hook runs) or spawn workers.

    python lightning_scripts.py MODE DASH_ROOT PREFIX OUT_JSON

MODE ``fit_validate_test``: fit, validate and test with MLDashLogger next to a RecordingLogger; writes the calls
Lightning made to OUT_JSON. MODE ``ddp_spawn``: fit with strategy="ddp_spawn" on 2 CPU processes (gloo); every
rank logs a line through ``self.logger.experiment``. MODE ``sigterm``: the process sends itself SIGTERM at step 3.
"""

from __future__ import annotations

import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lightning.pytorch as pl  # noqa: E402
import torch  # noqa: E402
from lightning_tiny import loaders, make_module, make_recording_logger, trainer_kwargs  # noqa: E402
from ml_dash_lightning import MLDashLogger  # noqa: E402


def fit_validate_test(root: str, prefix: str, out: str) -> None:
    logger = MLDashLogger(prefix, dash_root=root)
    rec = make_recording_logger(pl)()
    model = make_module(pl)(lr=0.05, opt={"name": "sgd", "momentum": 0.0})
    trainer = pl.Trainer(logger=[logger, rec], **trainer_kwargs())
    trainer.fit(model, loaders(), loaders(16))
    trainer.validate(model, loaders(16))
    trainer.test(model, loaders(16))
    with open(out, "w") as f:
        json.dump({"calls": rec.calls, "log_dir": logger.log_dir, "folder": str(logger.experiment.folder)}, f)


class RankLogging(make_module(pl)):  # type: ignore[misc]
    def training_step(self, batch, batch_idx):
        exp = self.logger.experiment
        exp.log(f"rank {self.global_rank} step {self.global_step}")
        if batch_idx == 0:  # what each rank got as `experiment`, for the test to check
            with open(f"{os.environ['LIGHTNING_TEST_OUT']}.rank{self.global_rank}", "w") as f:
                f.write(type(exp).__name__)
        return super().training_step(batch, batch_idx)


def ddp_spawn(root: str, prefix: str, out: str) -> None:
    torch.set_num_threads(1)
    os.environ["LIGHTNING_TEST_OUT"] = out  # the spawned workers inherit it
    logger = MLDashLogger(prefix, dash_root=root)
    logger.experiment.log("parent before fit")  # created here, then pickled into the workers
    trainer = pl.Trainer(
        logger=logger, strategy="ddp_spawn", **trainer_kwargs(devices=2, max_epochs=1, limit_val_batches=0)
    )
    trainer.fit(RankLogging(), loaders())
    with open(out, "w") as f:
        json.dump({"global_step": trainer.global_step, "pid": os.getpid()}, f)


class SigtermAt3(make_module(pl)):  # type: ignore[misc]
    def training_step(self, batch, batch_idx):
        if self.global_step == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().training_step(batch, batch_idx)


def sigterm(root: str, prefix: str, out: str) -> None:
    logger = MLDashLogger(prefix, dash_root=root)
    pl.Trainer(logger=logger, **trainer_kwargs()).fit(SigtermAt3(), loaders())


if __name__ == "__main__":
    mode, root, prefix, out = sys.argv[1:5]
    {"fit_validate_test": fit_validate_test, "ddp_spawn": ddp_spawn, "sigterm": sigterm}[mode](
        root, prefix, out
    )
