"""Disk full on the server (a file size limit, RLIMIT_FSIZE, which root cannot bypass): the server answers 507
naming the cause (the client retries it), reads show only committed rows during the fault, other streams go on,
no temporary file is left behind, and once there is room again the retried batches are stored exactly once."""

from __future__ import annotations

import json
import resource
import signal
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from ml_dash.server.backend import metric_meta
from serverproc import Server

E = "/api/v1/experiments/" + quote("proj/full", safe="")
LIMIT = 256 * 1024


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


def _batch(start: int, n: int) -> dict[str, Any]:
    return {"source": "s1", "records": [{"index": i, "data": {"step": i, "loss": 1.0 / (i + 1), "pad": "x" * 40}}
                                        for i in range(start, start + n)]}


def _leftovers(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.suffix in (".tmp", ".part")]


def test_disk_full_is_507_with_reason_and_loses_nothing(tmp_path: Path) -> None:
    server = Server(tmp_path / "root", tmp_path / "server.log")
    server.preexec = _limit_file_size
    server.start()
    try:
        acked = 0
        refused: list[dict[str, Any]] = []
        with server.client() as c:
            assert c.post("/api/v1/experiments", json={"prefix": "proj/full", "info": {}}).status_code == 201
            for _ in range(100):
                body = _batch(acked, 400)
                r = c.post(f"{E}/metrics/train", json=body)
                if r.status_code != 200:
                    refused.append(body)
                    break
                acked += r.json()["stored"]
            assert refused, "the size limit was never reached"
            assert r.status_code == 507, r.text
            detail = r.json()["detail"]
            assert "insufficient storage" in detail and "size limit" in detail and "retry" in detail, detail
            assert r.headers.get("retry-after")
            # a retry during the fault fails the same way; reads show exactly the acknowledged rows
            assert c.post(f"{E}/metrics/train", json=refused[0]).status_code == 507
            rows = c.get(f"{E}/metrics/train").json()["records"]
            assert [x["data"]["step"] for x in rows] == list(range(acked))
            assert c.get(f"{E}/columns/metrics/train").json()["columns"]["step"] == list(range(acked))
            # other streams are not affected
            r = c.post(f"{E}/logs", json={"source": "s1", "records": [{"sequenceNumber": 0, "level": "info",
                                                                         "message": "still here"}]})
            assert r.status_code == 200 and r.json()["stored"] == 1
            # a file larger than what fits: 507 as well, nothing indexed, no staging file left
            big = b"z" * (LIMIT + 1000)
            r = c.post(f"{E}/files", data={"entry": json.dumps({"id": "7", "path": "/", "filename": "big.bin"})},
                       files={"file": ("big.bin", big)})
            assert r.status_code == 507, r.text
            assert c.get(f"{E}/files").json()["files"] == []
        assert _leftovers(server.root) == []
        server.stop()

        server.preexec = None  # room again: the client's retry is stored once
        server.start()
        with server.client() as c:
            r = c.post(f"{E}/metrics/train", json=refused[0])
            assert r.status_code == 200 and r.json()["stored"] == 400
            assert c.post(f"{E}/metrics/train", json=refused[0]).json()["stored"] == 0
            rows = c.get(f"{E}/metrics/train").json()["records"]
            assert [x["data"]["step"] for x in rows] == list(range(acked + 400))
            assert [x["index"] for x in rows] == list(range(acked + 400))
        assert _leftovers(server.root) == []
    finally:
        server.stop()


