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


def test_a_torn_commit_line_is_ignored_then_cut_and_the_log_compacts(tmp_path: Path) -> None:
    """The commit log (server/commits.py): a commit record cut off by a crash never counts (its batch was never
    acknowledged), the next commit cuts it first; a state file in the one-object format reads the same; a long
    log is replaced by its last line."""
    from ml_dash.server import commits

    srv = ServerRoot(tmp_path)
    srv.open_experiment("p/x", {}, "src")
    assert srv.append_metrics("p/x", "train", _rows(0, 10), "src")["stored"] == 10
    d = srv.exp("p/x")
    from ml_dash import layout

    state_path = d.server_state_path(layout.stream_key(layout.METRICS, "train"))
    good = state_path.read_bytes()
    assert good.endswith(b"\n") and json.loads(good)["size"] > 0
    # a crash while appending the next commit record: the torn line is ignored...
    with open(state_path, "ab") as f:
        f.write(b'{"sources": {"src": 99}, "si')
    assert commits.read(state_path)["sources"] == {"src": 10}
    # ...and the retry is stored once, after the torn line was cut
    assert srv.append_metrics("p/x", "train", _rows(5, 12), "src") == {"received": 7, "stored": 2, "next": 12}
    lines = state_path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(json.loads(x)["sources"] for x in lines[:-1]) and len(lines) == 3
    # the one-object format (indented, no trailing newline) reads the same, and the next commit replaces it
    state_path.write_text(json.dumps(json.loads(lines[-2]), indent=2))
    assert commits.read(state_path)["sources"] == {"src": 12}
    assert srv.append_metrics("p/x", "train", _rows(12, 13), "src")["stored"] == 1
    assert state_path.read_bytes().count(b"\n") == 1
    # the log stays short: compacted to one line past commits.COMPACT bytes
    fast = ServerRoot(tmp_path, fsync=False)
    for i in range(13, 1013):
        fast.append_metrics("p/x", "train", _rows(i, i + 1), "src")
    assert state_path.stat().st_size <= commits.COMPACT
    assert commits.read(state_path)["sources"] == {"src": 1013}
    rows = load("p/x", dash_root=tmp_path).metrics("train").read()
    assert [r["data"]["step"] for r in rows] == list(range(1013))
