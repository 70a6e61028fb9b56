"""The PostgreSQL engine (``ml-dash serve --database postgresql://...``; needs the ``[postgres]`` extra).

Several server processes, on several hosts, may share one database: every append is one transaction that locks
its stream's row (``SELECT ... FOR UPDATE``), so indices stay gap-free across processes; each row also carries
its source's own position under a unique constraint, so a retried batch is never stored twice, whichever process
it reaches (a row the marks call new but the constraint finds stored refuses the batch whole). Rows go in by
``COPY``, formatted a chunk at a time, and are stored as the JSON line a `.dash` folder holds (text, so NaN and infinities keep their bare tokens). File contents
go to an object store (`objects.py`). The schema is versioned (`MIGRATIONS`) and migrated at start.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..jsonio import join_lines
from ..names import check_prefix, metric_segments
from . import backend as b
from .backend import Backend, BadRequest
from .objects import Objects, object_key
from .rows import keep_indexed

CHUNK = 4096  # rows formatted and sent at a time: a large body's text is never held whole

_encode = b.encode

# Each entry upgrades the schema by one version; applied in order at start, never edited once released.
MIGRATIONS: list[str] = [
    # 1: experiments (experiment.json and parameters.json as text), per-source marks, streams, rows, files
    """
    CREATE TABLE experiments (
        id bigserial PRIMARY KEY,
        prefix text NOT NULL UNIQUE,
        info text NOT NULL,
        params text
    );
    CREATE TABLE marks (
        exp_id bigint NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
        key text NOT NULL,
        source text NOT NULL,
        mark text NOT NULL,
        PRIMARY KEY (exp_id, key, source)
    );
    CREATE TABLE streams (
        id bigserial PRIMARY KEY,
        exp_id bigint NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
        kind text NOT NULL,
        name text NOT NULL,
        next bigint NOT NULL DEFAULT 0,
        meta text,
        UNIQUE (exp_id, kind, name)
    );
    CREATE TABLE stream_rows (
        stream_id bigint NOT NULL REFERENCES streams(id) ON DELETE CASCADE,
        idx bigint NOT NULL,
        body text NOT NULL,
        PRIMARY KEY (stream_id, idx)
    );
    CREATE TABLE files (
        n bigserial,
        exp_id bigint NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
        id text NOT NULL,
        entry text NOT NULL,
        PRIMARY KEY (exp_id, id)
    );
    """,
    # 2: a stream's per-source marks get their own table, and every row records its source's position under a
    #    unique constraint: a retried batch is refused by the database itself, not only by the mark
    """
    CREATE TABLE stream_sources (
        id bigserial PRIMARY KEY,
        stream_id bigint NOT NULL REFERENCES streams(id) ON DELETE CASCADE,
        source text NOT NULL,
        mark bigint NOT NULL DEFAULT 0,
        UNIQUE (stream_id, source)
    );
    INSERT INTO stream_sources (stream_id, source, mark)
        SELECT s.id, m.source, m.mark::bigint FROM marks m JOIN streams s ON s.exp_id = m.exp_id
        AND m.key = CASE WHEN s.kind = 'logs' THEN 'logs' ELSE s.kind || '/' || s.name END;
    DELETE FROM marks WHERE key NOT IN ('info', 'params');
    ALTER TABLE stream_rows ADD COLUMN source_id bigint REFERENCES stream_sources(id) ON DELETE CASCADE,
                            ADD COLUMN src_pos bigint;
    ALTER TABLE stream_rows ADD CONSTRAINT stream_rows_source_pos UNIQUE (source_id, src_pos);
    """,
    # 3: the columns of each complete block of a stream's rows, parsed once (`pgcols`; stored uncompressed: float
    #    arrays do not compress, and the reads want them fast), and finished runs' summaries (`pgread`)
    """
    CREATE TABLE stream_blocks (
        stream_id bigint NOT NULL REFERENCES streams(id) ON DELETE CASCADE,
        version integer NOT NULL,
        first bigint NOT NULL,
        data bytea NOT NULL,
        PRIMARY KEY (stream_id, version, first)
    );
    ALTER TABLE stream_blocks ALTER COLUMN data SET STORAGE EXTERNAL;
    CREATE TABLE run_summaries (
        exp_id bigint PRIMARY KEY REFERENCES experiments(id) ON DELETE CASCADE,
        stamp text NOT NULL,
        body text NOT NULL
    );
    """,
    # 4: no foreign keys on stream_rows: PostgreSQL checks one per row with a query of its own (about 70 % of the
    #    database's CPU per ingested row); every append writes rows of the stream and source it has just locked in
    #    the same transaction, so they never point elsewhere. Deleting a stream (or its experiment) still deletes
    #    its rows, through a trigger fired once per stream.
    """
    ALTER TABLE stream_rows DROP CONSTRAINT stream_rows_stream_id_fkey,
                            DROP CONSTRAINT stream_rows_source_id_fkey;
    CREATE FUNCTION ml_dash_stream_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        DELETE FROM stream_rows WHERE stream_id = OLD.id;
        RETURN OLD;
    END $$;
    CREATE TRIGGER stream_rows_follow AFTER DELETE ON streams FOR EACH ROW EXECUTE FUNCTION ml_dash_stream_deleted();
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
_LOCK = 0x6D6C64617368  # pg_advisory_xact_lock key: one migrating process at a time


