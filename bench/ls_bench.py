"""`ml-dash ls` on many runs.

    python bench/ls_bench.py [--runs 10000]

Writes ``--runs`` runs (two metric streams of a few rows each, params, tags) with the project's writer, then times
``ml-dash ls`` (the table) and ``ml-dash ls --json --metrics train:loss`` as a user runs them (a new process
each time, so the time includes the interpreter start), cold (the first run after writing) and warm (repeated;
the OS has the small metadata files cached). ls reads no metric data file, except the last line of a stream for
``--metrics``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ml_dash.layout import ExperimentDir


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ml-dash-ls-bench-"))
    root = tmp / ".dash"
    try:
        t0 = time.perf_counter()
        for i in range(args.runs):
            d = ExperimentDir(root, f"proj/sweep{i // 100:03d}/run{i:05d}")
            d.open_info(None, ["bench"] if i % 2 else [], None)
            d.set_params({"lr": 10 ** -(i % 4), "seed": i})
            d.append_metrics("train", [{"step": s, "loss": 1 / (s + 1), "_ts": time.time()} for s in range(5)])
            d.append_metrics("val", [{"acc": 0.5, "_ts": time.time()}])
            d.update_info(status="COMPLETED")
            d.close()
        print(f"wrote {args.runs:,} runs in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ML_DASH_")}
        env["ML_DASH_CACHE_DIR"] = str(tmp / "cache")

        def ls(*extra: str) -> float:
            t = time.perf_counter()
            out = subprocess.run([sys.executable, "-m", "ml_dash.cli", "ls", str(root), *extra], env=env,
                                 capture_output=True, text=True)
            assert out.returncode == 0, out.stderr
            return time.perf_counter() - t

        start = []
        for _ in range(args.reps):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import ml_dash.cli; ml_dash.cli.build_parser()"], env=env,
                           check=True)
            start.append(time.perf_counter() - t)
        cold = ls()
        warm = statistics.median(ls() for _ in range(args.reps))
        warm_json = statistics.median(ls("--json", "--metrics", "train:loss") for _ in range(args.reps))
        print(f"\n{'ml-dash ls on ' + format(args.runs, ',') + ' runs':<48}{'time':>10}")
        print(f"{'interpreter + import (floor)':<48}{statistics.median(start) * 1e3:>8.0f} ms")
        print(f"{'ls (table), first run':<48}{cold * 1e3:>8.0f} ms")
        print(f"{'ls (table), warm':<48}{warm * 1e3:>8.0f} ms")
        print(f"{'ls --json --metrics train:loss, warm':<48}{warm_json * 1e3:>8.0f} ms")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
