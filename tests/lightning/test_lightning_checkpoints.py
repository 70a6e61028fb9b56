"""log_model: checkpoint files stored as ML-Dash files, including ones Lightning deletes later."""

from __future__ import annotations

import os

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning_tiny import loaders, make_module, sha256, trainer_kwargs
from ml_dash import load
from ml_dash_lightning import MLDashLogger

Tiny = make_module(pl)


class RecordingCheckpoint(ModelCheckpoint):
    """Notes the sha256 of every file right after Lightning writes it (the reference for what must be stored)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.saved: list[tuple[str, str]] = []

    def _save_checkpoint(self, trainer, filepath):
        super()._save_checkpoint(trainer, filepath)
        self.saved.append((os.path.basename(filepath), sha256(filepath)))


def stored(root: str, prefix: str) -> list[dict]:
    return [e for e in load(prefix, dash_root=root).files.list() if e["path"] == "/checkpoints"]


def test_log_model_all_keeps_every_saved_checkpoint(dash_root):
    # monitor "step" in max mode: every epoch is a new best, so save_top_k=1 deletes the previous file each time
    ckpt = RecordingCheckpoint(monitor="step", mode="max", save_top_k=1, save_last=True)
    logger = MLDashLogger("proj/all", dash_root=dash_root, log_model="all")
    trainer = pl.Trainer(
        logger=logger, callbacks=[ckpt], **trainer_kwargs(max_epochs=3, enable_checkpointing=True)
    )
    trainer.fit(Tiny(), loaders())

    on_disk = sorted(os.listdir(os.path.join(logger.log_dir, "checkpoints")))
    assert on_disk == ["epoch=2-step=24.ckpt", "last.ckpt"]  # Lightning deleted epochs 0 and 1
    assert len(ckpt.saved) == 6  # 3 top-k saves + 3 last.ckpt saves

    entries = stored(dash_root, "proj/all")
    got = sorted((e["filename"], e["checksum"]) for e in entries)
    assert got == sorted(ckpt.saved)
    for e in entries:  # the stored bytes are the checkpoint as saved then, readable by torch
        assert sha256(e["localPath"]) == e["checksum"]
        step = torch.load(e["localPath"], weights_only=False)["global_step"]
        if e["filename"] != "last.ckpt":
            assert e["filename"].endswith(f"step={step}.ckpt")
    logs = [
        r for r in load("proj/all", dash_root=dash_root).logs.read() if r["message"].startswith("checkpoint")
    ]
    assert len(logs) == 6


def test_log_model_true_stores_best_and_last_at_the_end(dash_root):
    ckpt = RecordingCheckpoint(monitor="val_loss", save_top_k=2, save_last=True)
    logger = MLDashLogger("proj/end", dash_root=dash_root, log_model=True)
    trainer = pl.Trainer(
        logger=logger, callbacks=[ckpt], **trainer_kwargs(max_epochs=3, enable_checkpointing=True)
    )
    trainer.fit(Tiny(), loaders(), loaders(16))
    trainer.validate(Tiny(), loaders(16))  # a second finalize: nothing is stored twice

    names = sorted(e["filename"] for e in stored(dash_root, "proj/end"))
    assert names == sorted([os.path.basename(ckpt.best_model_path), "last.ckpt"])
    by_name = {e["filename"]: e for e in stored(dash_root, "proj/end")}
    assert by_name["last.ckpt"]["checksum"] == sha256(ckpt.last_model_path)
    assert by_name[os.path.basename(ckpt.best_model_path)]["checksum"] == sha256(ckpt.best_model_path)
    best_log = [
        r
        for r in load("proj/end", dash_root=dash_root).logs.read()
        if (r["metadata"] or {}).get("tag") == "best"
    ]
    assert best_log and abs(best_log[0]["metadata"]["score"] - float(ckpt.best_model_score)) < 1e-6


def test_log_model_false_stores_no_files(dash_root):
    logger = MLDashLogger("proj/none", dash_root=dash_root)
    trainer = pl.Trainer(logger=logger, **trainer_kwargs(max_epochs=1, enable_checkpointing=True))
    trainer.fit(Tiny(), loaders())
    assert os.listdir(os.path.join(logger.log_dir, "checkpoints"))  # Lightning saved one
    assert stored(dash_root, "proj/none") == []
