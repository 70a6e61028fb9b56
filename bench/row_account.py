"""Where the CPU of one metric row goes, part by part, each measured alone on one thread.

    python bench/row_account.py [--rows N] [--rounds R]

`core_bench` gives the whole process's CPU per row while the writer thread runs beside the loop; this script
splits that cost into its parts, each timed with the CPU time of the thread doing it (so other jobs on the
machine count less), the writer thread held off so that nothing else runs meanwhile, minimum over the rounds:

  deque floor        building the row dict and appending it to a collections.deque (what any tracker pays)
  call, no spill     exp.metrics("train").log(step, loss, acc) with the spill switched off: validation,
                     timestamp, append to the stream's tail
  spill              moving the tail into the spill ring every 8 rows (one orjson call, the checks on its
                     text, the copy into the ring), per row
  call with spill    the call as it runs in a training loop (the two above together)
  writer             turning the ring into the journal (cut, format, write), per row, on one thread
  complete()         closing the run after the rows were written (metadata, fsync, unmapping the ring), in all

The whole cost of a row is about "call with spill" + "writer" - "deque floor"; what `core_bench` measures beyond
that sum is the price of two threads sharing the GIL (hand-offs, caches) and the machine's noise.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import shutil
import tempfile
import time

import ml_dash.buffer as buffer_mod
import numpy  # noqa: F401  (as in a training script)
from ml_dash import Experiment
from ml_dash.buffer import BufferConfig
from ml_dash.ring import METRIC, SPILL_EVERY


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    n = args.rows
    buffer_mod.WAKE_BYTES = 1 << 50  # the training thread never wakes the writer: each part runs alone
    root = tempfile.mkdtemp(prefix="ml-dash-account-")
    got: dict[str, list[float]] = collections.defaultdict(list)
    try:
        for r in range(args.rounds):
            q: collections.deque = collections.deque()
            t = time.thread_time()
            for i in range(n):
                q.append({"step": i, "loss": 0.5, "acc": 0.25})
            got["deque floor"].append((time.thread_time() - t) / n * 1e6)
            q.clear()
            exp = Experiment(f"bench/account-{r}", dash_root=root, buffer_config=BufferConfig(
                quiet=True, write_interval=1000.0, flush_interval=1000.0)).run.start()
            m = exp.metrics
            m("train").log(step=0, loss=0.5, acc=0.25)
            exp.flush()
            buf = exp._buf
            t = time.thread_time()
            for i in range(n):
                m("train").log(step=i, loss=0.5, acc=0.25)
            got["call with spill"].append((time.thread_time() - t) / n * 1e6)
            t = time.thread_time()
            buf.drain()
            got["writer"].append((time.thread_time() - t) / n * 1e6)
            ticks = buf.ticks
            buf.ticks = itertools.repeat(False)
            t = time.thread_time()
            for i in range(n):
                m("train").log(step=i, loss=0.5, acc=0.25)
            got["call, no spill"].append((time.thread_time() - t) / n * 1e6)
            tail = buf.tails[(METRIC, "train")]
            rows = tail[:]
            tail.clear()
            t = time.thread_time()
            for k in range(0, n, SPILL_EVERY):
                tail.extend(rows[k:k + SPILL_EVERY])
                buf.spill(False)
            got["spill"].append((time.thread_time() - t) / n * 1e6)
            if buf.metrics:
                raise SystemExit(f"--rows {n}: the ring filled up, so rows were queued in memory; use fewer rows")
            buf.drain()
            buf.ticks = ticks
            t = time.thread_time()
            exp.run.complete()
            got["complete() (ms, in all)"].append((time.thread_time() - t) * 1e3)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"CPU of one metric row {{step, loss, acc}} by part, {n:,} rows, thread CPU, min of {args.rounds} rounds")
    for part in ("deque floor", "call, no spill", "spill", "call with spill", "writer", "complete() (ms, in all)"):
        unit = "" if "ms" in part else " µs/row"
        print(f"  {part:26} {min(got[part]):7.3f}{unit}")
    whole = min(got["call with spill"]) + min(got["writer"]) - min(got["deque floor"])
    print(f"  {'sum less the floor':26} {whole:7.3f} µs/row")
    print(f"rerun: python bench/row_account.py --rows {n} --rounds {args.rounds}")


if __name__ == "__main__":
    main()
