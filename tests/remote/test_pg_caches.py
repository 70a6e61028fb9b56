"""The PostgreSQL engine's caches in the database. Column blocks (`ml_dash.server.pgcols`: the columns of each
complete range of rows, parsed once): the column routes answer exactly what the `.dash` folder engine answers for
the same runs, with the blocks built in the background after an upload, after rows are appended, after a restart,
from a second server process on the same database, and with the blocks gone (rebuilt by the read). Run summaries
(`pgread`): the same JSON as summarising every run, whatever changed since they were kept."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
import rt
from ml_dash import Experiment
from ml_dash.colview import unpack
from serverproc import TOKEN, Server

pytest.importorskip("psycopg")
from ml_dash.columns import Batch  # noqa: E402
from ml_dash.server.pgcols import BLOCK, VERSION, pack_batch, unpack_batch  # noqa: E402

PREFIX = "proj/long"
PATHS = ("/columns/metrics/train", "/columns/logs", "/columns/tracks/" + quote("robot/pos", safe=""))


@pytest.fixture
def engine() -> str:
    return "postgres"  # (compared below with a folder-engine server of its own)


def _log(root: Path, start: int, stop: int) -> None:
    """Metric rows ``start..stop-1`` of shapes that vary (a field from row 12,000 on, NaN and infinities, strings,
    booleans, an integer too big for a float), a log line and a track entry per 3 rows."""
    with Experiment(PREFIX, dash_root=root) as exp:
        train = exp.metrics("train")
        for i in range(start, stop):
            row: dict[str, Any] = {"step": i, "loss": 1.0 / (i + 1), "ok": i % 3 == 0}
            if i >= 12_000:
                row["late"] = i * 0.5
            if i % 1000 == 7:
                row["loss"] = math.nan if i % 2 else -math.inf
                row["phase"] = f"phase {i}"
                row["huge"] = 2**70 + i
            train.log(**row)
            if i % 3 == 0:
                exp.log(f"step {i}", level="info" if i % 4 else "warn", step=i)
                exp.tracks("robot/pos").append(_ts=float(i), x=i, y=-i)


def _sync(root: Path, server: Any) -> None:
    r = rt.cli("sync", str(root), "--url", server.url, env={
        "ML_DASH_TOKEN": TOKEN, "ML_DASH_METRIC_BATCH_SIZE": "2000", "ML_DASH_LOG_BATCH_SIZE": "2000",
        "ML_DASH_TRACK_BATCH_SIZE": "2000"})
    assert r.returncode == 0, r.stdout + r.stderr


def _columns(server: Any) -> list[Any]:
    with server.client() as c:
        base = "/api/v1/experiments/" + quote(PREFIX, safe="")
        out = []
        for path in PATHS:
            r = c.get(base + path, params={"format": "binary"}, timeout=60)
            assert r.status_code == 200, r.text
            out.append(unpack(r.content))
        return out


def _assert_same(got: list[Any], want: list[Any]) -> None:
    for path, g, w in zip(PATHS, got, want, strict=True):
        assert (g.rows, g.kind, list(g), list(g.other)) == (w.rows, w.kind, list(w), list(w.other)), path
        for k in w:
            assert g[k].dtype == w[k].dtype, (path, k)
            if w[k].dtype == object:
                assert g[k].tolist() == w[k].tolist(), (path, k)
            else:  # every bit: NaN, infinities, -0.0
                assert g[k].tobytes() == w[k].tobytes(), (path, k)
        for k in w.other:
            assert g.other[k].tolist() == w.other[k].tolist(), (path, k)


def _sql(server: Any, q: str, *args: Any) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(server.database, autocommit=True) as conn:
        cur = conn.execute(q, args)
        return cur.fetchall() if cur.description else []


def _blocks(server: Any) -> dict[str, int]:
    return dict(_sql(server, "SELECT s.kind, count(b.first) FROM streams s LEFT JOIN stream_blocks b ON "
                             "b.stream_id = s.id AND b.version = %s GROUP BY s.kind", VERSION))


def _wait_blocks(server: Any, want: dict[str, int]) -> None:
    deadline = time.monotonic() + 60
    while _blocks(server) != want:
        assert time.monotonic() < deadline, (_blocks(server), want)
        time.sleep(0.2)


def test_blocks_answer_as_the_folder_engine_across_appends_servers_and_restarts(make_server: Any,
                                                                              tmp_path: Path) -> None:
    local = tmp_path / ".dash"
    n = 2 * BLOCK + 500
    _log(local, 0, n)
    a = make_server()
    folder = Server(tmp_path / "folder", tmp_path / "folder.log").start()
    try:
        _sync(local, a)
        _sync(local, folder)
        # the uploads completed two blocks of metric rows: built in the background
        _wait_blocks(a, {"metrics": 2, "logs": 0, "tracks": 0})
        want = _columns(folder)
        assert want[0].rows == n and "late" in want[0] and "phase" in want[0].other
        _assert_same(_columns(a), want)

        # rows appended after a read: the next read has them, and the blocks they complete are built
        _log(local, n, 3 * BLOCK + 10)
        _sync(local, a)
        _sync(local, folder)
        want = _columns(folder)
        assert BLOCK < want[1].rows < 2 * BLOCK and want[2].rows == BLOCK + 4
        _assert_same(_columns(a), want)
        _wait_blocks(a, {"metrics": 3, "logs": 1, "tracks": 1})

        # the stored rows of every complete block are overwritten with other numbers: a server that still gives
        # the right columns after a restart read them from the blocks, and parsed only the rows after them
        _sql(a, "UPDATE stream_rows r SET body = '{\"index\": 0, \"data\": {\"loss\": 12345}}' FROM streams s "
                "WHERE s.id = r.stream_id AND s.kind = 'metrics' AND r.idx < %s", 3 * BLOCK)
        a.stop()
        a.start()
        _assert_same(_columns(a), want)

        # blocks gone (a database restored without them): a second server on the database parses the rows and
        # stores the blocks again; a third reader (this process) reads those
        _sql(a, "DELETE FROM stream_blocks")
        b = make_server()
        got = _columns(b)
        assert got[0]["loss"][0] == 12345.0 and got[0].rows == want[0].rows  # (the overwritten rows, parsed)
        assert _blocks(a) == {"metrics": 3, "logs": 1, "tracks": 1}
        from ml_dash.server.objects import open_objects
        from ml_dash.server.pg import PgBackend

        pg = PgBackend(a.database, open_objects(str(tmp_path / "objects")), migrate=False)
        try:
            mine = [pg.columns(PREFIX, "metrics", "train"), pg.columns(PREFIX, "logs", None),
                    pg.columns(PREFIX, "tracks", "robot/pos")]
        finally:
            pg.close()
        _assert_same(mine, got)
    finally:
        folder.stop()


def test_block_format_round_trips_every_value() -> None:
    num = {"a": np.array([0.0, -0.0, math.nan, math.inf, -math.inf, 1e-310, 2.0**53 + 1]),
           "b": np.full(7, math.nan)}
    text = {"s": {0: "x", 3: "\ud800 lone", 6: ""}, "v": {1: [1, {"k": None}], 2: 2**80, 4: True, 5: math.nan}}
    back = unpack_batch(pack_batch(Batch(7, num, text, 2)))
    assert back.n == 7 and back.skipped == 2 and list(back.num) == ["a", "b"]
    assert all(back.num[k].tobytes() == num[k].tobytes() for k in num)
    assert back.text["s"] == text["s"] and back.text["v"][1] == [1, {"k": None}] and back.text["v"][2] == 2**80
    assert back.text["v"][4] is True and math.isnan(back.text["v"][5])
    with pytest.raises(ValueError):
        unpack_batch(pack_batch(Batch(7, num, text, 0)) + b"x")


def test_run_summaries_kept_in_the_database_follow_every_change(pg_cluster: Any, tmp_path: Path) -> None:
    """`ml-dash ls --url` answers from summaries kept encoded in the database: the same JSON as summarising every
    run, and a run summarised again as soon as its experiment.json, parameters or row counts change."""
    import json

    from ml_dash.server.objects import open_objects
    from ml_dash.server.pg import PgBackend

    url = pg_cluster.new_database()
    one, two = (PgBackend(url, open_objects(str(tmp_path / "objects"))) for _ in range(2))  # two servers
    try:
        for k in range(3):
            one.open_experiment(f"p/r{k}", {"status": "COMPLETED", "tags": ["a"]}, "s")
            one.set_params(f"p/r{k}", {"lr": 0.1 * k}, 1, "s")
            one.append_metrics(f"p/r{k}", "train", [{"index": i, "data": {"loss": 1.0 / (i + 1)}} for i in range(5)],
                               "s")
        one.open_experiment("p/live", {"status": "RUNNING", "heartbeatAt": "2020-01-01T00:00:00.000000Z"}, "s")

        def check(backend: Any, last: Any = None) -> dict[str, Any]:
            want = json.dumps({"runs": backend.summaries(last)}, allow_nan=True, separators=(",", ":"),
                              default=str).encode()
            got = backend.summaries_json(last)
            assert got == want
            return {r["prefix"]: r for r in json.loads(got)["runs"]}

        runs = check(one)
        assert runs["p/live"]["status"] == "CRASHED" and runs["p/r2"]["params"] == {"lr": 0.2}
        kept = dict(_sql_url(url, "SELECT e.prefix, r.body FROM run_summaries r JOIN experiments e ON e.id = r.exp_id"))
        assert sorted(kept) == ["p/r0", "p/r1", "p/r2"]  # a RUNNING run is summarised at every listing
        # the kept summaries are what the other server answers from: a doctored one shows through...
        _sql_url(url, "UPDATE run_summaries r SET body = %s FROM experiments e WHERE e.id = r.exp_id AND "
                      "e.prefix = 'p/r1'", '{"prefix":"p/r1","doctored":true}')
        assert json.loads(two.summaries_json())["runs"][2] == {"prefix": "p/r1", "doctored": True}
        # ... until the run changes: parameters, rows, a new stream, its status
        two.set_params("p/r1", {"lr": 5}, 2, "s")
        assert check(two)["p/r1"]["params"] == {"lr": 5}
        one.append_metrics("p/r0", "train", [{"index": 5, "data": {"loss": -1.0}}], "s")
        one.append_metrics("p/r2", "eval", [{"index": 0, "data": {"loss": 3.0}}], "s")
        one.open_experiment("p/r2", {"status": "FAILED"}, "s")
        runs = check(two, [("train", "loss"), ("", "loss")])
        assert runs["p/r0"]["metrics"] == {"train": 6} and runs["p/r0"]["last"]["train:loss"] == -1.0
        assert runs["p/r2"]["metrics"] == {"eval": 1, "train": 5} and runs["p/r2"]["status"] == "FAILED"
        assert check(one) == check(two)
    finally:
        one.close()
        two.close()


def _sql_url(url: str, q: str, *args: Any) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(q, args)
        return cur.fetchall() if cur.description else []
