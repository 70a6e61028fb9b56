"""HF Trainer speed with and without MLDashCallback, as a fraction of the Trainer with no callback.

    python bench/hf_bench.py                    # CPU
    python bench/hf_bench.py --device cuda      # one GPU

A tiny GPT-2 (2 layers, width 64 on CPU, 256 on GPU) is trained with `logging_steps=1` (HF logs loss,
grad_norm and learning_rate every step) with `report_to="none"` and either no extra callback, a do-nothing
`TrainerCallback`, or `MLDashCallback`, in one process, rounds interleaved so that drift hits every configuration
alike. The clock covers `trainer.train()` plus the callback's run completion (everything written and fsync'd).
Reported: median steps/s over the rounds, its range, the ratio to the plain Trainer, and CPU ms per step of the
whole process (all threads).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import platform
import shutil
import statistics
import tempfile
import time
import warnings

os.environ.setdefault("ML_DASH_QUIET", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from ml_dash_hf import MLDashCallback  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments  # noqa: E402

warnings.filterwarnings("ignore")
transformers.logging.set_verbosity_error()
logging.getLogger("transformers").setLevel(logging.ERROR)

VOCAB, SEQ = 128, 32


class Tokens(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randint(0, VOCAB, (n, SEQ), generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.x[i], "labels": self.x[i]}


class Noop(TrainerCallback):
    """Accepts every event, does nothing."""


def one_run(kind: str, args, data, out: str, run: int) -> tuple[float, float]:
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=SEQ, n_embd=args.width, n_layer=2, n_head=2)
    model = GPT2LMHeadModel(cfg)
    callbacks: list = []
    cb = None
    if kind == "MLDashCallback":
        cb = MLDashCallback(f"bench/hf-{run}", dash_root=os.path.join(out, "dash"))
        callbacks = [cb]
    elif kind == "no-op callback":
        callbacks = [Noop()]
    targs = TrainingArguments(
        output_dir=os.path.join(out, f"o{run}"),
        report_to="none",
        use_cpu=args.device == "cpu",
        per_device_train_batch_size=args.batch,
        max_steps=args.steps,
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
    )
    trainer = Trainer(model=model, args=targs, train_dataset=data, callbacks=callbacks)
    if args.device == "cuda":
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    trainer.train()
    if cb is not None:
        cb.experiment.run.complete()
    if args.device == "cuda":
        torch.cuda.synchronize()
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    return args.steps / elapsed, cpu / args.steps * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--steps", type=int, default=None, help="steps per run (cpu 150, cuda 600)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--width", type=int, default=None, help="model width (cpu 64, cuda 256)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device available")
    args.steps = args.steps or (600 if cuda else 150)
    args.width = args.width or (256 if cuda else 64)
    data = Tokens(args.batch * 64)
    kinds = ["no callback", "no-op callback", "MLDashCallback"]
    speed: dict[str, list[float]] = {k: [] for k in kinds}
    cpu_ms: dict[str, list[float]] = {k: [] for k in kinds}
    out = tempfile.mkdtemp(prefix="hf-bench-")
    try:
        one_run("no callback", argparse.Namespace(**{**vars(args), "steps": 20}), data, out, 0)  # warm-up
        run = 0
        for r in range(args.rounds):
            for kind in kinds[r % 3 :] + kinds[: r % 3]:
                run += 1
                gc.collect()
                s, c = one_run(kind, args, data, out, run)
                speed[kind].append(s)
                cpu_ms[kind].append(c)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    device = torch.cuda.get_device_name(0) if cuda else f"{platform.processor() or platform.machine()} CPU"
    print(
        f"\ntransformers {transformers.__version__}, torch {torch.__version__}, {device}; GPT-2 2x{args.width}, "
        f"batch {args.batch}x{SEQ}, logging_steps=1, {args.steps} steps x {args.rounds} rounds"
    )
    base = statistics.median(speed["no callback"])
    print("\n| Trainer | steps/s (median) | range | vs no callback | CPU ms/step |")
    print("|---|---|---|---|---|")
    for kind in kinds:
        med = statistics.median(speed[kind])
        print(
            f"| {kind} | {med:,.1f} | {min(speed[kind]):,.1f}–{max(speed[kind]):,.1f} | {med / base:.3f} "
            f"| {statistics.median(cpu_ms[kind]):.2f} |"
        )


if __name__ == "__main__":
    main()
