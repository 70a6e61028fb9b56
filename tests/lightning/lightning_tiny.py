"""A tiny regression model and data for the Lightning adapter tests (CPU, milliseconds per step).

``make_module(pl)`` builds the LightningModule on either namespace (``lightning.pytorch`` or ``pytorch_lightning``).
``RecordingLogger`` (built the same way) keeps every ``log_metrics`` call Lightning makes, as the reference the
tests compare ML-Dash's stored rows against.
"""

from __future__ import annotations

import hashlib
import math
import os
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

N_TRAIN = 32
BATCH = 4  # 8 training steps per epoch


def loaders(n: int = N_TRAIN, batch: int = BATCH) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    y = x.sum(dim=1, keepdim=True)
    return DataLoader(TensorDataset(x, y), batch_size=batch)


def make_module(pl: Any) -> type:
    class Tiny(pl.LightningModule):
        def __init__(
            self,
            lr: float = 0.05,
            hidden: int = 8,
            fail_at_step: int = -1,
            interrupt_at_step: int = -1,
            opt: dict | None = None,
        ):
            super().__init__()
            self.save_hyperparameters()
            self.net = torch.nn.Sequential(
                torch.nn.Linear(4, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1)
            )

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            if self.global_step == self.hparams.fail_at_step:
                raise RuntimeError(f"boom at step {self.global_step}")
            if self.global_step == self.hparams.interrupt_at_step:
                raise KeyboardInterrupt
            x, y = batch
            loss = torch.nn.functional.mse_loss(self(x), y)
            self.log("train_loss", loss)
            self.log("lr", self.hparams.lr)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self(x), y)
            self.log("val_loss", loss)
            self.log("val/mae", (self(x) - y).abs().mean())

        def test_step(self, batch, batch_idx):
            x, y = batch
            self.log("test_loss", torch.nn.functional.mse_loss(self(x), y))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    return Tiny


def make_recording_logger(pl: Any) -> type:
    class RecordingLogger(pl.loggers.Logger):
        """Keeps what Lightning passes to log_metrics (the reference, not the code under test)."""

        def __init__(self) -> None:
            super().__init__()
            self.calls: list[tuple[dict[str, float], int]] = []

        name = "rec"
        version = "0"
        experiment = None

        def log_metrics(self, metrics, step=None):
            self.calls.append((dict(metrics), step))

        def log_hyperparams(self, params, *args, **kwargs):
            pass

    return RecordingLogger


def trainer_kwargs(**kw: Any) -> dict[str, Any]:
    base = dict(
        accelerator="cpu",
        devices=1,
        max_epochs=2,
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
    )
    base.update(kw)
    return base


def expected_rows(calls: list[tuple[dict[str, float], int]]) -> dict[str, list[dict[str, Any]]]:
    """What the contract says ML-Dash must store for these log_metrics calls (written out independently)."""
    streams = {
        "train_loss": ("train", "loss"),
        "lr": ("train", "lr"),
        "val_loss": ("val", "loss"),
        "val/mae": ("val", "mae"),
        "test_loss": ("test", "loss"),
    }
    out: dict[str, list[dict[str, Any]]] = {}
    last_epoch = None
    for metrics, step in calls:
        epoch = metrics.get("epoch", last_epoch)
        last_epoch = epoch
        rows: dict[str, dict[str, Any]] = {}
        for k, v in metrics.items():
            if k == "epoch":
                continue
            stream, field = streams[k]
            rows.setdefault(stream, {"step": step, "epoch": epoch})[field] = v
        for stream, row in rows.items():
            out.setdefault(stream, []).append(row)
    return out


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    return a == b


def sha256(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()
