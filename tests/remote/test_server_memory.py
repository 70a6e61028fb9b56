"""The server's memory is bounded under concurrent maximum-size bodies: bytes in flight are budgeted (one
maximum-size body at a time), JSON is parsed in a worker process, and /health keeps answering meanwhile. Every
row of every body is stored exactly once."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

MAX_BODY_MB = 8
N_BODIES = 6


def _rss_tree(pid: int) -> int:
    """Resident bytes of a process and its descendants (the server and its worker processes), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def _body(k: int, size: int) -> bytes:
    """A JSON body of metric rows just under ``size`` bytes."""
    row = '{"index": %d, "data": {"step": %d, "loss": 0.123456789, "acc": 0.5, "tag": "xxxxxxxxxxxxxxxxxxxx", "_ts": 1.7e9}}'
    n = size // (len(row % (10**6, 10**6)) + 2) - 10
    return (f'{{"source": "s{k}", "records": [' + ", ".join(row % (i, i) for i in range(n)) + "]}").encode()


def test_rss_stays_bounded_under_concurrent_max_size_bodies(make_server: Any) -> None:
    server = make_server("--max-body-mb", str(MAX_BODY_MB), "--no-fsync")
    limit = MAX_BODY_MB * 1024 * 1024
    bodies = [_body(k, limit - 4096) for k in range(N_BODIES)]
    assert all(limit // 2 < len(b) <= limit for b in bodies)
    headers = {"Authorization": f"Bearer {server.token}", "Content-Type": "application/json"}
    with server.client() as c:
        assert c.post("/api/v1/experiments", json={"prefix": "proj/mem", "info": {}}).status_code == 201

    def warm(k: int) -> None:  # concurrent 1 MiB bodies first: both worker processes run before the baseline
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

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_tree(server.proc.pid))
            t = time.perf_counter()
            assert httpx.get(server.url + "/health", timeout=30).status_code == 200
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
    grown = peak[0] - idle
    # the published bound (docs/server.md): idle RSS + 16 x the body limit, whatever the concurrency;
    # unbounded, six concurrent 8 MiB bodies parsed at once took 380 MiB more
    assert grown < 16 * limit, f"RSS grew by {grown / 2**20:.0f} MiB (idle {idle / 2**20:.0f} MiB)"
    print(f"\nidle {idle / 2**20:.0f} MiB, peak {peak[0] / 2**20:.0f} MiB; /health max "
          f"{max(health) * 1000:.0f} ms over {len(health)} probes")