class SchemaTooNew(RuntimeError):
    pass


def _psycopg() -> Any:
    try:
        import psycopg
        import psycopg_pool  # noqa: F401
    except ImportError as e:
        raise RuntimeError("--database needs the postgres extra: pip install './packages/core[postgres]'") from e
    return psycopg


def schema_version(conn: Any) -> int:
    """The version a database is at (0: no ml-dash schema yet)."""
    row = conn.execute("SELECT to_regclass('ml_dash_schema')").fetchone()
    if row[0] is None:
        return 0
    return int(conn.execute("SELECT coalesce(max(version), 0) FROM ml_dash_schema").fetchone()[0])


def migrate(conn: Any, target: int = SCHEMA_VERSION) -> tuple[int, int]:
    """Bring the schema to ``target`` (one transaction, one process at a time): (version before, after).
    Raises `SchemaTooNew` when the database is already past what this version of ml-dash knows."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS ml_dash_schema (version integer PRIMARY KEY, "
                     "applied_at timestamptz NOT NULL DEFAULT now())")
        before = schema_version(conn)
        if before > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"the database schema is at version {before}, newer than this ml-dash knows ({SCHEMA_VERSION}): "
                f"a newer ml-dash server migrated it. Upgrade ml-dash on this host (or point --database "
                f"elsewhere); refusing to start rather than write into a schema it does not understand")
        for v in range(before + 1, target + 1):
            conn.execute(MIGRATIONS[v - 1])
            conn.execute("INSERT INTO ml_dash_schema (version) VALUES (%s)", (v,))
    return before, max(before, target)


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    head, sep, tail = url.rpartition("@")
    if not sep or ":" not in head.split("//", 1)[-1]:
        return url
    scheme, _, cred = head.partition("//")
    return f"{scheme}//{cred.split(':', 1)[0]}:***@{tail}"


_migrate = migrate  # (PgBackend's parameter of that name hides the function)

RECONNECT_EVERY = 1.0  # seconds at most between a pool's attempts to reconnect to a database that went away


def _pool_class() -> Any:
    """psycopg_pool's `ConnectionPool` whose reconnection attempts back off to at most `RECONNECT_EVERY` seconds
    (its own doubles up to minutes: after an outage of a few seconds a worker process whose pool was waiting
    answered 503 for up to 16 s more, while another worker already stored again). psycopg_pool names no setting
    for it; where its internals differ the stock pool is used."""
    from psycopg_pool import ConnectionPool

    try:
        from psycopg_pool.base import AttemptWithBackoff
    except ImportError:  # pragma: no cover - another psycopg_pool layout
        return ConnectionPool
    if not hasattr(ConnectionPool, "_add_connection"):  # pragma: no cover
        return ConnectionPool

    class Attempt(AttemptWithBackoff):
        def update_delay(self, now: float) -> None:
            super().update_delay(now)
            self.delay = min(self.delay, RECONNECT_EVERY)

    class Pool(ConnectionPool):
        def _add_connection(self, attempt: Any, growing: bool = False) -> None:
            super()._add_connection(attempt or Attempt(timeout=self.reconnect_timeout), growing)

    return Pool


class PgBackend(Backend):
    def __init__(self, url: str, objects: Objects, *, pool_size: int = 16, migrate: bool = True) -> None:
        """``migrate`` False: the schema is known to be current (a server's worker process)."""
        psycopg = _psycopg()
        pool = _pool_class()

        self.url = url
        self.objects = objects
        self._unique = psycopg.errors.UniqueViolation
        self._errors = (psycopg.OperationalError, psycopg.errors.DeadlockDetected,
                        psycopg.errors.SerializationFailure)
        try:
            if migrate:
                with psycopg.connect(url, connect_timeout=10) as conn:
                    _migrate(conn)
        except psycopg.Error as e:
            raise RuntimeError(f"cannot use the database {redact(url)}: {e}") from None
        # a request waits at most 8 s for a connection, then answers 503 + Retry-After: within the client's own
        # 10 s timeout, so a client learns the database is down (and fails over) instead of timing out
        # (check: a connection the database dropped while it sat idle in the pool, as after a database restart,
        # is replaced when taken, not handed to a request: each process, and each worker process, has a pool; a
        # pool that cannot connect tries again every second, so each is back within a second of the database)
        self.pool = pool(url, min_size=2, max_size=pool_size, open=True, timeout=8,
                         kwargs={"connect_timeout": 5}, check=pool.check_connection)
        self._staging = Path(tempfile.mkdtemp(prefix="ml-dash-incoming-"))
        from .pgcols import Builder
        from .pgread import Reads

        self._reads = Reads(self)
        self._blocks = Builder(self._reads)

    def close(self) -> None:
        self._blocks.close()
        self.pool.close()
        for p in self._staging.glob("*"):
            p.unlink(missing_ok=True)
        self._staging.rmdir()

    def describe(self) -> str:
        return f"{redact(self.url)} (files: {self.objects.describe()})"

    @contextmanager
    def _tx(self, binary: bool = False) -> Iterator[Any]:
        """A cursor in one transaction (``binary``: values in PostgreSQL's binary format, bytea as bytes); a lost
        connection or a deadlock becomes `Unavailable` (HTTP 503)."""
        try:
            with self.pool.connection() as conn, conn.transaction(), conn.cursor(binary=binary) as cur:
                yield cur
        except self._errors as e:
            raise b.Unavailable(f"database unavailable: {type(e).__name__}: {e}") from None

    # ---- experiments ----------------------------------------------------------------------------------------
    @staticmethod
    def _prefix(prefix: str) -> str:
        try:
            return "/".join(check_prefix(prefix))
        except (TypeError, ValueError) as e:
            raise BadRequest(str(e)) from None

    def _open(self, cur: Any, prefix: str, info: dict[str, Any], source: str) -> tuple[dict[str, Any], bool]:
        cur.execute("INSERT INTO experiments (prefix, info) VALUES (%s, %s) ON CONFLICT (prefix) DO NOTHING "
                    "RETURNING id", (prefix, _encode(b.new_info(prefix, info))))
        created = cur.fetchone() is not None
        exp_id, text = cur.execute("SELECT id, info FROM experiments WHERE prefix = %s FOR UPDATE",
                                   (prefix,)).fetchone()
        row = cur.execute("SELECT mark FROM marks WHERE exp_id = %s AND key = 'info' AND source = %s",
                          (exp_id, source)).fetchone()
        exp = json.loads(text)
        mark = b.merge_info(exp, info, row[0] if row else None)
        cur.execute("UPDATE experiments SET info = %s WHERE id = %s", (_encode(exp), exp_id))
        if mark is not None:
            self._set_mark(cur, exp_id, "info", source, mark)
        return exp, created

    @staticmethod
    def _set_mark(cur: Any, exp_id: int, key: str, source: str, mark: str) -> None:
        cur.execute("INSERT INTO marks (exp_id, key, source, mark) VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT (exp_id, key, source) DO UPDATE SET mark = EXCLUDED.mark",
                    (exp_id, key, source, mark))

    def open_experiment(self, prefix: str, info: dict[str, Any], source: str) -> tuple[dict[str, Any], bool]:
        p = self._prefix(prefix)
        if not isinstance(info, dict):
            raise BadRequest("'info' must be an object")
        with self._tx() as cur:
            return self._open(cur, p, info, source)

    def _ensure(self, cur: Any, prefix: str) -> int:
        """The experiment's id; appends to an experiment nobody opened (a wiped database) create it."""
        row = cur.execute("SELECT id FROM experiments WHERE prefix = %s", (prefix,)).fetchone()
        if row is None:
            self._open(cur, prefix, {}, "anonymous")
            row = cur.execute("SELECT id FROM experiments WHERE prefix = %s", (prefix,)).fetchone()
        return int(row[0])

    def set_params(self, prefix: str, data: Any, version: Any, source: str) -> bool:
        p = self._prefix(prefix)
        data = b.check_params(data, version)
        with self._tx() as cur:
            exp_id = self._ensure(cur, p)
            (text,) = cur.execute("SELECT params FROM experiments WHERE id = %s FOR UPDATE", (exp_id,)).fetchone()
            row = cur.execute("SELECT mark FROM marks WHERE exp_id = %s AND key = 'params' AND source = %s",
                              (exp_id, source)).fetchone()
            if version is not None and row is not None and version <= int(row[0]):
                return False  # a retried or stale version: already applied
            params = b.new_params(json.loads(text) if text else None, dict(data))
            cur.execute("UPDATE experiments SET params = %s WHERE id = %s", (_encode(params), exp_id))
            if version is not None:
                self._set_mark(cur, exp_id, "params", source, str(version))
        return True

    # ---- streams --------------------------------------------------------------------------------------------
    def _lock_stream(self, cur: Any, exp_id: int, kind: str, name: str, source: str) -> tuple[int, int, Any, int, int]:
        """Lock the stream (created on first use) for this transaction: (id, next, meta, source id, mark)."""
        lock = "SELECT id, next, meta FROM streams WHERE exp_id = %s AND kind = %s AND name = %s FOR UPDATE"
        row = cur.execute(lock, (exp_id, kind, name)).fetchone()
        if row is None:
            cur.execute("INSERT INTO streams (exp_id, kind, name) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                        (exp_id, kind, name))
            row = cur.execute(lock, (exp_id, kind, name)).fetchone()
        sid, nxt, meta = row
        mark = "SELECT id, mark FROM stream_sources WHERE stream_id = %s AND source = %s"
        found = cur.execute(mark, (sid, source)).fetchone()
        if found is None:  # the stream is locked: no other transaction adds this source meanwhile
            found = cur.execute("INSERT INTO stream_sources (stream_id, source) VALUES (%s, %s) RETURNING id, mark",
                                (sid, source)).fetchone()
        src_id, pos = found
        return sid, int(nxt), json.loads(meta) if meta else None, src_id, int(pos)

    @staticmethod
    def _commit_stream(cur: Any, sid: int, nxt: int, meta: str | None, src_id: int, mark: int) -> None:
        cur.execute("WITH s AS (UPDATE streams SET next = %s, meta = %s WHERE id = %s) "
                    "UPDATE stream_sources SET mark = %s WHERE id = %s", (nxt, meta, sid, mark, src_id))

    def _copy(self, cur: Any, chunks: Iterator[bytes]) -> None:
        """COPY formatted rows in (``rows.Kept.chunks``: each line its COPY columns and the stored JSON line); a
        row already stored past this source's mark refuses the batch whole, as in `_insert_rows`."""
        try:
            with cur.copy("COPY stream_rows (stream_id, idx, source_id, src_pos, body) FROM STDIN") as cp:
                for data in chunks:  # COPY's text format: a backslash is doubled (JSON holds no raw tab/newline)
                    cp.write(data.replace(b"\\", b"\\\\") if b"\\" in data else data)
        except self._unique as e:
            raise RuntimeError(f"a row already stored past this source's mark ({e.diag.message_primary}); "
                               "the batch is refused whole") from None

    def _insert_rows(self, cur: Any, sid: int, first: int, src_id: int,
                     rows: list[tuple[int | None, dict[str, Any]]]) -> None:
        """COPY the rows in, ``CHUNK`` at a time, each chunk's text formatted in one pass (`jsonio.join_lines`:
        the line a `.dash` folder holds). A row already stored past this source's mark (the marks said new, the
        unique constraint says stored) refuses the batch whole: never a gap."""
        copy = "COPY stream_rows (stream_id, idx, source_id, src_pos, body) FROM STDIN"
        head = b"%d\t%%d\t%d\t%%s\t" % (sid, src_id)
        try:
            with cur.copy(copy) as cp:
                for k in range(0, len(rows), CHUNK):
                    part = rows[k:k + CHUNK]
                    base = first + k

                    def line(j: int, text: bytes, part: list[tuple[int | None, dict[str, Any]]] = part,
                             base: int = base) -> bytes:
                        pos = part[j][0]
                        # COPY's text format: a backslash is doubled; JSON text holds no raw tab or newline
                        return head % (base + j, b"\\N" if pos is None else b"%d" % pos) + \
                            text.replace(b"\\", b"\\\\") + b"\n"

                    cp.write(join_lines([r for _, r in part], line))
        except self._unique as e:
            raise RuntimeError(f"a row already stored past this source's mark ({e.diag.message_primary}); "
                               "the batch is refused whole") from None

    def _completed(self, sid: int, kind: str, before: int, after: int) -> None:
        """After a commit: when the append completed a block of rows, its columns are built in the background."""
        from .pgcols import BLOCK

        if after // BLOCK > before // BLOCK:
            self._blocks.due(sid, kind)

    def _append_indexed(self, prefix: str, kind: str, name: str, field: str, recs: list[dict[str, Any]],
                        source: str) -> dict[str, int]:
        p = self._prefix(prefix)
        metric = kind == "metrics"
        with self._tx() as cur:
            exp_id = self._ensure(cur, p)
            sid, nxt, meta, src_id, mark = self._lock_stream(cur, exp_id, kind, name, source)
            kept = keep_indexed(recs, field, mark, nxt, metric)
            if kept.count:
                self._copy(cur, kept.chunks(b"%d\t%%d\t%d\t%%d\t" % (sid, src_id)))
                self._commit_stream(cur, sid, kept.next, _encode(b.metric_meta(meta, name, kept.next)) if metric
                                    else None, src_id, kept.mark)
        if kept.count:
            self._completed(sid, kind, nxt, kept.next)
        return {"received": len(recs), "stored": kept.count, "next": kept.mark}

    def append_logs(self, prefix: str, records: Any, source: str) -> dict[str, int]:
        return self._append_indexed(prefix, "logs", "", "sequenceNumber", b.check_logs(records), source)

    def append_metrics(self, prefix: str, name: str, records: Any, source: str) -> dict[str, int]:
        recs = b.check_metrics(name, records)
        return self._append_indexed(prefix, "metrics", "/".join(metric_segments(name)), "index", recs, source)

    def append_tracks(self, prefix: str, topic: str, entries: Any, offset: Any, end: Any, offsets: Any,
                      source: str) -> dict[str, int]:
        p = self._prefix(prefix)
        entries = b.check_tracks(topic, entries, offset, end, offsets)
        with self._tx() as cur:
            exp_id = self._ensure(cur, p)
            sid, nxt, meta, src_id, mark = self._lock_stream(cur, exp_id, "tracks", topic, source)
            keep, new_mark = b.track_keep(entries, offset, end, offsets, mark)
            if keep:
                self._insert_rows(cur, sid, nxt, src_id, keep)
                meta = b.track_meta(meta, topic, [e for _, e in keep])
            self._commit_stream(cur, sid, nxt + len(keep), _encode(meta) if meta is not None else None, src_id,
                                new_mark)
        self._completed(sid, "tracks", nxt, nxt + len(keep))
        return {"received": len(entries), "stored": len(keep), "next": new_mark}

    # ---- files ----------------------------------------------------------------------------------------------
    def has_file(self, prefix: str, fid: str) -> bool:
        p = self._prefix(prefix)
        with self._tx() as cur:
            return cur.execute("SELECT 1 FROM files f JOIN experiments e ON e.id = f.exp_id WHERE e.prefix = %s "
                               "AND f.id = %s", (p, fid)).fetchone() is not None

    def incoming(self) -> Path:
        return self._staging / f"{uuid.uuid4().hex}.part"

    def publish_file(self, prefix: str, staged: Path, entry: dict[str, Any]) -> bool:
        p = self._prefix(prefix)
        if self.has_file(p, entry["id"]):
            return False
        # the content first: an index entry never points at a missing object (a crash in between leaves an
        # object that the client's retry overwrites with the same bytes)
        try:
            self.objects.put(object_key(p, entry), staged)
        except Exception as e:  # the object store's own errors: the client retries later
            raise b.Unavailable(f"file store unavailable: {type(e).__name__}: {e}") from None
        with self._tx() as cur:
            exp_id = self._ensure(cur, p)
            cur.execute("INSERT INTO files (exp_id, id, entry) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                        (exp_id, entry["id"], _encode(entry)))
            return bool(cur.rowcount == 1)

    # ---- reads ----------------------------------------------------------------------------------------------
    def experiments(self) -> list[tuple[str, dict[str, Any]]]:
        with self._tx() as cur:
            rows = cur.execute('SELECT prefix, info FROM experiments ORDER BY prefix COLLATE "C"').fetchall()
        return [(p, json.loads(i)) for p, i in rows]

    def info(self, prefix: str) -> dict[str, Any] | None:
        p = self._prefix(prefix)
        with self._tx() as cur:
            row = cur.execute("SELECT info FROM experiments WHERE prefix = %s", (p,)).fetchone()
        return json.loads(row[0]) if row else None

    def params(self, prefix: str) -> dict[str, Any]:
        p = self._prefix(prefix)
        with self._tx() as cur:
            row = cur.execute("SELECT params FROM experiments WHERE prefix = %s", (p,)).fetchone()
        return json.loads(row[0]) if row and row[0] else {"version": 0, "data": {}}

    def names(self, prefix: str, kind: str) -> list[str]:
        p = self._prefix(prefix)
        with self._tx() as cur:
            rows = cur.execute("SELECT s.name FROM streams s JOIN experiments e ON e.id = s.exp_id "
                               "WHERE e.prefix = %s AND s.kind = %s AND s.next > 0", (p, kind)).fetchall()
        return sorted(r[0] for r in rows)

    def rows(self, prefix: str, kind: str, name: str | None = None, start: int = 0,
             limit: int | None = None) -> tuple[int, list[dict[str, Any]]]:
        total, texts = self.rows_json(prefix, kind, name, start, limit)
        return total, json.loads("[" + ",".join(texts) + "]")

    def rows_json(self, prefix: str, kind: str, name: str | None = None, start: int = 0,
                  limit: int | None = None) -> tuple[int, list[str]]:
        b.check_kind(kind, name)
        p = self._prefix(prefix)
        key = "" if kind == "logs" else "/".join(metric_segments(name)) if kind == "metrics" else str(name)
        with self._tx() as cur:
            row = cur.execute("SELECT s.id, s.next FROM streams s JOIN experiments e ON e.id = s.exp_id "
                              "WHERE e.prefix = %s AND s.kind = %s AND s.name = %s", (p, kind, key)).fetchone()
            if row is None:
                return 0, []
            sid, total = row
            stop = total if limit is None else min(total, start + limit)
            if stop <= start:  # nothing past ``start``: a live poll's usual answer, one query
                return int(total), []
            bodies = cur.execute("SELECT body FROM stream_rows WHERE stream_id = %s AND idx >= %s AND idx < %s "
                                 "ORDER BY idx", (sid, start, stop)).fetchall()
        return int(total), [r[0] for r in bodies]

    def files(self, prefix: str) -> list[dict[str, Any]]:
        p = self._prefix(prefix)
        with self._tx() as cur:
            rows = cur.execute("SELECT f.entry FROM files f JOIN experiments e ON e.id = f.exp_id "
                               "WHERE e.prefix = %s ORDER BY f.n", (p,)).fetchall()
        out = [json.loads(r[0]) for r in rows]
        return [e for e in out if not e.get("deletedAt")]

    def file_content(self, prefix: str, fid: str) -> tuple[dict[str, Any], Path | Iterator[bytes]] | None:
        p = self._prefix(prefix)
        for e in self.files(p):
            if e.get("id") == fid:
                content = self.objects.get(object_key(p, e))
                return None if content is None else (e, content)
        return None

    # ---- summaries and columns (pgread.py) ------------------------------------------------------------------
    def summaries(self, last: list[tuple[str, str]] | None = None) -> list[dict[str, Any]]:
        return self._reads.summaries(last)

    def summaries_json(self, last: list[tuple[str, str]] | None = None) -> bytes:
        return self._reads.summaries_json(last)

    def show(self, prefix: str) -> dict[str, Any] | None:
        return self._reads.show(prefix)

    def columns(self, prefix: str, kind: str, name: str | None, fields: Any = None) -> Any:
        return self._reads.columns(prefix, kind, name, fields)
