"""Train a tiny, randomly initialised GPT-2 with the HuggingFace Trainer and record it with ml-dash.

    pip install ./packages/core ./packages/hf
    python examples/hf_train.py            # CPU, a few seconds, no downloads

Everything lands in .dash/hf-examples/tiny-gpt2/ (read it back with ml_dash.load, see the end of this file).
"""

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded: the model and data are built here

import ml_dash
import ml_dash_hf
import torch
from ml_dash_hf import MLDashCallback
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments


class RandomTokens(torch.utils.data.Dataset):
    def __init__(self, n, seq=16, vocab=128, seed=0):
        self.x = torch.randint(0, vocab, (n, seq), generator=torch.Generator().manual_seed(seed))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"input_ids": self.x[i], "labels": self.x[i]}


def main():
    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=128, n_positions=32, n_embd=32, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0
        )
    )
    args = TrainingArguments(
        output_dir=os.path.join(tempfile.mkdtemp(), "out"),
        max_steps=20,
        per_device_train_batch_size=8,
        logging_steps=5,
        eval_strategy="steps",
        eval_steps=10,
        save_strategy="steps",
        save_steps=10,
        save_total_limit=1,  # the Trainer deletes old checkpoints; ml-dash has already copied them
        learning_rate=1e-3,
        report_to="none",  # ml-dash is added as a callback, not through report_to
        use_cpu=True,
        disable_tqdm=True,
    )
    callback = MLDashCallback("hf-examples/tiny-gpt2", log_checkpoints="checkpoint")
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=RandomTokens(64),
        eval_dataset=RandomTokens(16, seed=1),
        callbacks=[callback],
    )
    ml_dash_hf.train(trainer)  # = trainer.train(), but an exception marks the run FAILED at once

    run = ml_dash.load("hf-examples/tiny-gpt2")
    print("status:", run.status)
    print("streams:", sorted(run.metrics.names()))
    print("last train row:", run.metrics("train").read()[-1]["data"])
    print("eval rows:", [r["data"]["loss"] for r in run.metrics("eval").read()])
    print("summary:", run.metrics("summary").read()[-1]["data"])
    print(
        "params:",
        {
            k: v
            for k, v in run.params.get().items()
            if k in ("args.learning_rate", "model.n_embd", "model.num_parameters")
        },
    )
    print("checkpoints:", sorted({f["path"] for f in run.files.list()}))


if __name__ == "__main__":
    main()
