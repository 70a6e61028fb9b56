"""This project next to other experiment trackers, each in its own process, on the same workload.

    python bench/peer_bench.py [--rows N] [--logs N] [--only NAME,NAME] [--trials T]

The peers are installed once into their own virtual environment, ``bench/.peers-venv`` (git-ignored; PyPI's
``ml-dash`` 0.11 imports as ``ml_dash`` too, so it can never share an environment with this project): wandb
(offline), MLflow (asynchronous logging into SQLite in a temporary folder; 3.x no longer writes a file store), trackio, tensorboardX and ``ml-dash==0.11.*``, installed
with ``pip -c constraints.txt``. A peer that cannot be installed or imported is reported and skipped. This
project runs in the interpreter that runs the bench, from the source tree.

Workload per tracker, in a fresh process: N metric rows ``{step, loss, acc}`` (default 100,000; MLflow, whose
asynchronous queue drains into SQLite slowly, gets 5,000), each call timed, then the log lines (default 20,000; trackers without a
log-line API skip them), then the tracker's own finish/close. Reported: the loop's wall time per row, calls over
1 ms and over 10 ms, the process CPU for the whole workload (after the import) including the finish (plus the CPU of a helper
process where the tracker starts one, measured while it runs), and, in separate processes, the rows on disk
after ``kill -9`` right after a burst of 2,000 rows (counted from the tracker's own files in a new process; for
wandb after its helper process had 5 s to finish writing). The deque floor appends the same dicts to a
``collections.deque``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VENV = HERE / ".peers-venv"
PEERS = {  # name: (pip requirement, import name)
    "ml-dash 0.11": ("ml-dash==0.11.*", "ml_dash"),
    "trackio": ("trackio", "trackio"),
    "tensorboardX": ("tensorboardX", "tensorboardX"),
    "wandb (offline)": ("wandb", "wandb"),
    "mlflow (async, SQLite)": ("mlflow", "mlflow"),
}
MLFLOW_ROWS = 5_000
BURST = 2_000
ENV = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DISABLE_GIT": "true", "WANDB_CONSOLE": "off",
       "ML_DASH_NO_VERSION_CHECK": "1", "MLFLOW_ENABLE_ASYNC_LOGGING": "false", "GIT_PYTHON_REFRESH": "quiet",
       "TRACKIO_NO_VERSION_CHECK": "1", "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1"}


# ---- the tracker side (runs in the tracker's own process) ---------------------------------------------------
# each opener returns (log_row(i, loss, acc), log_line(text) or None, finish())
def _this(root: str):
    from ml_dash import Experiment

    exp = Experiment("bench/peer", dash_root=root).run.start()
    m = exp.metrics("train")
    return (lambda i, loss, acc: m.log(step=i, loss=loss, acc=acc)), exp.log, exp.run.complete


def _mldash011(root: str):
    from ml_dash import Experiment

    exp = Experiment(prefix="bench/peers/run", dash_root=root)
    exp.run.start()
    m = exp.metrics("train")
    return (lambda i, loss, acc: m.log(step=i, loss=loss, acc=acc)), exp.log, exp.run.complete


def _trackio(root: str):
    import trackio

    trackio.init(project="bench", name="run")
    return (lambda i, loss, acc: trackio.log({"loss": loss, "acc": acc}, step=i)), None, trackio.finish


def _tbx(root: str):
    from tensorboardX import SummaryWriter

    w = SummaryWriter(root)

    def row(i, loss, acc):
        w.add_scalar("loss", loss, i)
        w.add_scalar("acc", acc, i)

    return row, (lambda text: w.add_text("log", text)), w.close


def _wandb(root: str):
    import wandb

    run = wandb.init(project="bench", dir=root, mode="offline", settings=wandb.Settings(console="off"))
    return (lambda i, loss, acc: run.log({"loss": loss, "acc": acc}, step=i)), None, run.finish


def _mlflow(root: str):
    import mlflow

    mlflow.set_tracking_uri("sqlite:///" + os.path.join(root, "mlflow.db"))  # its file store is frozen in 3.x
    mlflow.start_run()

    def finish():
        mlflow.flush_async_logging()
        mlflow.end_run()

    return (lambda i, loss, acc: mlflow.log_metrics({"loss": loss, "acc": acc}, step=i, synchronous=False)), \
        None, finish


def _floor(root: str):
    import collections

    q: collections.deque = collections.deque()
    return (lambda i, loss, acc: q.append({"step": i, "loss": loss, "acc": acc})), q.append, q.clear


OPEN = {"this project": _this, "ml-dash 0.11": _mldash011, "trackio": _trackio, "tensorboardX": _tbx,
        "wandb (offline)": _wandb, "mlflow (async, SQLite)": _mlflow, "deque floor": _floor}


def _helpers_cpu() -> float:
    try:
        import psutil
    except ImportError:
        return 0.0
    total = 0.0
    for c in psutil.Process().children(recursive=True):
        try:
            t = c.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


IMPORTS = {"this project": "ml_dash", "ml-dash 0.11": "ml_dash", "trackio": "trackio", "tensorboardX": "tensorboardX",
           "wandb (offline)": "wandb", "mlflow (async, SQLite)": "mlflow", "deque floor": "collections"}


def worker_run(name: str, root: str, rows: int, logs: int) -> dict:
    import importlib

    importlib.import_module(IMPORTS[name])  # importing the tracker is not part of the workload
    ns = time.perf_counter_ns
    c0 = time.process_time()
    row, line, finish = OPEN[name](root)
    lat = [0] * rows
    t0 = ns()
    for i in range(rows):
        a = ns()
        row(i, 1.0 / (i + 1), 0.5 + i * 1e-7)
        lat[i] = ns() - a
    loop = (ns() - t0) / rows / 1e3
    if line is not None:
        for i in range(logs):
            line("step %d" % i)
    helper = _helpers_cpu()
    finish()
    cpu = time.process_time() - c0
    return {"loop_us": loop, "over1": sum(x > 1_000_000 for x in lat), "over10": sum(x > 10_000_000 for x in lat),
            "cpu_s": cpu, "helper_cpu_s": helper, "rows": rows, "logs": logs if line is not None else 0}


def worker_burst(name: str, root: str) -> None:
    row, _, _ = OPEN[name](root)
    for i in range(BURST):
        row(i, 1.0 / (i + 1), 0.5)
    print("BURST_DONE", flush=True)
    time.sleep(600)


def count_rows(name: str, root: str) -> int:
    """Rows of the burst on disk, read from the tracker's own files."""
    if name == "this project":
        from ml_dash import load

        return len(load("bench/peer", dash_root=root).metrics("train").read())
    if name == "ml-dash 0.11":
        n = 0
        for f in glob.glob(os.path.join(root, "**", "metrics", "train", "*.jsonl"), recursive=True):
            n += sum(1 for ln in open(f, "rb") if ln.strip())
        return n
    if name == "trackio":
        import sqlite3

        n = 0
        for db in glob.glob(os.path.join(root, "**", "*.db"), recursive=True):
            try:
                con = sqlite3.connect(db)
                for (t,) in con.execute("select name from sqlite_master where type='table'").fetchall():
                    if t == "metrics":
                        n += con.execute("select count(*) from metrics").fetchone()[0]
                con.close()
            except sqlite3.Error:
                pass
        return n
    if name == "tensorboardX":
        from tensorboardX.proto import event_pb2

        n = 0
        for f in glob.glob(os.path.join(root, "**", "events.out.tfevents.*"), recursive=True):
            data = open(f, "rb").read()
            off = 0
            while off + 12 <= len(data):
                size = int.from_bytes(data[off:off + 8], "little")
                body = data[off + 12: off + 12 + size]
                if len(body) < size or off + 16 + size > len(data):
                    break
                off += 16 + size
                ev = event_pb2.Event()
                ev.ParseFromString(body)
                if any(v.tag == "loss" for v in ev.summary.value):
                    n += 1
        return n
    if name == "wandb (offline)":
        from wandb.proto import wandb_internal_pb2

        n = 0
        for f in {os.path.realpath(f) for f in glob.glob(os.path.join(root, "**", "*.wandb"), recursive=True)}:
            for rec in _wandb_records(open(f, "rb").read()):
                pb = wandb_internal_pb2.Record()
                try:
                    pb.ParseFromString(rec)
                except Exception:
                    continue
                if pb.WhichOneof("record_type") == "history":
                    n += 1
        return n
    if name.startswith("mlflow"):
        import sqlite3

        con = sqlite3.connect(os.path.join(root, "mlflow.db"))
        try:
            return con.execute("select count(*) from metrics where key = 'loss'").fetchone()[0]
        except sqlite3.Error:
            return 0
        finally:
            con.close()
    return 0


