"""Cost of a log call, against floors measured in the same run.

    ./dev bench core_bench            (or: python bench/core_bench.py [--rows N])
    python bench/core_bench.py --compare cbe545f 205ad32^ [--rounds 3]

Rows of the table:
  floor: plain call        a Python function called with the same keyword arguments
  floor: deque append      building the dict and appending it to a collections.deque
  floor: deque untimed     the same loop without the clock reads around each call
  metrics(...).log         exp.metrics("train").log(step=i, loss=x, acc=y)
  log(...)                 exp.log(f"step {i}")
  tracks(...).append       exp.tracks("robot/pos").append(x=..., y=...)
For each: median, p99 and p99.9 of the call and how many calls took over 1 ms (timed one by one with
perf_counter_ns, while the worker writes in the background), the loop's mean per call, the end-to-end time per
row (loop plus the flush() that makes every row durable, written and fsync'd, which includes the worker's
encoding and I/O: they hold the GIL too) and the process CPU per row over the same span. "CPU-floor" is that CPU
less the matching floor's: a timed row less the timed deque loop's CPU per row, an "untimed" row less the untimed
deque loop's (each loop pays for its own clock reads, or not). **Goal 1 of issue 16 (the whole cost of a row, ≤ 2
µs) is the "CPU-floor" of the ``metrics(...).log untimed`` row**: the process CPU of the untimed loop plus the
flush that makes its rows durable, less the untimed deque floor's. "durable after loop" is how long flush() took
after the last call. The "writer:"
rows give the writer's own CPU per record (the turning of the ring into the journal), measured alone: the records
are logged with the worker held off, then drained on the main thread (thread CPU, so other jobs' time is left out).

``--compare REV...`` runs this same script (this file, so every version is measured the same way) against the
sources of each git revision (extracted with ``git archive`` into a temporary folder) and of the working tree,
alternately, ``--rounds`` times each in one run, and prints the median over the rounds per version: the hot path of
an older revision and of the current code side by side, under the same load. Compare the ``×floor`` column first:
each run divides by a floor measured in the same process, which cancels most of the machine's noise.

A second table formats the same 100,000 metric rows as journal lines with the standard library's C encoder
(what this project used before) and with the current encoder (orjson), in the same run.
"""

from __future__ import annotations

import argparse
import array
import bisect
import collections
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy  # noqa: F401  (as in a training script: the writer formats log timestamps with it once imported)
from ml_dash import Experiment
from ml_dash.buffer import BufferConfig

ns = time.perf_counter_ns


