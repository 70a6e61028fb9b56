"""Outages: the server is killed mid-run and comes back 10 s later, or is down when the run starts. Training goes
on, the data waits on disk, and every row arrives exactly once. (Per-call latency during the outage is measured
in bench/remote_bench.py, not asserted.)"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import rt
from ml_dash import Experiment, load
from ml_dash.buffer import BufferConfig

PREFIX = "proj/outage"


def test_server_killed_mid_run_and_restarted_10s_later(server: Any, tmp_path: Path, capfd: Any) -> None:
    local = tmp_path / "local"
    exp = Experiment(PREFIX, dash_root=local, dash_url=server.url,
                     buffer_config=BufferConfig(flush_interval=0.2, close_timeout=60))
    with exp.run as e:
        e.params.set(phase="before")
        rt.workload(e, 0, 1000, files=2)
        assert e.flush() is True
        assert len(load(PREFIX, dash_root=server.root).metrics("train").read()) == 1000
        rt.workload(e, 1000, 1000)
        time.sleep(0.3)  # uploads in flight when the server dies
        server.kill()
        down = time.monotonic()
        held = len(load(PREFIX, dash_root=server.root).metrics("train").read())
        i = 2000
        while time.monotonic() - down < 10.0:  # training goes on while the server is gone
            rt.workload(e, i, 50)
            i += 50
            time.sleep(0.05)
        e.params.set(phase="during")
        rt.workload(e, i, 0, files=2)
        # nothing new reached the server while it was down, and every row is safe on disk
        assert len(load(PREFIX, dash_root=server.root).metrics("train").read()) == held
        server.start()
        rt.workload(e, i, 500)
        i += 500
    remote = rt.assert_same(PREFIX, local, server.root)
    assert [r["data"]["step"] for r in remote.metrics("train").read()] == list(range(i))
    assert remote.params.get()["phase"] == "during"
    assert len(remote.files.list()) == 4
    assert "[ML-Dash] ✓ All data flushed successfully" in capfd.readouterr().err


def test_server_down_at_start_then_up(make_server: Any, tmp_path: Path) -> None:
    server = make_server()
    server.stop()  # the run starts with no server listening
    local = tmp_path / "local"
    exp = Experiment(PREFIX, dash_root=local, dash_url=server.url,
                     buffer_config=BufferConfig(flush_interval=0.2, close_timeout=60))
    exp.run.start()
    rt.workload(exp, 0, 300, files=1)
    assert exp.flush(timeout=1.0) is False  # bounded: says what is pending, returns
    assert not rt.experiment_dirs(server.root)
    server.start()
    assert exp.flush() is True
    exp.run.complete()
    rt.assert_same(PREFIX, local, server.root)
