"""Tiny in-process models and datasets for the HF adapter tests (no downloads, CPU, a few steps)."""

from __future__ import annotations

import torch
from torch import nn

VOCAB = 64
SEQ = 8


class TokenDataset(torch.utils.data.Dataset):
    """Random token sequences for a causal LM (labels = inputs)."""

    def __init__(self, n: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randint(0, VOCAB, (n, SEQ), generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.x[i], "labels": self.x[i]}


def tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=VOCAB, n_positions=SEQ * 2, n_embd=32, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0
    )
    return GPT2LMHeadModel(cfg)


class RegressionDataset(torch.utils.data.Dataset):
    def __init__(self, n: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x.sum(dim=1)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "labels": self.y[i]}


class Exploding(nn.Module):
    """A plain torch module returning {"loss": ...}; its `fail_at`-th forward call raises `exc`."""

    def __init__(self, fail_at: int | None = None, exc: BaseException | None = None) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 1)
        self.calls = 0
        self.fail_at = fail_at
        self.exc = exc or RuntimeError(f"boom in forward call {fail_at}")

    def forward(self, x, labels=None):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise self.exc
        out = self.lin(x).squeeze(-1)
        return {"loss": ((out - labels) ** 2).mean(), "logits": out}


def make_args(tmp_path, **overrides):
    from transformers import TrainingArguments

    base = dict(
        output_dir=str(tmp_path / "out"),
        report_to="none",
        use_cpu=True,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        max_steps=6,
        logging_steps=2,
        save_strategy="no",
        eval_strategy="no",
        learning_rate=1e-3,
        seed=0,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        disable_tqdm=True,
        remove_unused_columns=False,
    )
    base.update(overrides)
    return TrainingArguments(**base)


def rows(view, stream):
    """Metric rows of a stream without the write timestamp."""
    out = []
    for r in view.metrics(stream).read():
        data = dict(r["data"])
        data.pop("_ts", None)
        out.append(data)
    return out


def expected_stream(entry: dict) -> tuple[str, dict]:
    """The contract's rule, written out independently of the adapter, for one `state.log_history` entry."""
    summary = {
        "train_runtime",
        "train_samples_per_second",
        "train_steps_per_second",
        "total_flos",
        "train_loss",
    }
    fields = {k: v for k, v in entry.items() if k not in ("step", "epoch")}
    if summary & set(fields) and "total_flos" in fields:
        return "summary", fields
    for split in ("eval", "test", "val", "predict", "train"):
        if all(k.startswith(split + "_") for k in fields):
            return split, {k[len(split) + 1 :]: v for k, v in fields.items()}
    return "train", fields
