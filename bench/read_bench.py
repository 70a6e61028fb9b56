"""Reading runs back as columns, against np.load of the same columns in the same run.

    python bench/read_bench.py [--rows 1000000] [--runs 100] [--run-rows 10000]

A stream of ``--rows`` rows of 3 numeric fields (plus ``index`` and ``_ts``) is written by the project's own
writer (``layout.ExperimentDir.append_metrics``, the code a training run uses). Rows of the table:

  np.load (floor)          np.load of the same 5 columns saved as one .npy file
  read() (rows as dicts)   the row API, for comparison (skipped with --no-rows)
  cold                     columns() with an empty column cache: parse the whole file
  warm (new process)       columns() with only the disk cache: load the cached columns, check the file
  warm (same process)      columns() again in the same process: nothing new to parse
  +1,000 appended rows     columns() after 1,000 rows were appended: parse only those
  R runs x N rows cold     columns() of ``--runs`` streams of ``--run-rows`` rows each, empty cache
  the same, side by side   colcache.read_many() of those streams (each whole on one thread, one per core): what
                           the viewer's overlay of many runs and ``ml-dash export`` use
  ... until the cache is on disk   the same and colcache.flush(): the disk cache's files, which a background
                           thread writes once reads have gone quiet, written too (the rows above return before)

Times are the median of a few repetitions (cold ones: each with a fresh cache). The machine may be shared:
compare the ratio column, which is measured against the floor in the same run, and the CPU time column (this
process, all threads: a cold read parses its chunks on up to 4 threads, so on an idle machine with several CPUs
the time is below the CPU time, on a busy one above it).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from ml_dash import colcache, load
from ml_dash.layout import ExperimentDir


def write_stream(root: Path, prefix: str, rows: int, start: int = 0, seed: int = 0) -> None:
    rng = random.Random(seed)
    d = ExperimentDir(root, prefix)
    d.open_info(None, None, None)
    t = 1.7e9 + start * 0.01
    batch = 10_000
    for b in range(start, start + rows, batch):
        d.append_metrics("train", [{"loss": rng.random(), "acc": rng.random(), "lr": rng.random() * 1e-3,
                                    "_ts": t + i * 0.01} for i in range(b, min(b + batch, start + rows))])
    d.close()


def timed(fn, reps: int, setup=None) -> tuple[float, float]:
    """Median wall time and median process CPU time (all threads) of ``fn``."""
    out, cpu = [], []
    for _ in range(reps):
        if setup:
            setup()
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        out.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(out), statistics.median(cpu)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--run-rows", type=int, default=10_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-rows", action="store_true", help="skip the read() row for comparison")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ml-dash-read-bench-"))
    cache = tmp / "cache"
    os.environ["ML_DASH_CACHE_DIR"] = str(cache)
    root = tmp / ".dash"
    try:
        t0 = time.perf_counter()
        write_stream(root, "bench/big", args.rows)
        path = root / "bench/big/metrics/train/data.jsonl"
        print(f"wrote {args.rows:,} rows ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr)
        view = load("bench/big", root)
        stream = view.metrics("train")

        def fresh() -> None:
            colcache.clear_memory()
            shutil.rmtree(cache, ignore_errors=True)

        cols = stream.columns()
        npy = tmp / "cols.npy"
        np.save(npy, np.stack([cols[k].astype(np.float64) for k in ("index", "_ts", "loss", "acc", "lr")]))
        floor, _ = timed(lambda: np.load(npy), args.reps + 2)
        rows_out = []
        rows_out.append(("np.load (floor)", (floor, floor)))
        if not args.no_rows:
            rows_out.append(("read() (rows as dicts)", timed(stream.read, 1)))
        rows_out.append(("cold", timed(stream.columns, args.reps, setup=fresh)))
        stream.columns()  # fills the disk cache
        rows_out.append(("warm (new process)", timed(stream.columns, args.reps + 2, setup=colcache.clear_memory)))
        rows_out.append(("warm (same process)", timed(stream.columns, args.reps + 2)))
        appended, appended_cpu = [], []
        for r in range(args.reps + 2):
            stream.columns()
            write_stream(root, "bench/big", 1000, start=args.rows + r * 1000, seed=r + 1)
            t0, c0 = time.perf_counter(), time.process_time()
            c = stream.columns()
            appended.append(time.perf_counter() - t0)
            appended_cpu.append(time.process_time() - c0)
            assert c.rows == args.rows + (r + 1) * 1000
        rows_out.append(("+1,000 appended rows", (statistics.median(appended), statistics.median(appended_cpu))))
        for i in range(args.runs):
            write_stream(root, f"bench/run{i:03d}", args.run_rows, seed=100 + i)
        views = [load(f"bench/run{i:03d}", root).metrics("train") for i in range(args.runs)]

        def many() -> None:
            for v in views:
                v.columns()

        rows_out.append((f"{args.runs} runs x {args.run_rows:,} rows cold", timed(many, args.reps, setup=fresh)))
        paths = [ExperimentDir(root, f"bench/run{i:03d}").metric_file("train") for i in range(args.runs)]

        def side_by_side() -> None:
            colcache.read_many(paths, "metrics")

        rows_out.append(("  the same, side by side (read_many)", timed(side_by_side, args.reps, setup=fresh)))

        def side_by_side_stored() -> None:
            colcache.read_many(paths, "metrics")
            colcache.flush()

        rows_out.append(("  the same, until the cache is on disk", timed(side_by_side_stored, args.reps, setup=fresh)))
        print(f"\n{'read of a ' + format(args.rows, ',') + '-row stream, 3 numeric fields':<44}{'time':>12}"
              f"{'x np.load':>12}{'CPU time':>12}")
        for name, (t, cpu) in rows_out:
            print(f"{name:<44}{t * 1e3:>10.1f} ms{t / floor:>12.1f}{cpu * 1e3:>10.1f} ms")
        print(f"(CPU time: this process, all threads; load average {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} CPUs)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
