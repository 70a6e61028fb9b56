"""Memory under sustained logging: 1,000,000 metric rows, peak RSS growth versus BufferConfig.max_pending_items,
with a healthy disk, a slow writer (ML_DASH_WRITE_INTERVAL large: the worker only wakes when a queue fills) and a
disk whose writes fail (RLIMIT_FSIZE, SIGXFSZ ignored: EFBIG on every append). Prints a table.

    .venv/bin/python bench/memory_bench.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, os, resource, signal, sys, time, warnings
warnings.simplefilter("ignore")
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
from ml_dash import Experiment, load
from ml_dash.buffer import BufferConfig
mode, limit, rows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cfg = BufferConfig(max_pending_items=limit, close_timeout=1.0, quiet=True,
                   write_interval=3600.0 if mode == "slow" else None)
exp = Experiment("bench/mem", buffer_config=cfg)
m = exp.metrics("train")
m.log(step=-1, loss=0.0, acc=0.0)
exp.flush()
if mode == "failing":
    resource.setrlimit(resource.RLIMIT_FSIZE, (1, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
for i in range(rows):
    m.log(step=i, loss=0.5, acc=0.9)
loop = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
buf = exp._buf
lost = sum(buf.lost.values()) if buf is not None else 0
exp.run.complete()
kept = len(load("bench/mem").metrics("train").read()) - 1
print(json.dumps({"growth_mib": (peak - base) / 1024, "loop_s": loop, "lost": lost, "kept": kept}))
"""


def run(mode: str, limit: int, rows: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ML_DASH_")}
        env["ML_DASH_ROOT"] = tmp
        r = subprocess.run([sys.executable, "-c", CHILD, mode, str(limit), str(rows)], env=env,
                           capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            raise SystemExit(r.stderr[-3000:])
        return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()
    print(f"{args.rows:,} metric rows {{step, loss, acc}} logged in a tight loop; peak RSS growth over the loop")
    print(f"{'disk':>8} | {'max_pending_items':>17} | {'peak RSS growth':>15} | {'MiB/1k items':>12} | "
          f"{'loop time':>9} | {'rows on disk':>12} | {'dropped':>8}")
    print("-" * 100)
    for mode in ("healthy", "slow", "failing"):
        for limit in (10_000, 50_000, 200_000):
            r = run(mode, limit, args.rows)
            print(f"{mode:>8} | {limit:>17,} | {r['growth_mib']:>11.1f} MiB | {r['growth_mib'] / limit * 1000:>12.2f} | "
                  f"{r['loop_s']:>8.1f}s | {r['kept']:>12,} | {r['lost']:>8,}", flush=True)


if __name__ == "__main__":
    main()
