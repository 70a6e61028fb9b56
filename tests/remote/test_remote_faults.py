"""A flaky server (HTTP 500 on every third request, half of them after doing the work) and a stalling one
(requests held longer than the client timeout, then handled): no loss, no duplicates, and close() is bounded
when the server never answers, with `ml-dash sync` delivering the rest exactly once afterwards."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import rt
from ml_dash import Experiment, load
from ml_dash.buffer import BufferConfig


def _run(url: str, local: Path, prefix: str, config: BufferConfig, rows: int = 200) -> None:
    with Experiment(prefix, dash_root=local, dash_url=url, buffer_config=config).run as e:
        for k in range(4):
            e.params.set(round=k, **{f"p{k}": k})
            rt.workload(e, k * rows, rows, files=2)
            e.flush(timeout=0.2)  # some flushes time out against the faults: harmless


def test_every_third_request_fails(make_server: Any, tmp_path: Path) -> None:
    server = make_server("--fault-every", "3")
    _run(server.url, tmp_path / "local", "proj/flaky", BufferConfig(flush_interval=0.1, metric_batch_size=50,
                                                                    close_timeout=60))
    remote = rt.assert_same("proj/flaky", tmp_path / "local", server.root)
    assert [r["data"]["step"] for r in remote.metrics("train").read()] == list(range(800))
    assert remote.params.get()["round"] == 3


def test_stalls_longer_than_the_client_timeout(make_server: Any, tmp_path: Path,
                                               monkeypatch: Any) -> None:
    server = make_server("--stall-every", "5", "--stall-seconds", "1.5")
    monkeypatch.setenv("ML_DASH_REMOTE_TIMEOUT", "0.5")
    _run(server.url, tmp_path / "local", "proj/stall", BufferConfig(flush_interval=0.1, metric_batch_size=100,
                                                                    close_timeout=60))
    server.stop()  # the requests still held are handled (or dropped) before we look
    server.start()
    rt.assert_same("proj/stall", tmp_path / "local", server.root)


def test_close_is_bounded_when_the_server_hangs_and_sync_delivers_later(make_server: Any, tmp_path: Path,
                                                                          monkeypatch: Any, capfd: Any) -> None:
    hung = make_server("--stall-every", "1", "--stall-seconds", "600")
    monkeypatch.setenv("ML_DASH_REMOTE_TIMEOUT", "0.5")
    local = tmp_path / "local"
    with Experiment("proj/hang", dash_root=local, dash_url=hung.url,
                    buffer_config=BufferConfig(flush_interval=0.1, close_timeout=2)).run as e:
        rt.workload(e, 0, 400, files=2)
    err = capfd.readouterr().err
    m = re.search(r"(\d+) log\(s\), (\d+) metric row\(s\), (\d+) track entr\(ies\), (\d+) file\(s\) not delivered", err)
    assert m, err
    assert [int(x) for x in m.groups()] == [40, 440, 80, 2]  # 400 train + 40 eval rows
    assert "ml-dash sync" in err and str(local) in err
    assert "has been closed" not in err, err  # a send outliving close() is not reported as a new failure
    hung.kill()
    good = make_server(root=hung.root)
    r = rt.cli("sync", str(local), "--url", good.url, env={"ML_DASH_TOKEN": good.token})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "uploaded 40 log(s), 440 metric row(s), 80 track entr(ies), 2 file(s)" in r.stdout
    rt.assert_same("proj/hang", local, good.root)
    again = rt.cli("sync", str(local), "--url", good.url, env={"ML_DASH_TOKEN": good.token})
    assert "uploaded 0 log(s), 0 metric row(s), 0 track entr(ies), 0 file(s)" in again.stdout
    assert len(load("proj/hang", dash_root=good.root).metrics("train").read()) == 400