def _timed(fn, n):
    # an array, not a list: storing a time creates no int object (a list of 100,000 fresh ints costs ~800 page
    # faults, and a young collection that walks it, a stall of milliseconds, would be the bench's own)
    lat = array.array("q", bytes(8 * n))
    t0 = ns()
    for i in range(n):
        a = ns()
        fn(i)
        lat[i] = ns() - a
    loop = ns() - t0
    lat = sorted(lat)
    slow = n - bisect.bisect_right(lat, 1_000_000)
    return lat[n // 2] / 1e3, lat[int(n * 0.99)] / 1e3, lat[int(n * 0.999)] / 1e3, slow, loop / n / 1e3


def _encoders(n):
    """Journal lines of n metric rows: the standard C encoder (as before) against the current one."""
    from json.encoder import c_make_encoder, encode_basestring_ascii

    try:
        from ml_dash.jsonio import dumpb
    except ImportError:  # a version before the orjson encoder
        return []

    def nope(o):
        raise TypeError(o)

    enc = c_make_encoder(None, nope, encode_basestring_ascii, None, ": ", ", ", False, False, True)
    rows = [{"step": i, "loss": 1 / (i + 1), "acc": 0.5 + i * 1e-7, "_ts": 1.7e9 + i * 1e-3} for i in range(n)]
    created = "2026-01-01T00:00:00.000000Z"

    def std():
        return "".join(['{"index": %d, "data": %s, "createdAt": "%s"}\n' % (k, "".join(enc(d, 0)), created)
                        for k, d in enumerate(rows)]).encode()

    def fast():
        c = created.encode()
        return b"".join([b'{"index":%d,"data":%b,"createdAt":"%b"}\n' % (k, dumpb(d), c) for k, d in enumerate(rows)])

    out = []
    for label, fn in (("stdlib json (C encoder)", std), ("orjson (current)", fast)):
        best = min(_cpu(fn) for _ in range(3))
        out.append((label, best / n * 1e6))
    return out


def _cpu(fn):
    t = time.process_time()
    fn()
    return time.process_time() - t


def _untimed(fn, n):
    t0 = ns()
    for i in range(n):
        fn(i)
    return (ns() - t0) / 1e9


REPO = Path(__file__).resolve().parents[1]
SRC = "packages/core/src"
COMPARED = (("median µs", 1, ".2f"), ("×floor", "ratio", ".1f"), ("e2e µs/row", 6, ".2f"), ("CPU µs/row", 7, ".2f"),
            ("CPU-floor µs/row (goal 1: the untimed metrics row)", "less floor", ".2f"))
TIMED_FLOOR = "floor: deque append"
UNTIMED_FLOOR = "floor: deque untimed"


def cpu_less_floor(run_rows: list[list], row: list) -> float | None:
    """A row's process CPU per row less the matching deque floor's of the same run (timed rows less the timed
    loop's, untimed rows less the untimed loop's); None for floors, writer rows and runs without that floor."""
    label, cpu, e2e = row[0], row[7], row[6]
    if cpu is None or e2e is None:
        return None
    want = UNTIMED_FLOOR if label.endswith("untimed") else TIMED_FLOOR
    for r in run_rows:
        if r[0] == want and r[7] is not None:
            return cpu - r[7]
    return None


def compare(revs: list[str], rounds: int, rows: int, logs: int) -> None:
    """Run this script against each revision's sources and the working tree's, alternately, and print medians."""
    tmp = Path(tempfile.mkdtemp(prefix="ml-dash-compare-"))
    versions: list[tuple[str, Path]] = []
    try:
        for rev in revs:
            sha = subprocess.run(["git", "rev-parse", "--short", rev], cwd=REPO, check=True, capture_output=True,
                                 text=True).stdout.strip()
            dest = tmp / sha
            dest.mkdir()
            archive = subprocess.run(["git", "archive", sha, SRC], cwd=REPO, check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
            versions.append((f"{rev} ({sha})" if rev != sha else sha, dest / SRC))
        versions.append(("current", REPO / SRC))
        results: dict[str, list[dict[str, list]]] = {label: [] for label, _ in versions}
        for r in range(rounds):
            for label, src in versions:
                out = tmp / "result.json"
                env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]))
                subprocess.run([sys.executable, __file__, "--rows", str(rows), "--logs", str(logs), "--json", str(out)],
                               env=env, check=True, stdout=subprocess.DEVNULL)
                got = json.loads(out.read_text())
                if Path(got["module"]).resolve().parents[1] != src.resolve():
                    raise SystemExit(f"{label}: imported ml_dash from {got['module']}, not from {src}")
                results[label].append(got["rows"])
                print(f"round {r + 1}/{rounds}: {label} done", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    labels = [label for label, _ in versions]
    calls = [row[0] for row in results["current"][0]]
    print(f"ml-dash core benchmark, {rows:,} metric rows / {logs:,} log lines; versions run alternately, "
          f"{rounds} rounds each; median over the rounds")
    for title, col, fmt in COMPARED:
        print(f"\n{title}")
        print(f"{'call':26}" + "".join(f" {label[:22]:>22}" for label in labels)
              + "".join(f" {'current/' + label.split()[0][:12]:>21}" for label in labels[:-1]))
        for i, call in enumerate(calls):
            meds = []
            for label in labels:
                vals = []
                for run_rows in results[label]:
                    v = _value(run_rows, i, call, col)
                    if v is not None:
                        vals.append(v)
                meds.append(statistics.median(vals) if vals else None)
            cells = "".join(f" {m:>22{fmt}}" if m is not None else f" {'-':>22}" for m in meds)
            cur = meds[-1]
            ratios = "".join(f" {cur / m:>21.2f}" if cur is not None and m else f" {'-':>21}" for m in meds[:-1])
            print(f"{call:26}{cells}{ratios}")
    print(f"\nrerun: python bench/core_bench.py --compare {' '.join(revs)} --rounds {rounds} --rows {rows}"
          f" --logs {logs}")


def _value(run_rows: list[list], i: int, call: str, col: int | str) -> float | None:
    """One figure of one run's row ``i`` (None when that version has no such row or no such figure)."""
    if i >= len(run_rows) or run_rows[i][0] != call:
        return None
    row = run_rows[i]
    if col == "ratio":  # the median call against the same run's plain-call floor (row 0)
        return row[1] / run_rows[0][1] if row[1] is not None else None
    if col == "less floor":
        return cpu_less_floor(run_rows, row)
    return row[col]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--logs", type=int, default=20_000)
    ap.add_argument("--compare", nargs="+", metavar="REV", help="git revisions to measure against the working tree")
    ap.add_argument("--rounds", type=int, default=3, help="with --compare: runs of each version, alternating")
    ap.add_argument("--json", help=argparse.SUPPRESS)  # with --compare: where a child run writes its rows
    args = ap.parse_args()
    if args.compare:
        compare(args.compare, args.rounds, args.rows, args.logs)
        return
    n = args.rows
    root = tempfile.mkdtemp(prefix="ml-dash-bench-")
    rows = []

    def f(**kw):
        pass

    med, p99, p999, slow, mean = _timed(lambda i: f(step=i, loss=0.5, acc=0.25), n)
    floor = med
    rows.append(("floor: plain call", med, p99, p999, slow, mean, None, None, None))
    q: collections.deque = collections.deque()
    c0 = time.process_time()
    med, p99, p999, slow, mean = _timed(lambda i: q.append({"step": i, "loss": 0.5, "acc": 0.25}), n)
    floor_cpu = (time.process_time() - c0) / n * 1e6
    rows.append((TIMED_FLOOR, med, p99, p999, slow, mean, None, floor_cpu, None))
    q.clear()
    fq = lambda i: q.append({"step": i, "loss": 0.5, "acc": 0.25})  # noqa: E731  (the shape of the loops below)
    c0 = time.process_time()
    t = ns()
    for i in range(n):
        fq(i)
    mean = (ns() - t) / n / 1e3
    rows.append((UNTIMED_FLOOR, None, None, None, None, mean, None, (time.process_time() - c0) / n * 1e6, None))
    q.clear()

    def run(label, count, body, timed=True):
        exp = Experiment(f"bench/{label.split('(')[0].strip('.')}", dash_root=root,
                         buffer_config=BufferConfig(quiet=True)).run.start()
        fn = body(exp)
        fn(0)
        exp.flush()
        t0 = ns()
        c0 = time.process_time()
        if timed:
            med, p99, p999, slow, mean = _timed(fn, count)
        else:
            t = ns()
            for i in range(count):
                fn(i)
            mean = (ns() - t) / count / 1e3
            med = p99 = p999 = slow = None
        t1 = ns()
        exp.flush()
        durable = (ns() - t1) / 1e9
        e2e = (ns() - t0) / 1e3 / count
        cpu = (time.process_time() - c0) / count * 1e6
        exp.run.complete()
        rows.append((label, med, p99, p999, slow, mean, e2e, cpu, durable))

    run("metrics(...).log", n, lambda e: (lambda i, m=e.metrics: m("train").log(step=i, loss=0.5, acc=0.25)))
    run("metrics(...).log untimed", n, lambda e: (lambda i, m=e.metrics: m("train").log(step=i, loss=0.5, acc=0.25)),
        timed=False)
    run("log(...)", args.logs, lambda e: (lambda i: e.log("step %d" % i)))
    run("log(...) untimed", args.logs, lambda e: (lambda i: e.log("step %d" % i)), timed=False)
    run("tracks(...).append", n, lambda e: (lambda i, t=e.tracks: t("robot/pos").append(x=0.5, y=0.25)))

    def writer(label, count, body):
        """The writer's CPU per record, alone: the records are logged with the worker held off, then one drain
        on this thread turns them into the journal (thread CPU: other jobs' time is not counted)."""
        import ml_dash.buffer as buffer_mod

        wake = getattr(buffer_mod, "WAKE_BYTES", None)
        if wake is not None:
            buffer_mod.WAKE_BYTES = 1 << 50  # the training thread does not wake the worker
        exp = Experiment(f"bench/writer-{label.split()[1]}", dash_root=root,
                         buffer_config=BufferConfig(quiet=True, write_interval=1000.0, flush_interval=1000.0)).run.start()
        fn = body(exp)
        fn(0)
        exp.flush()
        for i in range(count):
            fn(i)
        buf = exp._buf
        c0 = time.thread_time()
        buf.drain()
        cpu = (time.thread_time() - c0) / count * 1e6
        exp.run.complete()
        if wake is not None:
            buffer_mod.WAKE_BYTES = wake
        rows.append((label, None, None, None, None, None, None, cpu, None))

    writer("writer: metric rows", n, lambda e: (lambda i, m=e.metrics: m("train").log(step=i, loss=0.5, acc=0.25)))
    writer("writer: log lines", args.logs, lambda e: (lambda i: e.log("step %d" % i)))
    writer("writer: track entries", n, lambda e: (lambda i, t=e.tracks: t("robot/pos").append(x=0.5, y=0.25)))
    if args.json:
        import ml_dash

        Path(args.json).write_text(json.dumps({"module": ml_dash.__file__, "rows": rows}))
        shutil.rmtree(root, ignore_errors=True)
        return
    enc = _encoders(n)

    def cell(v, w, fmt):
        return f"{v:{w}{fmt}}" if v is not None else f"{'-':>{w}}"

    print(f"ml-dash core benchmark: {n:,} metric rows / {args.logs:,} log lines, local .dash store in {root}")
    print(f"{'call':26} {'median µs':>9} {'p99 µs':>7} {'p99.9 µs':>8} {'>1ms':>5} {'×floor':>6} {'loop µs':>8} "
          f"{'e2e µs/row':>10} {'CPU µs/row':>10} {'CPU-floor':>9} {'durable after':>13}")
    for row in rows:
        label, med, p99, p999, slow, mean, e2e, cpu, durable = row
        ratio = med / floor if med is not None else None
        extra = cpu_less_floor(rows, row)
        print(f"{label:26} {cell(med, 9, '.2f')} {cell(p99, 7, '.2f')} {cell(p999, 8, '.1f')} {cell(slow, 5, 'd')} "
              f"{cell(ratio, 6, '.1f')} {cell(mean, 8, '.2f')} {cell(e2e, 10, '.2f')} {cell(cpu, 10, '.2f')} "
              f"{cell(extra, 9, '.2f')} {cell(durable, 11, '.3f')} s")
    goal = [cpu_less_floor(rows, r) for r in rows if r[0] == "metrics(...).log untimed"]
    if goal and goal[0] is not None:
        print(f"goal 1 (issue 16): whole cost of a metric row, untimed loop plus flush, process CPU less the untimed "
              f"deque floor: {goal[0]:.2f} µs/row (target ≤ 2)")
    print()
    print(f"journal formatting of {n:,} metric rows {{step, loss, acc, _ts}}, CPU per row, best of 3:")
    base = enc[0][1] if enc else 0
    for label, us in enc:
        print(f"  {label:26} {us:6.2f} µs/row  ({base / us:4.1f}× faster than the standard encoder)")


if __name__ == "__main__":
    main()
