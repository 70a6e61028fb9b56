"""Train a tiny regression model with PyTorch Lightning and log it to ML-Dash.

    pip install ./packages/core ./packages/lightning
    python examples/lightning_quickstart.py            # writes .dash/lightning-demo/quickstart-<time>/

Runs on CPU in seconds. Afterwards it reads the run back with ``ml_dash.load``.
"""

from __future__ import annotations

import time

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from ml_dash import load
from ml_dash_lightning import MLDashLogger
from torch.utils.data import DataLoader, TensorDataset


class Regressor(pl.LightningModule):
    def __init__(self, lr: float = 0.05, hidden: int = 16, optimizer: dict | None = None):
        super().__init__()
        self.save_hyperparameters()  # recorded as ML-Dash parameters
        self.net = torch.nn.Sequential(
            torch.nn.Linear(4, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1)
        )

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)  # -> metric stream "train", field "loss"
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))  # -> stream "val"

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_loss", torch.nn.functional.mse_loss(self.net(x), y))  # -> stream "test"

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def data(n: int, seed: int) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=16)


def main() -> None:
    run_path = f"lightning-demo/quickstart-{time.strftime('%Y%m%d-%H%M%S')}"
    logger = MLDashLogger(run=run_path, log_model=True, tags=["example"])  # best and last checkpoint at the end
    trainer = pl.Trainer(
        logger=logger,
        max_epochs=3,
        log_every_n_steps=5,
        accelerator="cpu",
        enable_progress_bar=False,
        callbacks=[ModelCheckpoint(monitor="val_loss", save_last=True)],
    )
    model = Regressor(optimizer={"name": "sgd", "momentum": 0.0})
    trainer.fit(model, data(256, 0), data(64, 1))
    trainer.test(model, data(64, 2))

    run = load(logger.run, dash_root=logger.save_dir)
    print(f"\nrun folder: {logger.log_dir}")
    for stream in run.metrics.names():
        rows = run.metrics(stream).read()
        print(f"metrics/{stream}: {len(rows)} rows, last: {rows[-1]['data']}")
    print("params:", run.params.get())
    print("files:", [f"{e['path']}/{e['filename']}" for e in run.files.list()])
    print("status:", run.status)  # COMPLETED: the logger opened the run, so it closes it after each Trainer call


if __name__ == "__main__":
    main()
