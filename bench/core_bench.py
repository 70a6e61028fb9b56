"""Cost of a log call, against floors measured in the same run.

    ./dev bench core_bench            (or: python bench/core_bench.py [--rows N])

Rows of the table:
  floor: plain call        a Python function called with the same keyword arguments
  floor: deque append      building the dict and appending it to a collections.deque
  metrics(...).log         exp.metrics("train").log(step=i, loss=x, acc=y)
  log(...)                 exp.log(f"step {i}")
  tracks(...).append       exp.tracks("robot/pos").append(x=..., y=...)
For each: median and p99 of the call (timed one by one with perf_counter_ns, while the worker writes in the
background), the loop's mean per call, and the end-to-end time per row: loop plus the flush() that makes every
row durable (written and fsync'd), which includes the worker's encoding and I/O (they hold the GIL too).
"durable after loop" is how long flush() took after the last call.
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time

from ml_dash import Experiment
from ml_dash.buffer import BufferConfig

ns = time.perf_counter_ns


def _timed(fn, n):
    lat = [0] * n
    t0 = ns()
    for i in range(n):
        a = ns()
        fn(i)
        lat[i] = ns() - a
    loop = ns() - t0
    lat.sort()
    return lat[n // 2] / 1e3, lat[int(n * 0.99)] / 1e3, loop / n / 1e3, loop / 1e9


def _untimed(fn, n):
    t0 = ns()
    for i in range(n):
        fn(i)
    return (ns() - t0) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--logs", type=int, default=20_000)
    args = ap.parse_args()
    n = args.rows
    root = tempfile.mkdtemp(prefix="ml-dash-bench-")
    rows = []

    def f(**kw):
        pass

    med, p99, mean, _ = _timed(lambda i: f(step=i, loss=0.5, acc=0.25), n)
    floor = med
    rows.append(("floor: plain call", med, p99, mean, None, None))
    q: collections.deque = collections.deque()
    med, p99, mean, _ = _timed(lambda i: q.append({"step": i, "loss": 0.5, "acc": 0.25}), n)
    rows.append(("floor: deque append", med, p99, mean, None, None))

    def run(label, count, body, timed=True):
        exp = Experiment(f"bench/{label.split('(')[0].strip('.')}", dash_root=root,
                         buffer_config=BufferConfig(quiet=True)).run.start()
        fn = body(exp)
        fn(0)
        exp.flush()
        t0 = ns()
        if timed:
            med, p99, mean, loop = _timed(fn, count)
        else:
            loop = _untimed(fn, count)
            med = p99 = None
            mean = loop / count * 1e6
        t1 = ns()
        exp.flush()
        durable = (ns() - t1) / 1e9
        e2e = (ns() - t0) / 1e3 / count
        exp.run.complete()
        rows.append((label, med, p99, mean, e2e, durable))

    run("metrics(...).log", n, lambda e: (lambda i, m=e.metrics: m("train").log(step=i, loss=0.5, acc=0.25)))
    run("metrics(...).log untimed", n, lambda e: (lambda i, m=e.metrics: m("train").log(step=i, loss=0.5, acc=0.25)),
        timed=False)
    run("log(...)", args.logs, lambda e: (lambda i: e.log("step %d" % i)))
    run("log(...) untimed", args.logs, lambda e: (lambda i: e.log("step %d" % i)), timed=False)
    run("tracks(...).append", n, lambda e: (lambda i, t=e.tracks: t("robot/pos").append(x=0.5, y=0.25)))

    print(f"ml-dash core benchmark: {n:,} metric rows / {args.logs:,} log lines, local .dash store in {root}")
    print(f"{'call':28} {'median µs':>10} {'p99 µs':>8} {'×floor':>7} {'loop µs/call':>13} {'end-to-end µs/row':>18} "
          f"{'durable after loop':>19}")
    for label, med, p99, mean, e2e, durable in rows:
        m = f"{med:10.2f}" if med is not None else f"{'-':>10}"
        p = f"{p99:8.2f}" if p99 is not None else f"{'-':>8}"
        r = f"{med / floor:7.1f}" if med is not None else f"{'-':>7}"
        e = f"{e2e:18.2f}" if e2e is not None else f"{'-':>18}"
        d = f"{durable:17.3f} s" if durable is not None else f"{'-':>19}"
        print(f"{label:28} {m} {p} {r} {mean:13.2f} {e} {d}")


if __name__ == "__main__":
    main()
