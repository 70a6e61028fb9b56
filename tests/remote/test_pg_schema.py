"""The PostgreSQL schema: migrated at start from the first version to the current one with the data kept, and a
server refusing, with a clear message, to start on a database a newer ml-dash has migrated."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import rt

pytest.importorskip("psycopg")
from ml_dash.server.objects import DirObjects  # noqa: E402
from ml_dash.server.pg import SCHEMA_VERSION, PgBackend, migrate, schema_version  # noqa: E402


@pytest.fixture
def url(pg_cluster: object) -> Iterator[str]:
    yield pg_cluster.new_database()  # type: ignore[attr-defined]


def _rows(a: int, b: int) -> list[dict[str, object]]:
    return [{"index": i, "data": {"step": i}, "createdAt": "2026-01-01T00:00:00.000000Z"} for i in range(a, b)]


def test_first_schema_migrates_to_current_keeping_data_and_marks(url: str, tmp_path: Path) -> None:
    import psycopg

    assert SCHEMA_VERSION >= 2
    with psycopg.connect(url) as conn:
        assert migrate(conn, target=1) == (0, 1)
        # what a server of schema 1 stored: 10 rows of one source, its mark kept in `marks`
        (exp_id,) = conn.execute("INSERT INTO experiments (prefix, info) VALUES ('p/x', %s) RETURNING id",
                                 (json.dumps({"name": "x", "project": "p", "prefix": "p/x"}),)).fetchone()
        (sid,) = conn.execute("INSERT INTO streams (exp_id, kind, name, next) VALUES (%s, 'metrics', 'train', 10) "
                              "RETURNING id", (exp_id,)).fetchone()
        for r in _rows(0, 10):
            conn.execute("INSERT INTO stream_rows (stream_id, idx, body) VALUES (%s, %s, %s)",
                         (sid, r["index"], json.dumps(r)))
        conn.execute("INSERT INTO marks (exp_id, key, source, mark) VALUES (%s, 'metrics/train', 'src', '10')",
                     (exp_id,))
        conn.commit()
    backend = PgBackend(url, DirObjects(tmp_path / "files"))  # starting migrates
    try:
        with psycopg.connect(url) as conn:
            assert schema_version(conn) == SCHEMA_VERSION
        assert backend.rows("p/x", "metrics", "train") == (10, _rows(0, 10))
        # the source's mark survived the move: a re-sent overlapping batch stores only the new rows
        assert backend.append_metrics("p/x", "train", _rows(5, 15), "src") == {"received": 10, "stored": 5,
                                                                             "next": 15}
        assert backend.append_metrics("p/x", "train", _rows(5, 15), "src")["stored"] == 0
        total, rows = backend.rows("p/x", "metrics", "train")
        assert total == 15 and [r["data"]["step"] for r in rows] == list(range(15))
    finally:
        backend.close()
    with psycopg.connect(url) as conn:  # migrating again is a no-op
        assert migrate(conn) == (SCHEMA_VERSION, SCHEMA_VERSION)


def test_deleting_an_experiment_deletes_its_rows(url: str, tmp_path: Path) -> None:
    """stream_rows has no foreign keys (schema 4: ingest speed); a trigger still takes a deleted stream's rows."""
    import psycopg

    backend = PgBackend(url, DirObjects(tmp_path / "files"))
    try:
        for prefix in ("p/x", "p/y"):
            backend.append_metrics(prefix, "train", _rows(0, 5), "src")
            backend.append_logs(prefix, [{"sequenceNumber": 0, "level": "info", "message": "m"}], "src")
    finally:
        backend.close()
    with psycopg.connect(url) as conn:
        conn.execute("DELETE FROM experiments WHERE prefix = 'p/x'")
        conn.commit()
        left = conn.execute("SELECT e.prefix, count(*) FROM stream_rows r JOIN streams s ON s.id = r.stream_id "
                            "JOIN experiments e ON e.id = s.exp_id GROUP BY e.prefix").fetchall()
        (total,) = conn.execute("SELECT count(*) FROM stream_rows").fetchone()
    assert left == [("p/y", 6)] and total == 6


