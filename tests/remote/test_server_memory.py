"""The server's memory is bounded under concurrent maximum-size bodies: bytes in flight are budgeted (one
maximum-size body at a time by default), JSON is parsed in a worker process, and /health keeps answering
meanwhile. Every row of every body is stored exactly once. Both engines."""

from __future__ import annotations

import threading
import time
from typing import Any
from urllib.parse import quote

import httpx
import pytest

MAX_BODY_MB = 8
N_BODIES = 6


def _rss_tree(pid: int) -> int:
    """Resident bytes of the server process and its descendants (its worker processes)."""
    import psutil

    total = 0
    try:
        procs = [psutil.Process(pid)]
        procs += procs[0].children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def _body(k: int, size: int) -> bytes:
    """A JSON body of metric rows just under ``size`` bytes."""
    row = '{"index": %d, "data": {"step": %d, "loss": 0.123456789, "acc": 0.5, "tag": "xxxxxxxxxxxxxxxxxxxx", "_ts": 1.7e9}}'
    n = size // (len(row % (10**6, 10**6)) + 2) - 10
    return (f'{{"source": "s{k}", "records": [' + ", ".join(row % (i, i) for i in range(n)) + "]}").encode()


def test_rss_stays_bounded_under_concurrent_max_size_bodies(make_server: Any) -> None:
    server = make_server("--max-body-mb", str(MAX_BODY_MB), "--no-fsync", "--workers", "2", "--inflight-wait", "600")
    limit = MAX_BODY_MB * 1024 * 1024
    bodies = [_body(k, limit - 4096) for k in range(N_BODIES)]
    assert all(limit // 2 < len(b) <= limit for b in bodies)
    headers = {"Authorization": f"Bearer {server.token}", "Content-Type": "application/json"}
    with server.client() as c:
        assert c.post("/api/v1/experiments", json={"prefix": "proj/mem", "info": {}}).status_code == 201

    def warm(k: int) -> None:  # concurrent 1 MiB bodies first: every worker process has run before the baseline
        with httpx.Client(timeout=300) as c:
            assert c.post(f"{server.url}/api/v1/experiments/proj%2Fmem/metrics/warm{k}",
                          content=_body(90 + k, 1024 * 1024), headers=headers).status_code == 200

    warmers = [threading.Thread(target=warm, args=(k,)) for k in range(4)]
    for t in warmers:
        t.start()
    for t in warmers:
        t.join()
    idle = _rss_tree(server.proc.pid)

    peak = [idle]
    health: list[float] = []
    done = threading.Event()
    probe_errors: list[str] = []

    def watch() -> None:
        with httpx.Client(timeout=60) as c:
            while not done.is_set():
                peak[0] = max(peak[0], _rss_tree(server.proc.pid))
                t = time.perf_counter()
                r = c.get(server.url + "/health")
                if r.status_code != 200:
                    probe_errors.append(r.text)
                if not done.is_set():
                    health.append(time.perf_counter() - t)
                time.sleep(0.02)

    results: list[Any] = [None] * N_BODIES

    def send(k: int) -> None:
        with httpx.Client(timeout=300) as c:
            results[k] = c.post(f"{server.url}/api/v1/experiments/proj%2Fmem/metrics/{quote(f'm{k}')}",
                                content=bodies[k], headers=headers)

    w = threading.Thread(target=watch)
    w.start()
    senders = [threading.Thread(target=send, args=(k,)) for k in range(N_BODIES)]
    for t in senders:
        t.start()
    for t in senders:
        t.join()
    done.set()
    w.join()
    for k, r in enumerate(results):
        assert r.status_code == 200, r.text
        assert r.json()["stored"] == bodies[k].count(b'"index"')
    with server.client() as c:  # stored once each: a repeat of one body stores nothing
        r = c.post("/api/v1/experiments/proj%2Fmem/metrics/m0", content=bodies[0], headers=headers)
        assert r.status_code == 200 and r.json()["stored"] == 0, r.text
        page = c.get("/api/v1/experiments/proj%2Fmem/metrics/m0", params={"start": 0, "limit": 1}).json()
        assert page["total"] == bodies[0].count(b'"index"')
    grown = peak[0] - idle
    # the published bound (docs/server.md): idle RSS + 16 x the body limit, whatever the concurrency;
    # unbounded, six concurrent 8 MiB bodies parsed at once took 380 MiB more
    assert grown < 16 * limit, f"RSS grew by {grown / 2**20:.0f} MiB (idle {idle / 2**20:.0f} MiB)"
    # /health is answered by the event loop, which never parses a body: it kept answering throughout (the
    # bound is generous: the machine may be busy; docs/server.md has measured figures)
    assert not probe_errors, probe_errors[:3]
    assert len(health) >= 3, f"only {len(health)} /health probes answered while the bodies were stored"
    assert max(health) < 10, f"/health took {max(health):.1f} s while bodies were in flight"
    print(f"\nidle {idle / 2**20:.0f} MiB, peak {peak[0] / 2**20:.0f} MiB; /health max "
          f"{max(health) * 1000:.0f} ms, median {sorted(health)[len(health) // 2] * 1000:.0f} ms over "
          f"{len(health)} probes")


def test_a_request_past_the_wait_for_room_is_503_with_retry_after(make_server: Any) -> None:
    """When the budget stays spent, a request is answered 503 with Retry-After (retryable, nothing read),
    not held forever; the client retries. Here: one body sent slowly keeps the whole budget taken."""
    import socket

    server = make_server("--max-body-mb", "1", "--max-inflight-mb", "1", "--inflight-wait", "1")
    with server.client() as c:
        assert c.post("/api/v1/experiments", json={"prefix": "proj/busy", "info": {}}).status_code == 201
    host, port = "127.0.0.1", server.port
    slow = socket.create_connection((host, port))
    try:
        body_len = 1024 * 1024  # declares the whole budget, sends a few bytes, then waits
        slow.sendall((f"POST /api/v1/experiments/proj%2Fbusy/logs HTTP/1.1\r\nHost: x\r\n"
                      f"Authorization: Bearer {server.token}\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {body_len}\r\n\r\n").encode() + b'{"records": [')
        time.sleep(0.3)
        with server.client() as c:
            r = c.post("/api/v1/experiments/proj%2Fbusy/logs", json={"records": [
                {"sequenceNumber": 0, "level": "info", "message": "m"}]})
        assert r.status_code == 503, r.text
        assert "busy" in r.json()["detail"] and r.headers.get("retry-after")
    finally:
        slow.close()
    with server.client() as c:  # the budget is given back when the slow request ends
        r = c.post("/api/v1/experiments/proj%2Fbusy/logs", json={"records": [
            {"sequenceNumber": 0, "level": "info", "message": "m"}]})
        assert r.status_code == 200 and r.json()["stored"] == 1, r.text


@pytest.mark.parametrize("engine", ["folder"])  # the same code on both engines: once is enough
def test_worker_processes_never_outlive_a_killed_server(make_server: Any) -> None:
    """SIGKILL of the server takes its worker processes with it (no orphan keeps writing or holding memory)."""
    import psutil

    server = make_server("--workers", "2")
    with server.client() as c:
        assert c.post("/api/v1/experiments", json={"prefix": "proj/orphans", "info": {}}).status_code == 201
    workers = [p for p in psutil.Process(server.proc.pid).children(recursive=True)
               if "resource_tracker" not in " ".join(p.cmdline())]
    assert len(workers) >= 2, [p.cmdline() for p in workers]
    server.kill()
    gone, alive = psutil.wait_procs(workers, timeout=15)
    assert not alive, [p.pid for p in alive]