def test_reads_after_a_crash_mid_append_show_only_acknowledged_rows(tmp_path: Path) -> None:
    """A kill -9 between writing an append's lines and committing it leaves lines past the committed size (and
    maybe a torn one). Until the next append to that stream cuts them, every read route stops at the committed
    size: a row never acknowledged is never shown; the client's retry then stores it exactly once."""
    server = Server(tmp_path / "root", tmp_path / "server.log").start()
    try:
        with server.client() as c:
            assert c.post("/api/v1/experiments", json={"prefix": "proj/full", "info": {}}).status_code == 201
            assert c.post(f"{E}/metrics/train", json=_batch(0, 50)).json()["stored"] == 50
            logs = {"source": "s1", "records": [{"sequenceNumber": i, "level": "info", "message": f"m{i}"}
                                                for i in range(5)]}
            assert c.post(f"{E}/logs", json=logs).json()["stored"] == 5
            track = {"source": "s1", "entries": [{"timestamp": float(i), "x": i} for i in range(3)], "offset": 0}
            assert c.post(f"{E}/tracks/pose", json=track).status_code == 200
        server.kill()
        run = server.root / "proj" / "full"
        data = next(run.rglob("metrics/**/data.jsonl"))
        with open(data, "a") as f:  # what the killed append had written: whole lines, then a torn one
            f.writelines(json.dumps({"index": i, "data": {"step": i, "loss": 0.5}}) + "\n" for i in range(50, 60))
            f.write('{"index": 60, "data": {"st')
        meta = data.parent / "metadata.json"  # and the stream's row count it wrote before the commit
        meta.write_text(json.dumps(metric_meta(json.loads(meta.read_text()), "train", 60)))
        with open(run / "logs" / "logs.jsonl", "a") as f:
            f.write(json.dumps({"sequenceNumber": 5, "level": "info", "message": "never acknowledged"}) + "\n")
        with open(next(run.rglob("tracks/**/data.jsonl")), "a") as f:
            f.write(json.dumps({"timestamp": 3.0, "x": 3}) + "\n")
        server.start()
        with server.client() as c:
            _viewer_shows_only_acknowledged_rows(c, server.url)  # first: the summary routes below cut the files
            assert [x["index"] for x in c.get(f"{E}/metrics/train").json()["records"]] == list(range(50))
            cols = c.get(f"{E}/columns/metrics/train").json()
            assert cols["rows"] == 50 and cols["columns"]["step"] == list(range(50))
            assert [x["message"] for x in c.get(f"{E}/logs").json()["records"]] == [f"m{i}" for i in range(5)]
            assert c.get(f"{E}/columns/logs").json()["rows"] == 5
            summary = c.get(f"{E}/summary").json()
            assert summary["metrics"]["train"]["rows"] == 50 and summary["logs"] == 5, summary
            assert [r["metrics"] for r in c.get("/api/v1/runs").json()["runs"]] == [{"train": 50}]
            # the client's retry of the lost batch: stored once, the leftovers cut
            r = c.post(f"{E}/metrics/train", json=_batch(50, 20))
            assert r.status_code == 200 and r.json()["stored"] == 20
            rows = c.get(f"{E}/metrics/train").json()["records"]
            assert [x["index"] for x in rows] == list(range(70))
            assert [x["data"]["step"] for x in rows] == list(range(70))
            assert c.get(f"{E}/columns/metrics/train").json()["columns"]["step"] == list(range(70))
    finally:
        server.stop()


def _viewer_shows_only_acknowledged_rows(c: httpx.Client, url: str) -> None:
    """The web viewer at / reads the folder's files itself: each stream only up to its committed size too."""
    view = {"run": "proj/full"}
    info = c.get("/api/view/run", params=view).json()
    assert info["streams"]["train"]["rows"] == 50 and info["logs"]["total"] == 5, info
    series = c.get("/api/view/series", params={**view, "stream": "train", "field": "loss", "n": 1000}).json()
    assert [r["rows"] for r in series["runs"]] == [50] and len(series["x"]) == 50, series
    logs = c.get("/api/view/logs", params={**view, "limit": 100}).json()
    assert [r["message"] for r in logs["rows"]] == [f"m{i}" for i in range(5)], logs
    track = c.get("/api/view/track", params={**view, "topic": "pose"}).json()
    assert track["rows"] == 3 and track["columns"]["x"] == [0, 1, 2], track
    # the live stream from the start: every committed row, then nothing more
    subs = json.dumps([["proj/full", "metrics", "train", 0], ["proj/full", "logs", "", 0]])
    got: dict[str, list[Any]] = {"metrics": [], "logs": []}
    deadline = time.monotonic() + 60  # generous for a slow machine; then (at the next line: the server's keep-alive
    with c.stream("GET", "/api/view/live", params={"subs": subs}, timeout=60) as r:  # comment) nothing more
        event = ""
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event in ("metrics", "logs"):
                got[event] += json.loads(line[6:])["rows"]
            if len(got["metrics"]) >= 50 and len(got["logs"]) >= 5:
                deadline = min(deadline, time.monotonic() + 2)
            if time.monotonic() > deadline:
                break
    assert [x["index"] for x in got["metrics"]] == list(range(50)), got["metrics"][-3:]
    assert [x["message"] for x in got["logs"]] == [f"m{i}" for i in range(5)], got["logs"]


