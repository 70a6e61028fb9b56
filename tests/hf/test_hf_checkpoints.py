"""log_checkpoints: every checkpoint is kept although save_total_limit deletes it; "end" stores the final model."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from hf_tiny import TokenDataset, make_args, tiny_gpt2
from ml_dash import load
from ml_dash_hf import MLDashCallback
from transformers import GPT2LMHeadModel, Trainer

pytestmark = pytest.mark.timeout(120)  # a hang (e.g. at close) fails the test instead of the whole run


def _stored(view, folder):
    return {f["filename"]: f for f in view.files.list() if f["path"] == folder}


def _local(view, entry):
    return entry["localPath"]  # where the stored copy lies on disk


def test_every_checkpoint_is_stored_although_the_trainer_deleted_it(tmp_path, dash_root):
    args = make_args(
        tmp_path, max_steps=6, logging_steps=2, save_strategy="steps", save_steps=2, save_total_limit=1
    )
    cb = MLDashCallback("hf-tests/ckpt", dash_root=dash_root, log_checkpoints="checkpoint")
    trainer = Trainer(model=tiny_gpt2(), args=args, train_dataset=TokenDataset(16), callbacks=[cb])
    trainer.train()

    assert sorted(os.listdir(args.output_dir)) == ["checkpoint-6"]  # the Trainer kept only the last one
    view = load("hf-tests/ckpt", dash_root=dash_root)
    assert view.status == "COMPLETED"
    folders = sorted({f["path"] for f in view.files.list()})
    assert folders == ["/checkpoints/checkpoint-2", "/checkpoints/checkpoint-4", "/checkpoints/checkpoint-6"]
    for step in (2, 4, 6):
        files = _stored(view, f"/checkpoints/checkpoint-{step}")
        assert {"config.json", "model.safetensors", "trainer_state.json", "optimizer.pt"} <= set(files)
        with open(_local(view, files["trainer_state.json"])) as fh:
            assert json.load(fh)["global_step"] == step  # the content as it was at that save
    # what survived on disk is byte-identical to what was stored for it
    last = _stored(view, "/checkpoints/checkpoint-6")
    for name in os.listdir(os.path.join(args.output_dir, "checkpoint-6")):
        with (
            open(os.path.join(args.output_dir, "checkpoint-6", name), "rb") as a,
            open(_local(view, last[name]), "rb") as b,
        ):
            assert a.read() == b.read(), name


def test_end_stores_the_final_model_loadable_with_from_pretrained(tmp_path, dash_root):
    args = make_args(tmp_path, max_steps=4, logging_steps=2)
    cb = MLDashCallback("hf-tests/end", dash_root=dash_root, log_checkpoints="end")
    trainer = Trainer(model=tiny_gpt2(), args=args, train_dataset=TokenDataset(16), callbacks=[cb])
    trainer.train()

    view = load("hf-tests/end", dash_root=dash_root)
    assert view.status == "COMPLETED"
    assert not any(f["path"].startswith("/checkpoints") for f in view.files.list())
    files = _stored(view, "/model")
    assert {"config.json", "model.safetensors"} <= set(files)
    restored_dir = tmp_path / "restored"
    restored_dir.mkdir()
    for name, entry in files.items():
        shutil.copy(_local(view, entry), restored_dir / name)
    restored = GPT2LMHeadModel.from_pretrained(str(restored_dir))
    trained = trainer.model.state_dict()
    for key, value in restored.state_dict().items():
        assert torch.equal(value, trained[key]), key
