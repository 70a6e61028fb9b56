"""Per-step cost of an adapter's logging call against the core call that stores the same rows.

    ./dev bench adapter_bench          (or: python bench/adapter_bench.py [--steps N] [--rounds R])

Rows of the table (mean CPU µs of the training thread per call over N calls, median of R interleaved rounds;
CPU time of the calling thread, so time spent waiting for a core on a busy machine is left out):
  core: metrics(...).log           exp.metrics("train").log(step=i, epoch=e, loss=x, acc=y)
  lightning: log_metrics           MLDashLogger.log_metrics({"train_loss", "train_acc", "epoch"}, step=i)
  hf: on_log                       MLDashCallback.on_log(..., logs={"loss", "grad_norm", "learning_rate", "epoch"})
                                   against the core call storing the same train row (three fields)
  keras: on_train_batch_end        MLDashCallback(log_freq=1).on_train_batch_end(i, {"loss", "accuracy"}) against
                                   the core call storing the same row (loss, accuracy, step, epoch, batch); the
                                   default log_freq="epoch" stores no row per batch, its per-batch call is beside it
The goal: an adapter's call costs at most 2x the core call that stores the same row (the routing of each key is
computed once and cached).

``--before DIR``: A/B against another version, DIR being the root of its checkout (``git archive REV packages |
tar -x -C DIR``): R rounds alternate between a process of that version (its ``packages/*/src`` first on the path)
and one of this version; the table gives each case's median of the rounds and its ratio to the core call of the
same process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace

os.environ.setdefault("KERAS_BACKEND", "torch")  # Keras 3 without TensorFlow

from ml_dash import Experiment
from ml_dash.buffer import BufferConfig

ns = time.thread_time_ns  # CPU time of the calling thread: on a shared machine, waiting for a core is not counted
CONFIG = dict(write_interval=0.05, quiet=True)


def _loop(fn, n: int) -> float:
    t0 = ns()
    for i in range(n):
        fn(i)
    return (ns() - t0) / n / 1e3


def _core(root: str, fields: int):
    exp = Experiment("bench/core%d" % fields, dash_root=root, buffer_config=BufferConfig(**CONFIG)).run.start()
    acc = exp.metrics("train")
    if fields == 2:
        return exp, lambda i: acc.log(step=i, epoch=0, loss=0.5, acc=0.9)
    return exp, lambda i: acc.log(step=i, epoch=0.5, loss=0.5, grad_norm=1.0, learning_rate=0.1)


def _lightning(root: str):
    from ml_dash_lightning import MLDashLogger

    logger = MLDashLogger(run="bench/lightning", save_dir=root, buffer_config=BufferConfig(**CONFIG))
    metrics = {"train_loss": 0.5, "train_acc": 0.9, "epoch": 0}
    logger.log_metrics(metrics, step=0)  # opens the run
    return logger.experiment, lambda i: logger.log_metrics(metrics, step=i)


def _hf(root: str):
    from ml_dash_hf import MLDashCallback
    from transformers import TrainerState

    cb = MLDashCallback("bench/hf", dash_root=root, buffer_config=BufferConfig(**CONFIG))
    logs = {"loss": 0.5, "grad_norm": 1.0, "learning_rate": 0.1, "epoch": 0.5}
    # Trainer.log appends {**logs, "step": step} to log_history before on_log: the callback looks at the last one.
    # The Trainer's own state class (a plain namespace's attributes are slower to read in CPython 3.11)
    state = TrainerState(global_step=0, epoch=0.5, log_history=[{**logs, "step": 0}], max_steps=0,
                         num_train_epochs=1)
    args = SimpleNamespace(output_dir=root, to_dict=lambda: {"learning_rate": 0.1})
    cb.on_train_begin(args, state, None)  # inside train(): on_log only records

    def call(i: int) -> None:
        state.global_step = i
        cb.on_log(args, state, None, logs=logs)

    return cb.experiment, call


def _core_keras(root: str):
    exp = Experiment("bench/core-keras", dash_root=root, buffer_config=BufferConfig(**CONFIG)).run.start()
    acc = exp.metrics("train")
    return exp, lambda i: acc.log(loss=0.5, accuracy=0.9, step=i, epoch=0, batch=i)


def _keras(root: str, freq: object):
    import keras
    from ml_dash_keras import MLDashCallback

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    cb = MLDashCallback("bench/keras-%s" % freq, dash_root=root, log_freq=freq, buffer_config=BufferConfig(**CONFIG))
    cb.set_model(model)
    cb.set_params({"epochs": 1, "steps": None, "verbose": 0})
    cb.on_train_begin()
    cb.on_epoch_begin(0)
    logs = {"loss": 0.5, "accuracy": 0.9}  # Keras hands callbacks Python floats
    return cb.experiment, lambda i: cb.on_train_batch_end(i - 1, logs)  # batches 0, 1, ... as Keras numbers them


_BASES = {"hf": "core: metrics(...).log (3 fields)", "core: metrics(...).log (3": "core: metrics(...).log (3 fields)",
          "keras": "core: metrics(...).log (keras row)", "core: metrics(...).log (keras": "core: metrics(...).log (keras row)"}


def _base(name: str) -> str:
    return next((v for k, v in _BASES.items() if name.startswith(k)), "core: metrics(...).log (2 fields)")


_PACKAGES = ("core", "lightning", "hf", "keras")


def _ab(before: str, steps: int, rounds: int) -> None:
    """Alternate processes of the version in ``before`` and of this one (3 interleaved rounds each); print the
    medians over the processes of each case's time and of its ratio to the core call in the same process."""
    here = os.path.dirname(os.path.abspath(__file__))
    paths = {"before": os.pathsep.join(os.path.join(before, "packages", p, "src") for p in _PACKAGES),
             "this": os.pathsep.join(os.path.join(here, "..", "packages", p, "src") for p in _PACKAGES)}
    got: dict[str, dict[str, list[tuple[float, float]]]] = {v: {} for v in paths}
    for _ in range(rounds):
        for version, path in paths.items():
            env = dict(os.environ, PYTHONPATH=path)
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "--steps", str(steps), "--rounds", "3",
                                  "--json"], env=env, check=True, capture_output=True, text=True).stdout
            med = json.loads(out.splitlines()[-1])
            for name, value in med.items():
                got[version].setdefault(name, []).append((value, value / med[_base(name)]))
    print(f"{'call (median of %d processes each)' % rounds:36} {'before µs':>10} {'× core':>7} {'this µs':>10} "
          f"{'× core':>7}")
    for name in got["this"]:
        cells = []
        for version in paths:
            runs = got[version].get(name, [(float("nan"), float("nan"))])
            cells.append(f"{statistics.median(t for t, _ in runs):10.2f} {statistics.median(r for _, r in runs):7.2f}")
        print(f"{name:36} {' '.join(cells)}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--before", metavar="DIR", help="A/B against the checkout in DIR (alternating processes)")
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.before:
        _ab(a.before, a.steps, a.rounds)
        return
    with tempfile.TemporaryDirectory() as root:
        cases = {"core: metrics(...).log (2 fields)": _core(root, 2), "lightning: log_metrics": _lightning(root),
                 "core: metrics(...).log (3 fields)": _core(root, 3)}
        try:
            cases["hf: on_log"] = _hf(root)
        except ImportError:
            pass
        try:
            keras_cases = {"keras: on_train_batch_end (log_freq=1)": _keras(root, 1),
                           "keras: on_train_batch_end (per epoch)": _keras(root, "epoch")}
        except ImportError:
            pass
        else:
            cases["core: metrics(...).log (keras row)"] = _core_keras(root)
            cases.update(keras_cases)
        times: dict[str, list[float]] = {k: [] for k in cases}
        for r in range(a.rounds):  # interleaved, so a noisy moment hits every case alike
            for name, (exp, fn) in cases.items():
                times[name].append(_loop(lambda i, fn=fn, r=r: fn(r * a.steps + i + 1), a.steps))
                exp.flush()
        med = {k: statistics.median(v) for k, v in times.items()}
        for exp, _ in cases.values():
            exp.run.complete()
    if a.json:
        print(json.dumps(med))
        return
    print(f"{'call':36} {'CPU µs/call (median of rounds)':>32} {'× core':>8}")
    for name, value in med.items():
        print(f"{name:36} {value:32.2f} {value / med[_base(name)]:8.2f}")


if __name__ == "__main__":
    main()