@pytest.mark.parametrize("engine", ["postgres"])
def test_a_failing_database_is_503_with_retry_after_and_loses_nothing(make_server: Any) -> None:
    """PostgreSQL's analogue of a full disk: the database refuses connections and drops the server's. Every request
    answers 503 naming the cause with Retry-After (the client retries), never a bare 500; once the database is
    back, the retried batch is stored exactly once, and every worker process stores again at once (each has its
    own pool: one that waited through the outage must not keep answering 503 for its reconnection's backoff)."""
    import psycopg

    server = make_server("--workers", "2")
    db = server.database.rsplit("/", 1)[1]
    admin = server.database.rsplit("/", 1)[0] + "/postgres"
    with server.client() as c:
        assert c.post("/api/v1/experiments", json={"prefix": "proj/full", "info": {}}).status_code == 201
        assert c.post(f"{E}/metrics/train", json=_batch(0, 100)).json()["stored"] == 100
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS false')
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (db,))
        try:  # the pool's dropped connections, then no connection at all: 503 every time, after the pool's 8 s
            for _ in range(3):  # wait (inside the client's 10 s on an idle machine; a loaded one adds its delay);
                t0 = time.monotonic()  # the worker processes take the requests in turn, so their pools meet the
                r = c.post(f"{E}/metrics/train", json=_batch(100, 100), timeout=60)  # outage 8 s apart
                assert r.status_code == 503 and time.monotonic() - t0 < 20, (time.monotonic() - t0, r.text)
                assert "database unavailable" in r.json()["detail"] and r.headers.get("retry-after"), r.text
            r = c.get(f"{E}/metrics/train", timeout=60)
            assert r.status_code == 503 and r.headers.get("retry-after"), r.text
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS true')
        deadline = time.monotonic() + 90  # as a client does: retry the 503s (the pool reconnects) until stored
        while True:
            r = c.post(f"{E}/metrics/train", json=_batch(100, 100), timeout=60)
            if r.status_code != 503 or time.monotonic() > deadline:
                break
            assert "database unavailable" in r.json()["detail"] and r.headers.get("retry-after"), r.text
            time.sleep(1)
        assert r.status_code == 200 and r.json()["stored"] == 100, r.text
        for _ in range(6):  # requests go to the worker processes in turn: each stores (here: finds it stored) at once
            r = c.post(f"{E}/metrics/train", json=_batch(100, 100), timeout=60)
            assert r.status_code == 200 and r.json()["stored"] == 0, r.text
        rows = c.get(f"{E}/metrics/train").json()["records"]
        assert [x["index"] for x in rows] == list(range(200))
        assert [x["data"]["step"] for x in rows] == list(range(200))


def test_a_pool_connects_again_within_a_second_of_the_database_coming_back(pg_cluster: Any) -> None:
    """The server's pool tries to reconnect every second while the database is away: psycopg_pool's own backoff
    doubles (1, 2, 4, 8, 16 s ...), so after an outage of 18 s it would not try again for about 10 s more and
    every request meanwhile waits out the pool's timeout and answers 503."""
    import psycopg
    from ml_dash.server.pg import _pool_class

    url = pg_cluster.new_database()
    db, admin = url.rsplit("/", 1)[1], url.rsplit("/", 1)[0] + "/postgres"
    pool_class = _pool_class()
    pool = pool_class(url, min_size=2, max_size=4, open=True, timeout=8, kwargs={"connect_timeout": 5},
                      check=pool_class.check_connection)
    try:
        pool.wait(30)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS false')
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (db,))
        t0 = time.monotonic()
        with pytest.raises(psycopg.OperationalError):  # the pool finds its connections dropped and cannot connect
            with pool.connection(timeout=1) as c:
                c.execute("SELECT 1")
        time.sleep(max(0.0, 18 - (time.monotonic() - t0)))
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS true')
        with pool.connection(timeout=3) as c:  # the stock pool's next attempts: about 30 s after the outage began
            assert c.execute("SELECT 1").fetchone() == (1,)
    finally:
        pool.close()
