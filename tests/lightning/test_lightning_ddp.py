"""A real ddp_spawn run on 2 CPU processes (gloo), in a subprocess: only rank 0 writes, the run completes."""

from __future__ import annotations

import pytest
from ml_dash import load


@pytest.mark.timeout(660)
def test_ddp_spawn_two_processes_only_rank0_writes(tmp_path, dash_root, run_script):
    out = str(tmp_path / "ddp.json")
    # three interpreters each import torch and Lightning: ~40 s of CPU, over 2 min on a loaded 2-core machine
    run_script("ddp_spawn", dash_root, "proj/ddp", out, timeout=600)
    # each rank ran the logging code: rank 0 got the Experiment, rank 1 a no-op stand-in
    assert open(out + ".rank0").read() == "Experiment"
    assert open(out + ".rank1").read() == "_DummyExperiment"
    # 32 samples, 2 ranks, batch 4: 4 steps per rank
    view = load("proj/ddp", dash_root=dash_root)
    assert view.status == "COMPLETED"
    messages = [r["message"] for r in view.logs.read()]
    assert messages[0] == "parent before fit"
    assert [m for m in messages if m.startswith("rank")] == [f"rank 0 step {i}" for i in range(4)]
    seq = [r["sequenceNumber"] for r in view.logs.read()]
    assert seq == list(range(len(seq)))
    train = view.metrics("train").read()
    assert [r["data"]["step"] for r in train] == [0, 1, 2, 3]  # one row per step: rank 1 wrote none
    assert [r["index"] for r in train] == [0, 1, 2, 3]
