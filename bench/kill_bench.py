"""What survives kill -9: fraction of a 2,000-row burst on disk when the process is killed 0 s, 0.5 s and 2 s
after the burst ends (default BufferConfig: write_interval 0.2 s). Prints a table.

    .venv/bin/python bench/kill_bench.py [--trials 5]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import sys, time
from ml_dash import Experiment
exp = Experiment("bench/kill")
exp.run.start()
m = exp.metrics("train")
for i in range(2000):
    m.log(step=i, loss=0.5, acc=0.9)
sys.stdout.write("BURST_DONE\n"); sys.stdout.flush()
time.sleep(60)
"""


def one(delay: float) -> tuple[int, int]:
    from ml_dash import load

    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ML_DASH_")}
        env["ML_DASH_ROOT"] = tmp
        p = subprocess.Popen([sys.executable, "-c", CHILD], env=env, stdout=subprocess.PIPE, text=True)
        assert p.stdout is not None
        line = p.stdout.readline()
        assert line.strip() == "BURST_DONE", line
        if delay:
            time.sleep(delay)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        try:
            rows = load("bench/kill", dash_root=tmp).metrics("train").read()
        except FileNotFoundError:
            rows = []
        steps = [r["data"]["step"] for r in rows]
        assert steps == list(range(len(steps))), "rows on disk are not a clean prefix of the burst"
        return len(rows), 2000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=5)
    args = ap.parse_args()
    print(f"kill -9 after a burst of 2,000 metric rows (write_interval 0.2 s, {args.trials} trials each)")
    print(f"{'kill after burst':>17} | {'rows kept (per trial)':<40} | {'mean fraction':>13}")
    print("-" * 77)
    for delay in (0.0, 0.5, 2.0):
        kept = [one(delay)[0] for _ in range(args.trials)]
        frac = sum(kept) / (2000 * len(kept))
        print(f"{delay:>16.1f}s | {', '.join(str(k) for k in kept):<40} | {frac:>13.3f}")


if __name__ == "__main__":
    main()