def test_server_refuses_a_newer_schema(url: str, tmp_path: Path) -> None:
    import psycopg

    with psycopg.connect(url) as conn:
        migrate(conn)
        conn.execute("INSERT INTO ml_dash_schema (version) VALUES (%s)", (SCHEMA_VERSION + 1,))
        conn.commit()
    r = rt.cli("serve", "--port", str(rt.free_port()),  # the database and files from the environment
               env={"ML_DASH_DATABASE_URL": url, "ML_DASH_FILES": str(tmp_path / "files")})
    assert r.returncode == 1
    assert f"schema is at version {SCHEMA_VERSION + 1}, newer than this ml-dash knows ({SCHEMA_VERSION})" in r.stderr
    assert "Upgrade ml-dash" in r.stderr


def test_bad_database_url_and_files_without_database_are_refused(tmp_path: Path) -> None:
    r = rt.cli("serve", "--database", "mysql://x/y", "--port", str(rt.free_port()))
    assert r.returncode == 1 and "postgresql://" in r.stderr
    r = rt.cli("serve", "--root", str(tmp_path / "r"), "--port", str(rt.free_port()),
               env={"ML_DASH_FILES": str(tmp_path / "f")})
    assert r.returncode == 1 and "--files needs --database" in r.stderr
    port = rt.free_port()  # nothing listens there: a clear message, no traceback, the password not shown
    r = rt.cli("serve", "--database", f"postgresql://u:secret@127.0.0.1:{port}/db", "--port", str(rt.free_port()))
    assert r.returncode == 1 and "cannot use the database postgresql://u:***@127.0.0.1" in r.stderr
    assert "secret" not in r.stderr and "Traceback" not in r.stderr


def test_dump_writes_a_dash_copy_of_what_the_database_holds(url: str, tmp_path: Path) -> None:
    from ml_dash import load

    backend = PgBackend(url, DirObjects(tmp_path / "files"))
    try:
        backend.open_experiment("p/x", {"status": "COMPLETED", "tags": ["a"]}, "s")
        backend.append_metrics("p/x", "eval/sub", _rows(0, 5), "s")
        backend.append_tracks("p/x", "robot/pos", [{"timestamp": 1.0, "x": 1}, {"timestamp": 2.0, "x": 2}], 0, 40,
                              None, "s")
        backend.set_params("p/x", {"lr": 0.1}, 1, "s")
        staged = backend.incoming()
        staged.write_bytes(b"content")
        backend.publish_file("p/x", staged, {"id": "f1", "path": "/ckpt", "filename": "a.bin", "contentType": None})
        backend.open_experiment("p/y", {}, "s")
    finally:
        backend.close()
    env = {"ML_DASH_DATABASE_URL": url, "ML_DASH_FILES": str(tmp_path / "files")}
    r = rt.cli("dump", str(tmp_path / "copy"), "--prefix", "p/x", env=env)
    assert r.returncode == 0 and "1 run(s) written" in r.stdout, r.stdout + r.stderr
    v = load("p/x", dash_root=tmp_path / "copy")
    assert v.status == "COMPLETED" and v.info["tags"] == ["a"] and v.params.get() == {"lr": 0.1}
    assert v.metrics.names() == ["eval/sub"] and v.metrics("eval/sub").read() == _rows(0, 5)
    assert v.tracks("robot/pos").read() == [{"timestamp": 1.0, "x": 1}, {"timestamp": 2.0, "x": 2}]
    (f,) = v.files.list()
    assert (f["path"], f["filename"]) == ("/ckpt", "a.bin") and Path(f["localPath"]).read_bytes() == b"content"
    assert rt.experiment_dirs(tmp_path / "copy") == [tmp_path / "copy" / "p" / "x"]
    missing = rt.cli("dump", str(tmp_path / "c2"), "--prefix", "p/nope", env=env)
    assert missing.returncode == 1 and "no run p/nope" in missing.stderr
