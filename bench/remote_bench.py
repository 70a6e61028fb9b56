"""Remote mode against an `ml-dash serve` on loopback (started here, token auth on, fsync per request).

    .venv/bin/python bench/remote_bench.py [--rows 50000] [--calls 50000] [--no-fsync] [--ingest]

Prints:
  upload throughput   rows/s uploaded, two ways: `ml-dash sync`'s path (a finished local run pushed with
                      sync_dir) and live (log N rows with dash_url=..., then flush() returns once all are on the
                      server; time from the first call to flush's return). Batches of metric_batch_size (100 by
                      default; also shown at 1,000).
  per-call latency    exp.metrics("train").log(...) median / p99 / mean, in the training loop:
                      local only (no dash_url), remote with the server up, and remote with the server DOWN
                      (nothing listening: every upload attempt fails and is retried with backoff).
  server ingest       (--ingest, or --database URL) acknowledged rows/s when 32 writers (threads posting batches
                      of metric rows straight to the API, each its own run, as 32 training processes would,
                      bodies built beforehand) write to one folder server and, with --database, to --servers
                      server processes on that PostgreSQL database; with the server's CPU time per row (its
                      processes and their worker processes, psutil), the rows/s that makes per server core, and
                      that CPU as a multiple of a floor measured in the same run (orjson parsing the same bodies
                      and formatting each row again, in the bench process: the least a JSON-lines server does).
                      Then RSS and /health answer times while --load-bodies concurrent 32 MiB bodies arrive,
                      and (PostgreSQL) the time to read one --read-rows stream back through the API.
  PostgreSQL reads    with --database URL (alone with --reads-only): one --read-rows stream's columns through
                      GET .../columns/metrics/train?format=binary from a fresh server process with no column blocks
                      stored (rows copied out of the database and parsed; the read stores the blocks), again (the
                      server's memory), in the JSON form, and from fresh server processes once the blocks are
                      stored (as the server builds them while rows arrive; the time to build them is shown),
                      against np.load of the same columns; then `ml-dash ls --url` of --ls-runs runs (10,000) and
                      its route (the first listing makes and keeps every summary), against `ml-dash --help` in a
                      new process. The stream and the runs are seeded in
                      bulk in the shapes the engine stores; use an empty database (ls lists every run in it).
                      Wall seconds, and CPU seconds of the server process (and of the command): the CPU figures
                      hold on a loaded machine, the wall ones do not.
Numbers vary with the machine; compare rows within one run.

    .venv/bin/python bench/remote_bench.py --ingest [--database postgresql://user@127.0.0.1:5432/bench]
        [--writers 32] [--batch 1000] [--ingest-rows 320000] [--read-rows 0] [--no-fsync] [--baseline CHECKOUT]
        [--baseline-database postgresql://user@127.0.0.1:5432/bench_old]
    .venv/bin/python bench/remote_bench.py --database postgresql://user@127.0.0.1:5432/empty --reads-only
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ns = time.perf_counter_ns
TOKEN = "bench-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(root: Path, port: int, *extra: str, src: str | None = None) -> subprocess.Popen[bytes]:
    """An ``ml-dash serve`` process; ``src``: a checkout whose ``packages/core/src`` it runs instead (a baseline)."""
    import httpx

    env = {k: v for k, v in os.environ.items() if not k.startswith("ML_DASH_")}
    if src:
        env["PYTHONPATH"] = str(Path(src) / "packages" / "core" / "src")
    p = subprocess.Popen([sys.executable, "-m", "ml_dash.cli", "serve", "--root", str(root), "--port", str(port),
                          "--token", TOKEN, *extra], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return p
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


def _tree(pid: int) -> list[object]:
    """The server process and its descendants (worker processes), as psutil processes."""
    import psutil

    try:
        proc = psutil.Process(pid)
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system) of the server processes and their children, live and reaped."""
    import psutil

    total = 0.0
    for pid in pids:
        for proc in _tree(pid):
            try:
                t = proc.cpu_times()  # type: ignore[attr-defined]
            except psutil.NoSuchProcess:
                continue
            total += t.user + t.system + t.children_user + t.children_system
    return total


