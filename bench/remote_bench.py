"""Remote mode against an `ml-dash serve` on loopback (started here, token auth on, fsync per request).

    .venv/bin/python bench/remote_bench.py [--rows 50000] [--calls 50000] [--no-fsync] [--load-bodies 3]

Prints:
  upload throughput   rows/s uploaded, two ways: `ml-dash sync`'s path (a finished local run pushed with
                      sync_dir) and live (log N rows with dash_url=..., then flush() returns once all are on the
                      server; time from the first call to flush's return). Batches of metric_batch_size (100 by
                      default; also shown at 1,000).
  server ingest       acknowledged rows/s when C clients POST metric batches straight to the server at once, and
                      the server's CPU time per row (its process and its worker processes, from /proc)
  server under load   /health answer times and the server's RSS while N concurrent maximum-size (32 MiB)
                      bodies are sent (--load-bodies N; 0 to skip)
  per-call latency    exp.metrics("train").log(...) median / p99 / mean, in the training loop:
                      local only (no dash_url), remote with the server up, and remote with the server DOWN
                      (nothing listening: every upload attempt fails and is retried with backoff).
Numbers vary with the machine; compare rows within one run.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ns = time.perf_counter_ns
TOKEN = "bench-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(root: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    import httpx

    env = {k: v for k, v in os.environ.items() if not k.startswith("ML_DASH_")}
    p = subprocess.Popen([sys.executable, "-m", "ml_dash.cli", "serve", "--root", str(root), "--port", str(port),
                          "--token", TOKEN, *extra], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return p
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


def _tree(pid: int) -> list[int]:
    """The process and its descendants (the server and its worker processes)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pid: int) -> float:
    total = 0.0
    for p in _tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def rss_bytes(pid: int) -> int:
    total = 0
    for p in _tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def bench_ingest(url: str, pid: int, rows: int, batch: int, clients: int) -> tuple[float, float]:
    """(acknowledged rows/s, server CPU microseconds per row) for ``clients`` threads POSTing batches."""
    import threading

    import httpx

    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    per = rows // clients
    httpx.post(f"{url}/api/v1/experiments", json={"prefix": f"bench/ingest{batch}x{clients}", "info": {}},
               headers=headers)
    acked = [0] * clients

    def client(k: int) -> None:
        import json

        with httpx.Client(headers=headers, timeout=60) as c:
            for start in range(0, per, batch):
                recs = [{"index": i, "data": {"step": i, "loss": 0.5, "acc": 0.9, "_ts": 1.7e9 + i}}
                        for i in range(start, min(per, start + batch))]
                r = c.post(f"{url}/api/v1/experiments/bench%2Fingest{batch}x{clients}/metrics/m{k}",
                           content=json.dumps({"source": f"c{k}", "records": recs}))
                r.raise_for_status()
                acked[k] += r.json()["stored"]

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    cpu0, t = cpu_seconds(pid), time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    dt, cpu = time.perf_counter() - t, cpu_seconds(pid) - cpu0
    assert sum(acked) == per * clients, acked
    return sum(acked) / dt, cpu / sum(acked) * 1e6


_SEND = """
import http.client, sys
host, port, path, token, body_file = sys.argv[1:]
body = open(body_file, "rb").read()
c = http.client.HTTPConnection(host, int(port), timeout=600)
c.request("POST", path, body, {"Authorization": "Bearer " + token, "Content-Type": "application/json"})
r = c.getresponse()
sys.exit(0 if r.status == 200 else r.status)
"""


def bench_health_under_load(url: str, pid: int, n: int, size: int, tmp: Path) -> tuple[float, float, int, int]:
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
    ap.add_argument("--load-bodies", type=int, default=3, help="concurrent 32 MiB bodies for the load test")
    a = ap.parse_args()
    import warnings

    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        port = free_port()
        server = start_server(tmp / "server", port, *(["--no-fsync"] if a.no_fsync else []))
        url = f"http://127.0.0.1:{port}"
        try:
            how = "no fsync" if a.no_fsync else "fsync per request"
            print(f"server ingest ({a.rows:,} metric rows POSTed straight to the server, {how})")
            print(f"  {'clients':>7} {'batch':>6} {'rows/s':>10} {'server CPU us/row':>18}")
            for clients, batch in ((1, 100), (4, 100), (4, 1000)):
                rate, cpu = bench_ingest(url, server.pid, a.rows, batch, clients)
                print(f"  {clients:>7} {batch:>6} {rate:>10,.0f} {cpu:>18.1f}")
            if a.load_bodies:
                med, worst, idle, peak = bench_health_under_load(url, server.pid, a.load_bodies, 32 * 2**20 - 4096,
                                                                  tmp)
                print(f"\nserver under {a.load_bodies} concurrent 32 MiB bodies: /health median {med:.0f} ms, max "
                      f"{worst:.0f} ms; RSS {idle / 2**20:.0f} MiB idle, {peak / 2**20:.0f} MiB peak")
            print(f"\nupload throughput ({a.rows:,} metric rows, loopback server, {how})")
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
