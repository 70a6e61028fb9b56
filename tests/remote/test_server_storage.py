"""The server's commit protocol on real files: lines written but not committed when the server died (kill -9
between the append and the commit) are cut before the client's retry writes them again."""

from __future__ import annotations

import json
from pathlib import Path

from ml_dash import load
from ml_dash.server.storage import ServerRoot


def _rows(a: int, b: int) -> list[dict[str, object]]:
    return [{"index": i, "data": {"step": i, "_ts": 1.7e9 + i}, "createdAt": "2026-01-01T00:00:00.000000Z"}
            for i in range(a, b)]


def test_uncommitted_lines_are_cut_before_the_retry(tmp_path: Path) -> None:
    srv = ServerRoot(tmp_path)
    srv.open_experiment("p/x", {"status": "RUNNING"}, "src")
    assert srv.append_metrics("p/x", "train", _rows(0, 10), "src")["stored"] == 10
    data = tmp_path / "p" / "x" / "metrics" / "train" / "data.jsonl"
    # the server died after writing the next batch (and half a line of another) but before committing it
    with open(data, "ab") as f:
        f.write(b"".join(json.dumps(r).encode() + b"\n" for r in _rows(10, 20)) + b'{"index": 20, "da')
    res = ServerRoot(tmp_path).append_metrics("p/x", "train", _rows(10, 25), "src")  # a restarted server
    assert res == {"received": 15, "stored": 15, "next": 25}
    rows = load("p/x", dash_root=tmp_path).metrics("train").read()
    assert [r["data"]["step"] for r in rows] == list(range(25))


def test_tracks_logs_and_files_are_idempotent(tmp_path: Path) -> None:
    srv = ServerRoot(tmp_path)
    entries = [{"timestamp": float(i), "x": i} for i in range(6)]
    offs = [i * 20 for i in range(6)]
    srv.append_tracks("p/x", "robot/pos", entries[:4], 0, 80, offs[:4], "src")
    # an overlapping re-send cut differently: only the two new entries are stored
    assert srv.append_tracks("p/x", "robot/pos", entries[2:], 40, 120, offs[2:], "src")["stored"] == 2
    assert load("p/x", dash_root=tmp_path).tracks("robot/pos").read() == entries
    logs = [{"sequenceNumber": i, "timestamp": "t", "level": "info", "message": str(i)} for i in range(5)]
    srv.append_logs("p/x", logs[:3], "a")
    srv.append_logs("p/x", logs, "a")
    srv.append_logs("p/x", logs[:2], "b")  # another machine's own numbering: kept, renumbered
    got = load("p/x", dash_root=tmp_path).logs.read()
    assert [(r["sequenceNumber"], r["message"]) for r in got] == [(0, "0"), (1, "1"), (2, "2"), (3, "3"),
                                                                   (4, "4"), (5, "0"), (6, "1")]
    d = srv.exp("p/x")
    for _ in range(2):
        staged = srv.incoming()
        staged.write_text("content")
        entry = srv.check_file_entry({"id": "42", "path": "/ckpt", "filename": "a.txt"})
        srv.publish_file(d, staged, entry)
        assert not staged.exists()
    files = load("p/x", dash_root=tmp_path).files.list()
    assert [(f["path"], f["filename"]) for f in files] == [("/ckpt", "a.txt")]
    assert Path(files[0]["localPath"]).read_text() == "content"


def test_a_stale_status_or_params_request_does_not_win(tmp_path: Path) -> None:
    srv = ServerRoot(tmp_path)
    srv.open_experiment("p/x", {"status": "COMPLETED", "updated_at": "2026-01-01T00:00:02.000000Z"}, "s")
    srv.open_experiment("p/x", {"status": "RUNNING", "updated_at": "2026-01-01T00:00:01.000000Z"}, "s")
    assert load("p/x", dash_root=tmp_path).info["status"] == "COMPLETED"
    assert srv.set_params("p/x", {"lr": 2}, 2, "s") is True
    assert srv.set_params("p/x", {"lr": 1}, 1, "s") is False
    assert load("p/x", dash_root=tmp_path).params.get() == {"lr": 2}
