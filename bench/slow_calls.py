"""What the slow calls of a timed loop coincide with: garbage collections, spills, the writer's slices, page faults.

    python bench/slow_calls.py [--rows 100000] [--rounds 3] [--slow-us 20]

One process per round (alternating: the writer running, then held off for the loop). In each, 100,000 calls of
``exp.metrics("train").log(step=i, loss=x, acc=y)`` are timed one by one (perf_counter_ns); every call over
``--slow-us`` is matched, in the same run, against:

  gc          a collection of any generation ran during it (``gc.callbacks``: start and stop times)
  writer      the writer thread was working: in a slice (`Buffer._drain_slice`), rewriting metadata or fsyncing
              (timed on that thread; its waits and sleeps are not counted)
  spill       the call was the one in `SPILL_EVERY` that moved the tails into the ring
  none        none of the above: the interpreter, the OS, the hypervisor or other jobs on the machine

A slow call counts under the first that matches, in that order. Also printed: the collections per generation
during the loop, the process's minor page faults over the loop (``getrusage``; the times are kept in arrays, so
storing them makes no objects and faults no pages), the p99.9, and the platform's floor measured in the same
process just before the loop: how often a loop doing nothing but read the clock saw a gap over ``--slow-us`` (per
second), and so how many slow calls a loop as long as this one gets from the platform alone ("platform"). A call
is slow when such a gap falls inside it, whatever the call does: a longer call catches more of them. The held-off
round (the writer does nothing during the loop) is the floor of what the writer adds. Linux or macOS.
"""

from __future__ import annotations

import argparse
import array
import bisect
import gc
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time


def one(mode: str, rows: int, slow_us: float) -> dict:
    from writer_entries import start_run

    exp, m, buf, held, root = start_run(mode, "slow")
    clock = time.perf_counter_ns
    spans: dict[str, list[tuple[int, int]]] = {"writer": []}
    for obj, name, key in ((buf, "_drain_slice", "writer"), (buf.jdir, "write_metas", "writer"),
                           (buf.jdir, "fsync", "writer")):
        def wrap(f, key):  # type: ignore[no-untyped-def]
            def w(*a, **k):  # type: ignore[no-untyped-def]
                if threading.current_thread() is not buf._thread:
                    return f(*a, **k)
                t = clock()
                try:
                    return f(*a, **k)
                finally:
                    spans[key].append((t, clock()))
            return w
        setattr(obj, name, wrap(getattr(obj, name), key))
    gcs: list[tuple[int, int, int]] = []
    gc_start = [0]

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            gc_start[0] = clock()
        else:
            gcs.append((gc_start[0], clock(), info["generation"]))

    tail = buf.tails[(0, "train")]
    # the platform's floor: gaps over the limit in a loop that only reads the clock, for 0.5 s
    limit = slow_us * 1000
    gaps = 0
    t = t0 = clock()
    while t - t0 < 500_000_000:
        u = clock()
        if u - t > limit:
            gaps += 1
        t = u
    gap_rate = gaps / ((t - t0) / 1e9)
    times = array.array("q", bytes(8 * rows))  # arrays: storing a time creates no object (no page faults, no
    starts = array.array("q", bytes(8 * rows))  # young collection walking 200,000 fresh ints: the bench's own)
    spilled = bytearray(rows)
    gc.callbacks.append(on_gc)
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    loop0 = clock()
    for i in range(rows):
        t = clock()
        m("train").log(step=i, loss=0.5, acc=0.25)
        times[i] = clock() - t
        starts[i] = t
        if not tail:
            spilled[i] = 1
    loop1 = clock()
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    gc.callbacks.remove(on_gc)
    exp.run.complete()
    shutil.rmtree(root, ignore_errors=True)
    cause = {"gc": 0, "writer": 0, "spill": 0, "none": 0}
    slow_ns: dict[str, list[int]] = {k: [] for k in cause}
    ordered = {k: sorted(v) for k, v in spans.items()}
    ordered["gc"] = sorted((a, b) for a, b, _ in gcs)

    def overlaps(key: str, a: int, b: int) -> bool:
        sp = ordered[key]
        j = bisect.bisect_left(sp, (b,))  # spans starting before the call ended
        return any(s[1] >= a for s in sp[max(0, j - 8):j])

    for i in range(rows):
        if times[i] < limit:
            continue
        a, b = starts[i], starts[i] + times[i]
        for key in ("gc", "writer"):
            if overlaps(key, a, b):
                break
        else:
            key = "spill" if spilled[i] else "none"
        cause[key] += 1
        slow_ns[key].append(times[i])
    srt = sorted(times)
    gens = [0, 0, 0]
    for _, _, g in gcs:
        gens[g] += 1
    return {"mode": mode, "cause": cause,
            "median_us": {k: (sorted(v)[len(v) // 2] / 1e3 if v else None) for k, v in slow_ns.items()},
            "gens": gens, "gc_ms": sum(b - a for a, b, _ in gcs) / 1e6, "slices": sum(loop0 <= a <= loop1 for a, _ in spans["writer"]),
            "platform": gap_rate * (loop1 - loop0) / 1e9, "gap_rate": gap_rate,
            "minflt": ru1.ru_minflt - ru0.ru_minflt, "majflt": ru1.ru_majflt - ru0.ru_majflt,
            "p999": srt[int(rows * 0.999)] / 1e3, "median": srt[rows // 2] / 1e3,
            "slow": sum(cause.values()), "over_1ms": rows - bisect.bisect_right(srt, 1_000_000)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--slow-us", type=float, default=20.0)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.rows, args.slow_us)))
        return
    results = []
    for _ in range(args.rounds):
        for mode in ("writer", "held"):
            out = subprocess.run([sys.executable, __file__, "--one", mode, "--rows", str(args.rows), "--slow-us",
                                  str(args.slow_us)], capture_output=True, text=True, check=True).stdout
            results.append(json.loads(out))
    print(f"{args.rows:,} timed calls of metrics(...).log per round, calls over {args.slow_us:g} µs by what they "
          f"overlapped (median µs of each group in brackets); load {os.getloadavg()[0]:.1f}")
    keys = ("gc", "writer", "spill", "none")
    print(f"{'mode':7} {'slow':>5} {'platform':>8} " + " ".join(f"{k:>16}" for k in keys)
          + f" {'>1ms':>5} {'p99.9':>6} {'median':>6} {'gc 0/1/2':>9} {'gc ms':>6} {'slices':>6} {'minflt':>6}"
          + f" {'gaps/s':>6}")
    for r in results:
        cells = " ".join(f"{r['cause'][k]:>7} [{r['median_us'][k] or 0:6.1f}]" for k in keys)
        print(f"{r['mode']:7} {r['slow']:>5} {r['platform']:>8.0f} {cells} {r['over_1ms']:>5} {r['p999']:>6.1f} {r['median']:>6.2f} "
              f"{'/'.join(map(str, r['gens'])):>9} {r['gc_ms']:>6.2f} {r['slices']:>6} {r['minflt']:>6}"
              f" {r['gap_rate']:>6.0f}")
    print(f"rerun: python bench/slow_calls.py --rows {args.rows} --rounds {args.rounds} --slow-us {args.slow_us:g}")


if __name__ == "__main__":
    main()