def _wandb_records(data: bytes):
    """Records of a .wandb file (a LevelDB-style log: 7-byte file header, 32 KiB blocks, 7-byte record headers
    crc32/length/type, full=1 first=2 middle=3 last=4)."""
    block = 32 * 1024
    off = 7
    part = b""
    while off + 7 <= len(data):
        left = block - (off % block)
        if left < 7:
            off += left
            continue
        length = int.from_bytes(data[off + 4:off + 6], "little")
        kind = data[off + 6]
        if kind == 0 and length == 0:
            off += left
            continue
        body = data[off + 7: off + 7 + length]
        if len(body) < length:
            break
        off += 7 + length
        if kind == 1:
            yield body
        elif kind == 2:
            part = body
        elif kind == 3:
            part += body
        elif kind == 4:
            yield part + body
            part = b""


# ---- the parent side ------------------------------------------------------------------------------------------
def ensure_venv() -> Path | None:
    py = VENV / "bin" / "python"
    if not py.exists():
        print(f"creating {VENV.relative_to(REPO)} and installing the peers (once; this takes minutes)", flush=True)
        base = getattr(sys, "_base_executable", sys.executable)
        if subprocess.run([base, "-m", "venv", str(VENV)]).returncode != 0:
            return None
    missing = [req for req, mod in PEERS.values() if subprocess.run(
        [str(py), "-c", f"import importlib.util,sys; sys.exit(importlib.util.find_spec({mod!r}) is None)"],
        env=_env(), capture_output=True).returncode != 0]
    if missing:
        print("installing", ", ".join(missing), flush=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "-c", str(REPO / "constraints.txt"), *missing,
                        "psutil"])
    return py