def rss_bytes(pid: int) -> int:
    import psutil

    total = 0
    for proc in _tree(pid):
        try:
            total += proc.memory_info().rss  # type: ignore[attr-defined]
        except psutil.NoSuchProcess:
            continue
    return total


def ingest(urls: list[str], pids: list[int], writers: int, rows: int, batch: int, tag: str) -> tuple[float, float]:
    """(acknowledged rows/s, server CPU microseconds per row): ``writers`` threads, each posting ``rows // writers``
    rows of its own run in batches, bodies built beforehand (the clients' own cost is one HTTP request each)."""
    import json
    import threading

    import httpx

    per = rows // writers
    bodies = [[json.dumps({"source": f"w{k}", "records": [
        {"index": i, "data": {"step": i, "loss": 1.0 / (i + 1), "acc": 0.5, "_ts": 1.7e9 + i / 1000}}
        for i in range(s, min(s + batch, per))]}).encode() for s in range(0, per, batch)] for k in range(writers)]
    errors: list[str] = []
    acked = [0] * writers
    clients = [httpx.Client(base_url=urls[k % len(urls)], timeout=120, headers={
        "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}) for k in range(writers)]
    for k, c in enumerate(clients):
        c.post("/api/v1/experiments", json={"prefix": f"bench/{tag}-w{k}", "info": {}, "source": f"w{k}"})
    go = threading.Barrier(writers + 1)

    def run(k: int) -> None:
        c = clients[k]
        go.wait()
        for body in bodies[k]:
            r = c.post(f"/api/v1/experiments/bench%2F{tag}-w{k}/metrics/train", content=body)
            if r.status_code != 200:
                errors.append(r.text)
            else:
                acked[k] += r.json()["stored"]

    threads = [threading.Thread(target=run, args=(k,)) for k in range(writers)]
    for th in threads:
        th.start()
    cpu0 = cpu_seconds(pids)
    go.wait()
    t = time.perf_counter()
    for th in threads:
        th.join()
    dt = time.perf_counter() - t
    cpu = cpu_seconds(pids) - cpu0
    for c in clients:
        c.close()
    assert not errors, errors[:3]
    assert sum(acked) == per * writers, (sum(acked), per * writers)
    return sum(acked) / dt, cpu / sum(acked) * 1e6


def _database_pid(url: str) -> int | None:
    """The PostgreSQL server's main process (the parent of a connection's backend) when it runs on this machine."""
    import psutil
    import psycopg

    try:
        with psycopg.connect(url) as conn:
            (backend,) = conn.execute("SELECT pg_backend_pid()").fetchone()  # type: ignore[misc]
        return int(psutil.Process(backend).ppid())
    except (psycopg.Error, psutil.Error):
        return None


def floor_cpu(rows: int, batch: int) -> float:
    """CPU microseconds per row of the least any server storing these rows as JSON lines does, in this process:
    orjson parses the same bodies and formats every row again (no HTTP, no checks, no disk)."""
    import json

    import orjson

    bodies = [json.dumps({"source": "f", "records": [
        {"index": i, "data": {"step": i, "loss": 1.0 / (i + 1), "acc": 0.5, "_ts": 1.7e9 + i / 1000}}
        for i in range(s, min(s + batch, rows))]}).encode() for s in range(0, rows, batch)]
    t = time.process_time()
    for body in bodies:
        b"".join([orjson.dumps(r) + b"\n" for r in orjson.loads(body)["records"]])
    return (time.process_time() - t) / rows * 1e6


_SEND = """
import http.client, sys
host, port, path, token, body_file = sys.argv[1:]
body = open(body_file, "rb").read()
import time
while True:  # as the client does: a 503 (the server's byte budget stayed full) is retried after Retry-After
    c = http.client.HTTPConnection(host, int(port), timeout=600)
    c.request("POST", path, body, {"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    r = c.getresponse()
    r.read()
    c.close()
    if r.status != 503:
        sys.exit(0 if r.status == 200 else 1)
    time.sleep(float(r.getheader("Retry-After") or 1))
"""


def health_under_load(url: str, pid: int, n: int, size: int, tmp: Path) -> tuple[float, float, int, int]:
    """(/health median ms, max ms, idle RSS, peak RSS) while ``n`` client processes each send a body of ``size``
    bytes at once (separate processes, so the probe's timing is the server's, not the senders')."""
    import httpx

    row = '{"index": %d, "data": {"step": %d, "loss": 0.123456789, "acc": 0.5, "_ts": 1700000000.5}}'
    count = size // (len(row % (10**7, 10**7)) + 2) - 10
    body_file = tmp / "load-body.json"
    body_file.write_bytes(('{"source": "load", "records": [' + ", ".join(row % (i, i) for i in range(count))
                           + "]}").encode())
    httpx.post(f"{url}/api/v1/experiments", json={"prefix": "bench/load", "info": {}},
               headers={"Authorization": f"Bearer {TOKEN}"})
    idle = rss_bytes(pid)
    peak, times = idle, []
    host, port = url.rsplit("//", 1)[1].split(":")
    senders = [subprocess.Popen([sys.executable, "-c", _SEND, host, port,
                                 f"/api/v1/experiments/bench%2Fload/metrics/load{k}", TOKEN, str(body_file)])
               for k in range(n)]
    with httpx.Client(timeout=60) as c:
        while any(p.poll() is None for p in senders):
            t = time.perf_counter()
            c.get(f"{url}/health")
            times.append(time.perf_counter() - t)
            peak = max(peak, rss_bytes(pid))
            time.sleep(0.02)
    assert all(p.returncode == 0 for p in senders), [p.returncode for p in senders]
    times.sort()
    return times[len(times) // 2] * 1e3, times[-1] * 1e3, idle, peak


def read_back(url: str, pid: int, rows: int, batch: int) -> tuple[float, float]:
    """(seconds to store one ``rows`` stream, seconds to read it back through the paged metric route)."""
    import httpx

    t = time.perf_counter()
    tag = f"big-{time.time_ns()}"
    ingest([url], [pid], 1, rows, batch, tag)
    stored = time.perf_counter() - t
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120) as c:
        t = time.perf_counter()
        start, got = 0, 0
        while True:
            page = c.get(f"/api/v1/experiments/bench%2F{tag}-w0/metrics/train", params={"start": start}).json()
            got += len(page["records"])
            start += len(page["records"])
            if start >= page["total"] or not page["records"]:
                break
        dt = time.perf_counter() - t
    assert got == rows, got
    return stored, dt


def bench_servers(database: str | None, servers: int, writers: int, rows: int, batch: int, read_rows: int,
                  load_bodies: int, extra: list[str], baseline: str | None = None,
                  baseline_database: str | None = None) -> None:
    """Server ingest on the folder engine and, with ``database``, on PostgreSQL (``servers`` processes)."""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        procs = []
        try:
            engines: list[tuple[str, list[str], list[int]]] = []
            for label, src in ([("", None)] + ([(" [baseline]", baseline)] if baseline else [])):
                on = (baseline_database or database) if src else database  # an older schema needs its own
                folder_port = free_port()
                procs.append(start_server(tmp / f"folder{label}", folder_port, *extra, src=src))
                engines.append((f".dash folder, 1 server process{label}", [f"http://127.0.0.1:{folder_port}"],
                                [procs[-1].pid]))
                if on:
                    urls, pids = [], []
                    for _ in range(servers):
                        port = free_port()
                        procs.append(start_server(tmp / "objects", port, "--database", on, *extra, src=src))
                        urls.append(f"http://127.0.0.1:{port}")
                        pids.append(procs[-1].pid)
                    engines.append((f"PostgreSQL, {servers} server process(es){label}", urls, pids))
            engines.sort(key=lambda e: e[0])  # each engine next to its baseline
            stamp = time.time_ns()  # fresh runs: on a database kept between benches nothing is deduplicated
            print(f"server ingest ({rows:,} metric rows, {writers} writers, batches of {batch}; "
                  f"{'no fsync' if '--no-fsync' in extra else 'durable before ack'}; load {os.getloadavg()[0]:.2f})")
            db = _database_pid(database) if database else None
            print(f"  {'engine':<44} {'rows/s':>10} {'server CPU/row':>15} {'rows/s per core':>16} "
                  f"{'x floor':>8}{'  database CPU/row' if db else ''}")
            for k, (name, urls, pids) in enumerate(engines):
                ingest(urls, pids, writers, min(rows, writers * batch), batch, f"warm{k}-{stamp}")  # workers up
                floor = floor_cpu(min(rows, 100_000), batch)
                on_db = db is not None and "PostgreSQL" in name
                db0 = cpu_seconds([db]) if on_db else 0.0  # type: ignore[list-item]
                rate, cpu = ingest(urls, pids, writers, rows, batch, f"e{k}-{stamp}")
                dbcpu = f"{(cpu_seconds([db]) - db0) / rows * 1e6:>15.1f} us" if on_db else ""  # type: ignore[list-item]
                floor = min(floor, floor_cpu(min(rows, 100_000), batch))
                print(f"  {name:<44} {rate:>10,.0f} {cpu:>12.1f} us {1e6 / cpu:>16,.0f} {cpu / floor:>8.1f}{dbcpu}")
            print("  (x floor: server CPU per row / the CPU per row of orjson parsing the same bodies and "
                  "formatting each row, in this process, measured next to each engine)")
            if db:
                print("  (database CPU: the PostgreSQL server's processes, when it runs on this machine)")
            if load_bodies:
                size = 32 * 2**20 - 4096
                print(f"\nserver under {load_bodies} concurrent 32 MiB bodies (the default --max-body-mb)")
                print(f"  {'engine':<44} {'RSS idle -> peak':>20} {'/health median':>15} {'max':>8}")
                for name, urls, pids in engines:
                    med, worst, idle, peak = health_under_load(urls[0], pids[0], load_bodies, size, tmp)
                    print(f"  {name:<44} {idle / 2**20:>8.0f} -> {peak / 2**20:>5.0f} MiB {med:>12.0f} ms "
                          f"{worst:>5.0f} ms")
            if read_rows and database:
                print(f"\none stream of {read_rows:,} rows (PostgreSQL): store, then read back through the API")
                stored, dt = read_back(engines[-1][1][0], engines[-1][2][0], read_rows, batch)
                print(f"  stored in {stored:.2f} s, read back in {dt:.2f} s")
        finally:
            for p in procs:
                p.terminate()
                p.wait(10)


def _seed_stream(database: str, prefix: str, rows: int) -> None:
    """One metric stream of ``rows`` rows: the first 1,000 stored through the engine (experiment, stream, source,
    metadata as an upload makes them), the rest of the same shape generated by the database in one statement."""
    import psycopg
    from ml_dash.server import backend as b
    from ml_dash.server.objects import open_objects
    from ml_dash.server.pg import PgBackend

    with tempfile.TemporaryDirectory() as d:
        pgb = PgBackend(database, open_objects(d))
        try:
            pgb.open_experiment(prefix, {"status": "COMPLETED"}, "bench")
            first = min(rows, 1000)
            pgb.append_metrics(prefix, "train", [{"index": i, "data": {"step": i, "loss": 1.0 / (i + 1), "acc": i * 0.001,
                                                                     "_ts": 1.7e9 + i * 0.01}} for i in range(first)],
                               "bench")
        finally:
            pgb.close()
    if rows <= first:
        return
    with psycopg.connect(database) as conn, conn.transaction():
        sid, meta, src = conn.execute(
            "SELECT s.id, s.meta, ss.id FROM streams s JOIN experiments e ON e.id = s.exp_id JOIN stream_sources ss "
            "ON ss.stream_id = s.id WHERE e.prefix = %s AND s.kind = 'metrics' AND s.name = 'train'", (prefix,)).fetchone()
        conn.execute(
            "INSERT INTO stream_rows (stream_id, idx, source_id, src_pos, body) SELECT %s, i, %s, i, "
            "'{\"index\": ' || i || ', \"data\": {\"step\": ' || i || ', \"loss\": ' || (1.0 / (i + 1))::float8 || "
            "', \"acc\": ' || (i * 0.001)::float8 || ', \"_ts\": ' || (1.7e9 + i * 0.01)::float8 || "
            "'}, \"createdAt\": \"2026-01-01T00:00:00.000000Z\"}' FROM generate_series(%s::bigint, %s::bigint) i",
            (sid, src, first, rows - 1))
        conn.execute("UPDATE streams SET next = %s, meta = %s WHERE id = %s",
                     (rows, b.encode(b.metric_meta(__import__("json").loads(meta), "train", rows)), sid))
        conn.execute("UPDATE stream_sources SET mark = %s WHERE id = %s", (rows, src))


def _seed_runs(database: str, tag: str, runs: int) -> None:
    """``runs`` finished runs (params, tags, a 10-row train stream and a 1-row eval stream each), written in bulk
    in the shapes the engine stores."""
    import json

    import psycopg
    from ml_dash.server import backend as b
    from ml_dash.server.pg import migrate

    with psycopg.connect(database) as conn:
        migrate(conn)  # an empty database: the schema a server creates
    with psycopg.connect(database) as conn, conn.transaction():
        cur = conn.cursor()
        with cur.copy("COPY experiments (prefix, info, params) FROM STDIN") as cp:
            for k in range(runs):
                prefix = f"{tag}/run-{k:05d}"
                info = b.new_info(prefix, {})
                info.update(status="COMPLETED", tags=["sweep"] if k % 2 else [], endedAt="2026-01-01T01:00:00.000000Z",
                            updated_at="2026-01-01T01:00:00.000000Z")
                params = {"version": 1, "data": {"lr": 10 ** -(k % 5), "batch": 32 * (1 + k % 4), "model.depth": k % 7}}
                cp.write_row((prefix, b.encode(info), b.encode(params)))
        ids = dict(cur.execute("SELECT prefix, id FROM experiments WHERE prefix LIKE %s", (tag + "/%",)).fetchall())
        with cur.copy("COPY streams (exp_id, kind, name, next, meta) FROM STDIN") as cp:
            for eid in ids.values():
                for name, n in (("train", 10), ("eval", 1)):
                    cp.write_row((eid, "metrics", name, n, b.encode(b.metric_meta(None, name, n))))
        sids = cur.execute("SELECT s.id, s.name FROM streams s JOIN experiments e ON e.id = s.exp_id "
                           "WHERE e.prefix LIKE %s", (tag + "/%",)).fetchall()
        with cur.copy("COPY stream_rows (stream_id, idx, body) FROM STDIN") as cp:
            for sid, name in sids:
                for i in range(10 if name == "train" else 1):
                    cp.write_row((sid, i, json.dumps({"index": i, "data": {"step": i, "loss": 1 / (i + 1)},
                                                      "createdAt": "2026-01-01T00:00:00.000000Z"})))


def _build_blocks(database: str, prefix: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) to build every block of one stream, as an append that completes
    blocks has the server do, after dropping the ones a read stored."""
    import psycopg
    from ml_dash.server import pgcols
    from ml_dash.server.objects import open_objects
    from ml_dash.server.pg import PgBackend

    with psycopg.connect(database, autocommit=True) as conn:
        (sid,) = conn.execute("SELECT s.id FROM streams s JOIN experiments e ON e.id = s.exp_id WHERE e.prefix = %s "
                              "AND s.kind = 'metrics' AND s.name = 'train'", (prefix,)).fetchone()
        conn.execute("DELETE FROM stream_blocks WHERE stream_id = %s", (sid,))
    with tempfile.TemporaryDirectory() as d:
        pgb = PgBackend(database, open_objects(d), migrate=False)
        try:
            c, t = time.process_time(), time.perf_counter()
            pgcols.build(pgb._reads, sid, "metrics")
            return time.perf_counter() - t, time.process_time() - c
        finally:
            pgb.close()


def bench_pg_reads(database: str, read_rows: int, ls_runs: int, reps: int = 3) -> None:
    """Reading one ``read_rows`` stream's columns, and ``ml-dash ls --url`` of ``ls_runs`` runs, from a server
    on ``database``, next to floors measured in the same run."""
    import httpx
    import numpy as np
    from ml_dash.colview import unpack

    stamp = time.time_ns()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ML_DASH_")}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if read_rows:
            prefix = f"bench/read-{stamp}"
            t = time.perf_counter()
            _seed_stream(database, prefix, read_rows)
            print(f"one metric stream of {read_rows:,} rows (4 fields), seeded in {time.perf_counter() - t:.1f} s")
            path = "/api/v1/experiments/" + prefix.replace("/", "%2F") + "/columns/metrics/train"
            got: list[Any] = []

            def fresh_server() -> tuple[subprocess.Popen[bytes], httpx.Client]:
                port = free_port()
                proc = start_server(tmp / "objects", port, "--database", database)  # a fresh process: no memory
                return proc, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600,
                                          headers={"Authorization": f"Bearer {TOKEN}"})

            def read(c: httpx.Client) -> None:
                got.append(unpack(c.get(path, params={"format": "binary"}).content))

            proc, c = fresh_server()
            try:
                srv = lambda: _cpu(proc.pid)  # noqa: E731
                cold = _best(lambda: read(c), 1, srv)  # no blocks stored yet: every row parsed (and blocks stored)
                warm = _best(lambda: read(c), reps, srv)
                assert got[-1].rows == read_rows, got[-1]
                as_json = _best(lambda: c.get(path).raise_for_status(), 1, srv)
            finally:
                c.close()
                proc.terminate()
                proc.wait(10)
            parsed = got[-1]
            build = _build_blocks(database, prefix)  # what the server does in the background as rows arrive
            blocks = (math.inf, math.inf)
            for _ in range(reps):  # each a fresh server process: nothing in its memory, the blocks in the database
                proc, c = fresh_server()
                try:
                    blocks = min(blocks, _best(lambda: read(c), 1, lambda: _cpu(proc.pid)))  # noqa: B023
                finally:
                    c.close()
                    proc.terminate()
                    proc.wait(10)
            assert list(got[-1]) == list(parsed) and all(
                got[-1][k].tobytes() == parsed[k].tobytes() for k in parsed), "blocks differ from the parsed rows"
            cols = got[-1]
            np.save(tmp / "floor.npy", np.stack([cols[k].astype(np.float64) for k in cols]))
            floor = min(_timed(lambda: np.load(tmp / "floor.npy")) for _ in range(reps))
            print(f"  {'read through the API':<58} {'seconds':>8} {'x floor':>8} {'server CPU s':>13}")
            print(f"  {f'np.load of the same {len(cols)} columns (floor)':<58} {floor:>8.3f} {1:>8.1f} {'':>13}")
            for name, (sec, cpu) in (("columns, binary, fresh server, column blocks stored", blocks),
                                     ("columns, binary, fresh server, no blocks (rows parsed)", cold),
                                     ("columns, binary, again (server's memory)", warm),
                                     ("columns, JSON form, again", as_json)):
                print(f"  {name:<58} {sec:>8.3f} {sec / floor:>8.1f} {cpu:>13.2f}")
            sec, cpu = build
            print(f"  building the blocks of {read_rows:,} rows (done in the background as rows arrive): {sec:.2f} s, "
                  f"{cpu:.2f} CPU s in the building process ({cpu / read_rows * 1e6:.2f} us per row)")
        if ls_runs:
            tag = f"ls{stamp}"
            t = time.perf_counter()
            _seed_runs(database, tag, ls_runs)
            print(f"\n{ls_runs:,} runs (params, tags, 2 metric streams each) seeded in {time.perf_counter() - t:.1f} s; "
                  "`ml-dash ls --url` lists every run on the server")
            port = free_port()
            proc = start_server(tmp / "objects", port, "--database", database)
            url = f"http://127.0.0.1:{port}"
            try:
                cli = [sys.executable, "-m", "ml_dash.cli"]
                lenv = {**env, "ML_DASH_TOKEN": TOKEN}
                floor = _best(lambda: subprocess.run(cli + ["--help"], env=lenv, capture_output=True, check=True), reps,
                              _children_cpu)
                with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=600) as c:
                    srv = lambda: _cpu(proc.pid)  # noqa: E731
                    first = _best(lambda: c.get("/api/v1/runs").raise_for_status(), 1, srv)  # summaries made, kept
                    route = _best(lambda: c.get("/api/v1/runs").raise_for_status(), reps, srv)
                    route_last = _best(lambda: c.get("/api/v1/runs", params={"last": "train:loss"}).raise_for_status(),
                                       reps, srv)
                    total = len(c.get("/api/v1/runs").json()["runs"])
                out: list[str] = []

                def ls(*extra: str) -> None:
                    r = subprocess.run(cli + ["ls", "--url", url, *extra], env=lenv, capture_output=True, text=True,
                                       check=True)
                    out.append(r.stdout)

                def both(fn: Any) -> tuple[float, float]:  # the command's CPU plus the server's
                    return _best(fn, reps, lambda: _children_cpu() + _cpu(proc.pid))

                cli_t = both(ls)
                cli_m = both(lambda: ls("-m", "train:loss"))
                assert len(out[0].splitlines()) == total + 1, (total, out[0][:200])
            finally:
                proc.terminate()
                proc.wait(10)
            print(f"  {'(' + format(total, ',') + ' runs on the database)':<58} {'seconds':>8} {'x floor':>8} {'CPU s':>13}")
            for name, (sec, cpu) in (("`ml-dash --help` in a new process (floor)", floor),
                                     ("GET /api/v1/runs, first (every summary made and kept)", first),
                                     ("GET /api/v1/runs (the route ls calls; server CPU)", route),
                                     ("GET /api/v1/runs?last=train:loss", route_last),
                                     ("`ml-dash ls --url` (new process; its CPU + server's)", cli_t),
                                     ("`ml-dash ls --url -m train:loss`", cli_m)):
                print(f"  {name:<58} {sec:>8.3f} {sec / floor[0]:>8.1f} {cpu:>13.2f}")


def _timed(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _best(fn: Any, reps: int, cpu: Any) -> tuple[float, float]:
    """(wall seconds, CPU seconds of ``cpu()``'s process) of the fastest of ``reps`` calls."""
    best = (math.inf, math.inf)
    for _ in range(reps):
        c = cpu()
        w = _timed(fn)
        best = min(best, (w, cpu() - c))
    return best


def bench_sync(url: str, tmp: Path, rows: int, batch: int) -> float:
    from ml_dash import Experiment
    from ml_dash.buffer import BufferConfig
    from ml_dash.layout import ExperimentDir
    from ml_dash.replicate import sync_dir
    from ml_dash.stores.remote import RemoteStore

    root = tmp / f"sync{batch}"
    prefix = f"bench/sync{batch}"
    e = Experiment(prefix, dash_root=root, buffer_config=BufferConfig(quiet=True))
    e.run.start()
    m = e.metrics("train")
    for i in range(rows):
        m.log(step=i, loss=0.5, acc=0.9)
    e.run.complete()
    cfg = BufferConfig(metric_batch_size=batch, quiet=True)
    jdir = ExperimentDir(root, prefix)
    store = RemoteStore(url, prefix, cfg, folder=jdir.path, token=TOKEN)
    t = time.perf_counter()
    rep = sync_dir(jdir, store, cfg)
    dt = time.perf_counter() - t
    store.close()
    assert rep.error is None and rep.sent["metrics"] == rows, (rep.error, rep.sent)
    return rows / dt


def bench_live(url: str, tmp: Path, rows: int, batch: int) -> float:
    from ml_dash import Experiment
    from ml_dash.buffer import BufferConfig

    os.environ["ML_DASH_TOKEN"] = TOKEN
    e = Experiment(f"bench/live{batch}", dash_root=tmp / f"live{batch}", dash_url=url,
                   buffer_config=BufferConfig(metric_batch_size=batch, flush_interval=0.5, quiet=True))
    e.run.start()
    m = e.metrics("train")
    t = time.perf_counter()
    for i in range(rows):
        m.log(step=i, loss=0.5, acc=0.9)
    ok = e.flush(timeout=120)
    dt = time.perf_counter() - t
    e.run.complete()
    assert ok
    return rows / dt


def latency(tmp: Path, name: str, url: str | None, calls: int) -> tuple[float, float, float]:
    from ml_dash import Experiment
    from ml_dash.buffer import BufferConfig

    os.environ["ML_DASH_TOKEN"] = TOKEN
    e = Experiment(f"bench/lat-{name}", dash_root=tmp / f"lat-{name}", dash_url=url,
                   buffer_config=BufferConfig(flush_interval=0.5, close_timeout=1, quiet=True))
    e.run.start()
    m = e.metrics("train")
    lat = [0] * calls
    t0 = ns()
    for i in range(calls):
        a = ns()
        m.log(step=i, loss=0.5, acc=0.9)
        lat[i] = ns() - a
        if i % 1000 == 999:
            time.sleep(0.002)  # a training step's worth of other work, so the background threads run
    mean = (ns() - t0) / calls / 1e3
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        e.run.complete()
    lat.sort()
    return lat[calls // 2] / 1e3, lat[int(calls * 0.99)] / 1e3, mean


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--calls", type=int, default=50_000)
    ap.add_argument("--no-fsync", action="store_true", help="run the server with --no-fsync")
    ap.add_argument("--database", help="measure server ingest on this PostgreSQL database (postgresql://...)")
    ap.add_argument("--servers", type=int, default=2, help="server processes on the database (default 2)")
    ap.add_argument("--writers", type=int, default=32, help="concurrent writers for the ingest bench (default 32)")
    ap.add_argument("--ingest-rows", type=int, default=320_000, help="rows for the ingest bench (default 320,000)")
    ap.add_argument("--batch", type=int, default=1000, help="rows per request in the ingest bench (default 1,000)")
    ap.add_argument("--ingest", action="store_true", help="only the server ingest bench (folder engine, and "
                    "PostgreSQL with --database)")
    ap.add_argument("--baseline-database", metavar="URL", help="the database for the baseline's servers (default: "
                    "--database; an older ml-dash refuses a database a newer one migrated)")
    ap.add_argument("--baseline", metavar="CHECKOUT", help="also measure servers running the sources of this "
                    "checkout (e.g. a `git worktree` of an older commit), in the same run")
    ap.add_argument("--load-bodies", type=int, default=3, help="concurrent 32 MiB bodies for /health under load "
                    "(0: skip)")
    ap.add_argument("--read-rows", type=int, default=1_000_000, help="rows of the read-back stream (0: skip)")
    ap.add_argument("--ls-runs", type=int, default=10_000, help="runs listed by the `ml-dash ls --url` bench (0: skip)")
    ap.add_argument("--reads-only", action="store_true", help="with --database: only the column and ls benches")
    a = ap.parse_args()
    import warnings

    warnings.simplefilter("ignore")
    if a.database or a.ingest:
        if not a.reads_only:
            bench_servers(a.database, a.servers, a.writers, a.ingest_rows, a.batch,
                          a.read_rows if a.database else 0, a.load_bodies, ["--no-fsync"] if a.no_fsync else [],
                          a.baseline, a.baseline_database)
        if a.database:
            print()
            bench_pg_reads(a.database, a.read_rows, a.ls_runs)
        return
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        port = free_port()
        server = start_server(tmp / "server", port, *(["--no-fsync"] if a.no_fsync else []))
        url = f"http://127.0.0.1:{port}"
        try:
            how = "no fsync" if a.no_fsync else "fsync per request"
            print(f"upload throughput ({a.rows:,} metric rows, loopback server, {how})")
            print(f"  {'path':<34} {'batch':>6} {'rows/s':>10}")
            for batch in (100, 1000):
                print(f"  {'sync_dir (ml-dash sync)':<34} {batch:>6} {bench_sync(url, tmp, a.rows, batch):>10,.0f}")
                print(f"  {'live: log N rows, flush() returns':<34} {batch:>6} {bench_live(url, tmp, a.rows, batch):>10,.0f}")
            print(f"\nper-call latency of metrics(...).log ({a.calls:,} calls), microseconds")
            print(f"  {'mode':<28} {'median':>8} {'p99':>8} {'mean':>8}")
            for name, u in (("local only", None), ("remote, server up", url)):
                med, p99, mean = latency(tmp, name.replace(" ", "").replace(",", ""), u, a.calls)
                print(f"  {name:<28} {med:>8.2f} {p99:>8.2f} {mean:>8.2f}")
        finally:
            server.terminate()
            server.wait(10)
        down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        med, p99, mean = latency(tmp, "down", down, a.calls)
        print(f"  {'remote, server DOWN':<28} {med:>8.2f} {p99:>8.2f} {mean:>8.2f}")


if __name__ == "__main__":
    main()
