"""Lightning training speed with each logger, as a fraction of `logger=False`.

    python bench/lightning_bench.py                    # CPU
    python bench/lightning_bench.py --device cuda      # one GPU

A small MLP is trained with `log_every_n_steps=1` (two metrics logged every step) under MLDashLogger,
CSVLogger, TensorBoardLogger, a do-nothing Logger and logger=False, in one process, rounds interleaved so that
drift hits every configuration alike. The clock starts after `--warmup` steps and stops when `fit` has returned
and the logger has closed (for MLDashLogger: `experiment.run.complete()`, i.e. everything written and fsync'd;
CSV and TensorBoard write and close inside `fit`). Reported: median steps/s over the rounds, its range, the
ratio to `logger=False` and to the do-nothing logger, and the CPU time of the whole process per step (every
thread, the loggers' background threads included; steadier than wall time on a shared machine).

Lightning itself converts the logged tensors to floats before any logger sees them (a device sync per step)
but skips that with `logger=False`; so a logger can only get as close to 1.0 as the do-nothing one.
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

import lightning.pytorch as pl  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger  # noqa: E402
from ml_dash_lightning import MLDashLogger  # noqa: E402

warnings.filterwarnings("ignore")
for _name in ("lightning.pytorch", "lightning.fabric", "lightning"):
    logging.getLogger(_name).setLevel(logging.ERROR)  # no "GPU available" / tips per run


class NoopLogger(Logger):
    """Accepts everything, does nothing: the floor for any logger."""

    @property
    def name(self) -> str:
        return "noop"

    @property
    def version(self) -> str:
        return "0"

    def log_metrics(self, metrics, step=None) -> None:
        pass

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass


class MLP(pl.LightningModule):
    def __init__(self, d_in: int, hidden: int, n_out: int = 10, lr: float = 0.01):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(d_in, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, n_out),
        )

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        self.log("train_loss", loss)
        self.log("train_acc", (logits.argmax(1) == y).float().mean())
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class Batches:
    """Pre-made batches already on the device (a plain list would be read as several dataloaders)."""

    def __init__(self, items: list) -> None:
        self.items = items

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


class Clock(pl.Callback):
    """Starts the clock at the first batch after the warm-up steps."""

    def __init__(self, warmup: int, device: str):
        self.warmup, self.device, self.t0, self.cpu0 = warmup, device, None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.t0 is None and trainer.global_step == self.warmup:
            if self.device == "cuda":
                torch.cuda.synchronize()
            self.t0, self.cpu0 = time.perf_counter(), time.process_time()


def make_logger(kind: str, out: str, run: int):
    if kind == "MLDashLogger":
        return MLDashLogger(f"bench/run-{run}", dash_root=os.path.join(out, "dash"))
    if kind == "CSVLogger":
        return CSVLogger(out, name=f"csv-{run}")
    if kind == "TensorBoardLogger":
        return TensorBoardLogger(out, name=f"tb-{run}")
    if kind == "no-op Logger":
        return NoopLogger()
    return False


def one_run(kind: str, args, batches, out: str, run: int) -> tuple[float, float]:
    """(steps per second, CPU milliseconds per step of the whole process, all threads)."""
    torch.manual_seed(0)
    model = MLP(args.d_in, args.hidden)
    logger = make_logger(kind, out, run)
    clock = Clock(args.warmup, args.device)
    trainer = pl.Trainer(
        accelerator="gpu" if args.device == "cuda" else "cpu",
        devices=1,
        max_steps=args.warmup + args.steps,
        max_epochs=-1,
        logger=logger,
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock],
    )
    trainer.fit(model, batches)
    if isinstance(logger, MLDashLogger):
        logger.experiment.run.complete()  # write and fsync everything before the clock stops
    if args.device == "cuda":
        torch.cuda.synchronize()
    elapsed, cpu = time.perf_counter() - clock.t0, time.process_time() - clock.cpu0
    return args.steps / elapsed, cpu / args.steps * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--steps", type=int, default=None, help="timed steps per run (cpu 800, cuda 4000)")
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batch", type=int, default=None, help="batch size (cpu 64, cuda 512)")
    p.add_argument("--hidden", type=int, default=None, help="MLP width (cpu 128, cuda 1024)")
    p.add_argument("--d-in", type=int, default=64)
    p.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1 keeps a shared machine steady)"
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device available")
    args.steps = args.steps or (4000 if cuda else 800)
    args.batch = args.batch or (512 if cuda else 64)
    args.hidden = args.hidden or (1024 if cuda else 128)

    dev = torch.device(args.device)
    g = torch.Generator().manual_seed(1)
    n_batches = 64  # the loader cycles: max_epochs=-1, max_steps bounds the run
    batches = Batches(
        [
            (
                torch.randn(args.batch, args.d_in, generator=g).to(dev),
                torch.randint(0, 10, (args.batch,), generator=g).to(dev),
            )
            for _ in range(n_batches)
        ]
    )
    kinds = ["logger=False", "no-op Logger", "MLDashLogger", "CSVLogger", "TensorBoardLogger"]
    results: dict[str, list[float]] = {k: [] for k in kinds}
    cpu_ms: dict[str, list[float]] = {k: [] for k in kinds}
    out = tempfile.mkdtemp(prefix="lightning-bench-")
    try:
        one_run(
            "logger=False", argparse.Namespace(**{**vars(args), "steps": 50, "warmup": 10}), batches, out, 0
        )
        run = 0
        for r in range(args.rounds):
            order = kinds[r % len(kinds) :] + kinds[: r % len(kinds)]  # rotate so no config always goes first
            for kind in order:
                run += 1
                gc.collect()
                speed, cpu = one_run(kind, args, batches, out, run)
                results[kind].append(speed)
                cpu_ms[kind].append(cpu)
    finally:
        shutil.rmtree(out, ignore_errors=True)

    device = torch.cuda.get_device_name(0) if cuda else f"{platform.processor() or platform.machine()} CPU"
    print(
        f"\nLightning {pl.__version__}, torch {torch.__version__}, {device}, {os.cpu_count()} cores; "
        f"MLP {args.d_in}-{args.hidden}-{args.hidden}-10, batch {args.batch}, log_every_n_steps=1 (2 metrics), "
        f"{args.steps} timed steps x {args.rounds} rounds, {args.threads} torch thread(s)"
    )
    base = statistics.median(results["logger=False"])
    noop = statistics.median(results["no-op Logger"])
    print("\n| logger | steps/s (median) | range | vs logger=False | vs no-op Logger | CPU ms/step |")
    print("|---|---|---|---|---|---|")
    for kind in kinds:
        med = statistics.median(results[kind])
        lo, hi = min(results[kind]), max(results[kind])
        cpu = statistics.median(cpu_ms[kind])
        print(
            f"| {kind} | {med:,.0f} | {lo:,.0f}–{hi:,.0f} | {med / base:.3f} | {med / noop:.3f} | {cpu:.2f} |"
        )


if __name__ == "__main__":
    main()