def _env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env.update(ENV)
    env.update(extra or {})
    return env


def _python_for(name: str, peers_py: Path | None) -> tuple[list[str], dict]:
    if name in ("this project", "deque floor"):
        src = [str(REPO / "packages" / p / "src") for p in ("core",)]
        return [sys.executable], _env({"PYTHONPATH": os.pathsep.join(src + [os.environ.get("PYTHONPATH", "")])})
    return [str(peers_py)], _env()


def _call(cmd: list[str], env: dict, args: list[str], cwd: str, timeout: float = 1800) -> str:
    p = subprocess.run(cmd + [__file__, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError((p.stderr or p.stdout).strip().splitlines()[-1] if (p.stderr or p.stdout).strip()
                           else f"exit {p.returncode}")
    return p.stdout.strip().splitlines()[-1]


def measure(name: str, peers_py: Path | None, rows: int, logs: int, trials: int) -> dict:
    cmd, env = _python_for(name, peers_py)
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="peer-bench-") as root:
        env = dict(env, TRACKIO_DIR=os.path.join(root, "trackio"), HOME=root, MLFLOW_TRACKING_URI="")
        out.update(json.loads(_call(cmd, env, ["--worker", "run", "--name", name, "--root", root, "--rows", str(rows),
                                               "--logs", str(logs)], root)))
    if name == "deque floor":
        return out
    kept = []
    for _t in range(trials):
        with tempfile.TemporaryDirectory(prefix="peer-kill-") as root:
            kenv = dict(env, TRACKIO_DIR=os.path.join(root, "trackio"), HOME=root)
            p = subprocess.Popen(cmd + [__file__, "--worker", "burst", "--name", name, "--root", root], env=kenv,
                                 cwd=root, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                 start_new_session=True)
            deadline = time.monotonic() + 300
            ok = False
            while time.monotonic() < deadline:
                ln = p.stdout.readline()
                if not ln:
                    break
                if ln.startswith("BURST_DONE"):
                    ok = True
                    break
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
            if name.startswith("wandb"):
                time.sleep(5)  # its helper process outlives the killed one: let it write what it has
            try:
                os.killpg(p.pid, signal.SIGKILL)  # helper processes left behind
            except OSError:
                pass
            kept.append(int(_call(cmd, kenv, ["--worker", "count", "--name", name, "--root", root], root))
                        if ok else -1)
    out["kept"] = kept
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--logs", type=int, default=20_000)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--only", default="")
    ap.add_argument("--worker", choices=("run", "burst", "count"))
    ap.add_argument("--name")
    ap.add_argument("--root")
    a = ap.parse_args()
    if a.worker == "run":
        print(json.dumps(worker_run(a.name, a.root, a.rows, a.logs)))
        return
    if a.worker == "burst":
        worker_burst(a.name, a.root)
        return
    if a.worker == "count":
        print(count_rows(a.name, a.root))
        return
    names = ["deque floor", "this project", *PEERS]
    if a.only:
        names = [n for n in names if any(o.strip().lower() in n.lower() for o in a.only.split(","))]
    peers_py = ensure_venv() if any(n in PEERS for n in names) else None
    results: dict[str, dict | str] = {}
    for name in names:
        if name in PEERS and peers_py is None:
            results[name] = "not installed (no virtual environment)"
            continue
        rows = min(a.rows, MLFLOW_ROWS) if name.startswith("mlflow") else a.rows
        print(f"  {name} ...", file=sys.stderr, flush=True)
        try:
            results[name] = measure(name, peers_py, rows, a.logs, a.trials)
        except Exception as e:  # a peer that cannot be installed or run here: say so and go on
            results[name] = f"skipped: {type(e).__name__}: {e}"[:160]
    print(f"\n{a.rows:,} metric rows {{step, loss, acc}}, then {a.logs:,} log lines, each tracker in its own process; "
          f"kill -9 right after a burst of {BURST:,} rows, {a.trials} trials")
    hdr = (f"{'tracker':22} {'rows':>7} {'loop µs/row':>11} {'>1 ms':>6} {'>10 ms':>6} {'CPU s (all)':>11} "
           f"{'CPU µs/row':>10} {'× floor':>7}  kill -9 after burst: rows kept")
    print(hdr)
    print("-" * len(hdr))
    floor = results.get("deque floor")
    floor_row = floor["cpu_s"] / floor["rows"] * 1e6 if isinstance(floor, dict) else None
    for name, r in results.items():
        if isinstance(r, str):
            print(f"{name:22} {r}")
            continue
        per_row = r["cpu_s"] / r["rows"] * 1e6
        helper = f" (+{r['helper_cpu_s']:.1f} helper)" if r.get("helper_cpu_s", 0) > 0.05 else ""
        ratio = f"{per_row / floor_row:7.1f}" if floor_row else f"{'-':>7}"
        kept = ", ".join(str(k) for k in r.get("kept", [])) or "-"
        print(f"{name:22} {r['rows']:7,} {r['loop_us']:11.2f} {r['over1']:6d} {r['over10']:6d} {r['cpu_s']:11.2f} "
              f"{per_row:10.2f} {ratio}  {kept}{helper}")
    print("\nCPU s (all): process CPU from opening the run to the end of its finish/close, log lines included "
          "(trackers without a log-line API: rows only); CPU µs/row divides it by the rows.")


if __name__ == "__main__":
    main()
