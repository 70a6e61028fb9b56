"""How often the writer thread comes in while the training loop runs flat out, and what that does to the loop.

Counts, in one process per round (alternating): the writer thread's context switches during a 100,000-call timed
loop of ``metrics("train").log(step, loss, acc)`` (``/proc/self/task/<tid>/status``: each switch-in takes the GIL
from the training thread), its slices, and the loop's calls >= 20 us and >= 1 ms; once with the writer running and
once held off for the loop (the floor: what the machine and the call itself cost). Counts, not times: they do not
depend on the load as much as the times do. Linux only.

    python bench/writer_entries.py [--rows 100000] [--rounds 3] [--before DIR]

``--before DIR``: also run the version whose ``ml_dash`` package is in DIR (e.g. ``git archive REV
packages/core/src | tar -x -C DIR`` and pass ``DIR/packages/core/src``), alternating with this one.
``ENTRIES_WHERE=1 python bench/writer_entries.py --one writer``: also print the writer's switches inside each of
its parts (calls, switches), to see where they come from.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time


def switches(tid: int) -> int:
    n = 0
    with open(f"/proc/self/task/{tid}/status") as f:
        for line in f:
            if "ctxt_switches" in line:
                n += int(line.split()[1])
    return n


def start_run(mode: str, name: str) -> tuple:
    """A run with one row logged and flushed: (exp, exp.metrics, its buffer, whether the writer is held off, the
    run's root folder, to remove after)."""
    from ml_dash import Experiment
    from ml_dash import buffer as buffer_mod
    from ml_dash.buffer import BufferConfig

    held = mode == "held"
    if held:
        buffer_mod.WAKE_BYTES = 1 << 50
    root = tempfile.mkdtemp(prefix=f"ml-dash-{name}-")
    cfg = BufferConfig(quiet=True, write_interval=1000.0, flush_interval=1000.0) if held else BufferConfig(quiet=True)
    exp = Experiment(f"bench/{name}", dash_root=root, buffer_config=cfg).run.start()
    m = exp.metrics
    m("train").log(step=0, loss=0.5, acc=0.25)
    exp.flush()
    return exp, m, exp._buf, held, root


def one(mode: str, rows: int) -> None:
    exp, m, buf, held, root = start_run(mode, "entries")
    slices = [0, 0]
    orig = buf._drain_slice

    def counted():  # type: ignore[no-untyped-def]
        slices[0] += 1
        r = resource.getrusage(resource.RUSAGE_THREAD)  # no GIL release, unlike reading /proc
        try:
            return orig()
        finally:
            r2 = resource.getrusage(resource.RUSAGE_THREAD)
            slices[1] += r2.ru_nvcsw + r2.ru_nivcsw - r.ru_nvcsw - r.ru_nivcsw
    buf._drain_slice = counted
    where: dict[str, list[int]] = {}
    if os.environ.get("ENTRIES_WHERE"):  # switches inside these calls, to find where they come from
        for obj, name in ((buf, "_yield"), (buf, "_back_off"), (buf.jdir, "write_metas"), (buf, "spill"),
                          (buf.jdir, "append_metric_pieces"), (buf, "_finish_files"), (buf.ring, "zero")):
            def wrap(f, key):  # type: ignore[no-untyped-def]
                def w(*a, **k):  # type: ignore[no-untyped-def]
                    if threading.current_thread() is not buf._thread:
                        return f(*a, **k)
                    r = resource.getrusage(resource.RUSAGE_THREAD)
                    try:
                        return f(*a, **k)
                    finally:
                        r2 = resource.getrusage(resource.RUSAGE_THREAD)
                        c = where.setdefault(key, [0, 0])
                        c[0] += 1
                        c[1] += r2.ru_nvcsw + r2.ru_nivcsw - r.ru_nvcsw - r.ru_nivcsw
                return w
            where[name] = [0, 0]
            setattr(obj, name, wrap(getattr(obj, name), name))
    tid = buf._thread.native_id
    times = [0] * rows
    clock = time.perf_counter_ns
    sw0 = switches(tid)
    for i in range(rows):
        t = clock()
        m("train").log(step=i, loss=0.5, acc=0.25)
        times[i] = clock() - t
    sw = switches(tid) - sw0
    n_slices, in_slices = slices
    if where:
        print({k: tuple(v) for k, v in where.items()}, file=sys.stderr)
    exp.run.complete()
    shutil.rmtree(root, ignore_errors=True)
    times.sort()
    print(f"{mode},{sw},{n_slices},{in_slices},{sum(t >= 20_000 for t in times)},{sum(t >= 1_000_000 for t in times)},"
          f"{times[int(rows * 0.999)] / 1000:.1f},{times[rows // 2] / 1000:.2f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--one")
    ap.add_argument("--before", help="a packages/core/src folder of the version to compare against")
    args = ap.parse_args()
    if args.one:
        one(args.one, args.rows)
        return
    got: dict[str, list[list[str]]] = {"writer": [], "held": []}
    if args.before:
        got["before"] = []
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "packages", "core", "src")
    for _ in range(args.rounds):
        for mode in got:
            env = dict(os.environ)
            src = args.before if mode == "before" else here
            env["PYTHONPATH"] = os.pathsep.join([src] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
            out = subprocess.run([sys.executable, __file__, "--one", "held" if mode == "held" else "writer",
                                  "--rows", str(args.rows)], capture_output=True, text=True, check=True,
                                 env=env).stdout.strip().split(",")
            got[mode].append(out[1:])
    print(f"{args.rows:,} timed calls per round, {args.rounds} rounds, load {os.getloadavg()[0]:.1f}")
    print(f"{'version':<8} {'switch-ins':>11} {'slices':>7} {'in slices':>9} {'>=20us':>7} {'>=1ms':>6} {'p99.9 us':>9} {'median':>7}")
    for mode, rs in got.items():
        for r in rs:
            print(f"{mode:<8} {r[0]:>11} {r[1]:>7} {r[2]:>9} {r[3]:>7} {r[4]:>6} {r[5]:>9} {r[6]:>7}")


if __name__ == "__main__":
    main()
