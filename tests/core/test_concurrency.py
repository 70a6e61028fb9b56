"""Processes and threads (issue 3): fork safety, many threads, two processes on one prefix, a seeded stress test."""

from __future__ import annotations

import random
import sys
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent / "helpers"))

import dashtest as dt  # noqa: E402
from ml_dash import Experiment, load  # noqa: E402
from ml_dash.buffer import BufferConfig  # noqa: E402

PREFIX = "proj/run"


# ---- threads ---------------------------------------------------------------------------------------------------
def test_16_threads_x_10000_rows(tmp_path: Path) -> None:
    exp = Experiment(PREFIX, dash_root=tmp_path, buffer_config=BufferConfig(write_interval=0.02, quiet=True))
    exp.run.start()
    n_threads, n_rows = 16, 10_000
    barrier = threading.Barrier(n_threads)

    def work(t: int) -> None:
        m = exp.metrics("train")
        barrier.wait()
        for i in range(n_rows):
            m.log(t=t, i=i)
            if i % 100 == 0:
                exp.log(f"{t}:{i}")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    exp.run.complete()
    v = load(PREFIX, dash_root=tmp_path)
    rows = v.metrics("train").read()
    assert [r["index"] for r in rows] == list(range(n_threads * n_rows))
    per: dict[int, list[int]] = defaultdict(list)
    for r in rows:
        per[r["data"]["t"]].append(r["data"]["i"])
    for t in range(n_threads):
        assert per[t] == list(range(n_rows)), f"thread {t}: {len(per[t])} rows, order kept: {per[t] == sorted(per[t])}"
    logs = v.logs.read()
    assert [g["sequenceNumber"] for g in logs] == list(range(n_threads * n_rows // 100))
    per_log: dict[str, list[int]] = defaultdict(list)
    for g in logs:
        t, i = g["message"].split(":")
        per_log[t].append(int(i))
    assert all(per_log[str(t)] == list(range(0, n_rows, 100)) for t in range(n_threads))


def test_seed_thread_pool_example(tmp_path: Path) -> None:
    """The seed's ThreadPoolExecutor snippet, run as written (with a prelude defining `experiment`)."""
    with Experiment(PREFIX, dash_root=tmp_path, buffer_config=BufferConfig(quiet=True)).run as experiment:
        def worker(i: int) -> None:
            experiment.log(f"Worker {i}")
            experiment.metrics("train").log(step=i, loss=0.5)

        with ThreadPoolExecutor(max_workers=10) as executor:
            executor.map(worker, range(1000))
    v = load(PREFIX, dash_root=tmp_path)
    assert sorted(r["data"]["step"] for r in v.metrics("train").read()) == list(range(1000))
    assert sorted(int(g["message"].split()[1]) for g in v.logs.read()) == list(range(1000))
    assert [g["sequenceNumber"] for g in v.logs.read()] == list(range(1000))


def test_deterministic_multithread_stress(tmp_path: Path) -> None:
    """Seeded random mixes of calls from 6 threads; what reads back equals what each thread logged, in order."""
    exp = Experiment(PREFIX, dash_root=tmp_path,
                     buffer_config=BufferConfig(write_interval=0.005, max_pending_items=64, quiet=True))
    exp.run.start()
    streams = ["a", "b", "c/d"]
    topics = ["t1", "t/2"]
    accepted: dict[int, dict[str, list[Any]]] = {}
    params: dict[int, dict[str, int]] = {}

    def work(t: int) -> None:
        rng = random.Random(1000 + t)
        acc: dict[str, list[Any]] = defaultdict(list)
        for k in range(3000):
            op = rng.random()
            if op < 0.5:
                s = rng.choice(streams)
                exp.metrics(s).log(t=t, k=k, v=rng.random())
                acc["m:" + s].append(k)
            elif op < 0.75:
                exp.log(f"{t}:{k}", level=rng.choice(["info", "warn", "debug"]), k=k)
                acc["logs"].append(k)
            elif op < 0.9:
                topic = rng.choice(topics)
                exp.tracks(topic).append(_ts=t * 1e6 + k, t=t, k=k)
                acc["t:" + topic].append(k)
            elif op < 0.97:
                exp.params.set(**{f"p{t}": k})
                params[t] = {f"p{t}": k}
            elif op < 0.99:
                exp.files("f").save_text(f"{t}:{k}", to=f"{t}-{k}.txt")
                acc["files"].append(k)
            else:
                exp.flush()
        accepted[t] = acc

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    exp.run.complete()
    v = load(PREFIX, dash_root=tmp_path)
    got: dict[int, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for s in streams:
        rows = v.metrics(s).read()
        dt.assert_gap_free([r["index"] for r in rows], s)
        for r in rows:
            got[r["data"]["t"]]["m:" + s].append(r["data"]["k"])
    logs = v.logs.read()
    assert [g["sequenceNumber"] for g in logs] == list(range(len(logs)))
    for g in logs:
        t, k = map(int, g["message"].split(":"))
        assert g["metadata"] == {"k": k}
        got[t]["logs"].append(k)
    for topic in topics:
        for e in v.tracks(topic).read():
            got[e["t"]]["t:" + topic].append(e["k"])
    for e in v.files.list():
        t, k = map(int, Path(e["localPath"]).read_text().split(":"))
        assert e["filename"] == f"{t}-{k}.txt"
        got[t]["files"].append(k)
    for t in range(6):
        for key, ks in accepted[t].items():
            g = got[t][key] if key != "files" else sorted(got[t][key])
            assert g == ks, f"thread {t} {key}: accepted {len(ks)}, read back {len(g)}"
    want_params = {k: v for d in params.values() for k, v in d.items()}
    assert v.params.get() == want_params


# ---- fork ------------------------------------------------------------------------------------------------------
FORK = """
import os, sys, time
from ml_dash import Experiment
from ml_dash.buffer import BufferConfig
child_exit = sys.argv[1]
# a long write_interval keeps the parent's rows pending (in memory) when it forks
exp = Experiment("proj/run", buffer_config=BufferConfig(write_interval=5.0))
for i in range(100):
    exp.metrics("train").log(step=i, who="parent")
exp.log("parent before fork")
pid = os.fork()
if pid == 0:
    try:
        for i in range(50):
            exp.metrics("train").log(step=i, who="child")
        exp.log("from child")
        exp.flush()
    finally:
        if child_exit == "_exit":
            os._exit(0)
    sys.exit(0)
_, status = os.waitpid(pid, 0)
print("CHILD", os.waitstatus_to_exitcode(status), flush=True)
for i in range(100, 200):
    exp.metrics("train").log(step=i, who="parent")
exp.log("parent after fork")
"""


def _check_fork(tmp_path: Path, child_exit: str) -> None:
    r = dt.run_py(tmp_path, FORK, args=[child_exit], timeout=60)
    assert r.returncode == 0, r.stderr
    assert "CHILD 0" in r.stdout, r.stderr
    v = load(PREFIX, dash_root=tmp_path / ".dash")
    rows = v.metrics("train").read()
    dt.assert_gap_free([r["index"] for r in rows], "train")
    parent = [r["data"]["step"] for r in rows if r["data"]["who"] == "parent"]
    child = [r["data"]["step"] for r in rows if r["data"]["who"] == "child"]
    assert parent == list(range(200)), f"parent rows: {len(parent)} ({len(parent) - len(set(parent))} duplicated)"
    assert child == list(range(50))
    msgs = [g["message"] for g in v.logs.read()]
    assert sorted(msgs) == sorted(["parent before fork", "from child", "parent after fork"])
    assert [g["sequenceNumber"] for g in v.logs.read()] == [0, 1, 2]
    assert v.status == "COMPLETED"  # the parent owns the status; the child's exit did not close the run


def test_fork_child_logs_without_duplicating_parent_data(tmp_path: Path) -> None:
    _check_fork(tmp_path, "_exit")


def test_fork_child_exiting_normally_does_not_close_parent_run(tmp_path: Path) -> None:
    _check_fork(tmp_path, "sys.exit")


FORK_STORM = """
import os, time
from ml_dash import Experiment
from ml_dash.buffer import BufferConfig
exp = Experiment("proj/run", buffer_config=BufferConfig(write_interval=0.0))
stuck = 0
kids = []
for k in range(40):
    for i in range(200):                      # keep the writer busy (it holds the journal locks while writing)
        exp.metrics("train").log(k=k, i=i)
    pid = os.fork()
    if pid == 0:
        exp.metrics("train").log(k=k, i=-1, child=True)
        os._exit(0)
    kids.append(pid)
deadline = time.monotonic() + 60  # a deadlock never ends; a loaded machine may be slow to run 40 children
for pid in kids:
    while True:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            stuck += 1
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            break
        time.sleep(0.01)
print("STUCK", stuck, flush=True)
"""


def test_fork_while_writer_is_busy_never_deadlocks(tmp_path: Path) -> None:
    r = dt.run_py(tmp_path, FORK_STORM, timeout=240)
    assert r.returncode == 0, r.stderr
    assert "STUCK 0" in r.stdout, (r.stdout, r.stderr[-2000:])
    rows = load(PREFIX, dash_root=tmp_path / ".dash").metrics("train").read()
    dt.assert_gap_free([r["index"] for r in rows], "train")
    assert sorted(r["data"]["k"] for r in rows if r["data"].get("child")) == list(range(40))
    assert len([r for r in rows if not r["data"].get("child")]) == 40 * 200


MP_FORK = """
import multiprocessing as mp
from ml_dash import Experiment
from ml_dash.buffer import BufferConfig
exp = Experiment("proj/run", buffer_config=BufferConfig(write_interval=5.0))
for i in range(100):
    exp.metrics("train").log(step=i)

def work(i):
    exp.metrics("worker").log(i=i)
    return i

if __name__ == "__main__":
    with mp.get_context("fork").Pool(2) as pool:
        print("RESULT", sum(pool.map(work, range(20))), flush=True)
    exp.metrics("train").log(step=100)
"""


def test_multiprocessing_fork_pool(tmp_path: Path) -> None:
    r = dt.run_py(tmp_path, MP_FORK, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "RESULT 190" in r.stdout
    v = load(PREFIX, dash_root=tmp_path / ".dash")
    assert [r["data"]["step"] for r in v.metrics("train").read()] == list(range(101))
    worker = v.metrics("worker").read()
    assert sorted(r["data"]["i"] for r in worker) == list(range(20))
    dt.assert_gap_free([r["index"] for r in worker], "worker")
    assert v.status == "COMPLETED"


# ---- two processes, one prefix -----------------------------------------------------------------------------------
WRITER = """
import os, sys, time
from pathlib import Path
from ml_dash import Experiment
from ml_dash.buffer import BufferConfig
tag = sys.argv[1]
exp = Experiment("proj/run", buffer_config=BufferConfig(write_interval=0.001, quiet=True))
exp.run.start()
print("READY", flush=True)
while not Path("go").exists():
    time.sleep(0.005)
for i in range(3000):
    exp.metrics("train").log(who=tag, i=i)
    if i % 10 == 0:
        exp.log(f"{tag}:{i}")
        exp.tracks("pos").append(_ts=float(i) + (0.5 if tag == "b" else 0.0), who=tag, i=i)
    if i % 300 == 0:
        time.sleep(0.002)
exp.run.complete()
"""


def test_two_processes_append_to_one_prefix(tmp_path: Path) -> None:
    procs = [dt.start_py(tmp_path, WRITER, name="writer.py", args=[tag]) for tag in ("a", "b")]
    for p in procs:  # both have the run open before either writes: their appends overlap, however slow the start
        dt.wait_line(p, "READY", timeout=120)
    (tmp_path / "go").touch()
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
    v = load(PREFIX, dash_root=tmp_path / ".dash")
    rows = v.metrics("train").read()
    assert [r["index"] for r in rows] == list(range(6000))
    for tag in ("a", "b"):
        assert [r["data"]["i"] for r in rows if r["data"]["who"] == tag] == list(range(3000))
    logs = v.logs.read()
    assert [g["sequenceNumber"] for g in logs] == list(range(600))
    for tag in ("a", "b"):
        assert [int(g["message"].split(":")[1]) for g in logs if g["message"].startswith(tag)] == \
            list(range(0, 3000, 10))
    track = v.tracks("pos").read()
    for tag in ("a", "b"):
        assert [e["i"] for e in track if e["who"] == tag] == list(range(0, 3000, 10))
    folder = v.folder
    for p in [folder / "metrics" / "train" / "data.jsonl", folder / "logs" / "logs.jsonl",
              folder / "tracks" / "pos" / "data.jsonl"]:
        for line in p.read_bytes().splitlines():
            assert line.startswith(b"{") and line.endswith(b"}"), line[:80]
    import json
    meta = json.loads((folder / "metrics" / "train" / "metadata.json").read_text())
    assert meta["totalDataPoints"] == 6000 and meta["nextIndex"] == 6000
    tmeta = json.loads((folder / "tracks" / "pos" / "metadata.json").read_text())
    assert tmeta["totalEntries"] == 600, tmeta
    assert v.status == "COMPLETED"
