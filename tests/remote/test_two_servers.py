"""Several `ml-dash serve` processes on one PostgreSQL database: 32 writers spread over two servers log to one
run, one server is killed mid-run, and every row is stored exactly once, renumbered into one gap-free index
sequence across both processes. Given both URLs, the clients fail over to the live server and finish while the
other is still down; given one URL, they retry until their server is back."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from ml_dash import Experiment, load
from ml_dash.buffer import BufferConfig

WRITERS = 32
ROWS = 600
PREFIX = "team/shared"


@pytest.fixture
def engine() -> str:
    return "postgres"  # overrides the folder/postgres parametrisation of conftest: this needs a database


def _writer(k: int, url: str | list[str], root: Path, halfway: threading.Semaphore, resume: threading.Event,
            errors: list[BaseException]) -> None:
    try:
        exp = Experiment(PREFIX, dash_root=root, dash_url=url,
                         buffer_config=BufferConfig(flush_interval=0.1, close_timeout=90, quiet=True))
        with exp.run as e:
            for i in range(ROWS):
                if i == ROWS // 2:  # the first half is logged (and partly uploaded) when the server dies
                    halfway.release()
                    resume.wait(60)
                e.metrics("train").log(w=k, i=i)
                if i % 100 == 0:
                    e.log(f"writer {k} at {i}")
                    time.sleep(0.01)
    except BaseException as err:  # noqa: BLE001  (reported by the test)
        errors.append(err)


@pytest.mark.parametrize("failover", [True, False], ids=["both-urls", "one-url"])
def test_two_servers_on_one_database_one_killed_mid_run(make_server: Any, tmp_path: Path, failover: bool) -> None:
    a, b = make_server(), make_server()
    errors: list[BaseException] = []
    halfway, resume = threading.Semaphore(0), threading.Event()
    if failover:  # half the writers start on a, half on b; a comma-separated string or a list
        urls: list[Any] = [f"{a.url},{b.url}" if k % 4 == 0 else [a.url, b.url] if k % 4 == 2 else [b.url, a.url]
                           for k in range(WRITERS)]
    else:
        urls = [(a, b)[k % 2].url for k in range(WRITERS)]
    threads = [threading.Thread(target=_writer, args=(k, urls[k], tmp_path / f"w{k}", halfway, resume, errors))
               for k in range(WRITERS)]
    for t in threads:
        t.start()
    for _ in range(WRITERS):
        assert halfway.acquire(timeout=120)
    a.kill()  # half the writers lose their server mid-run and go on logging
    resume.set()
    if failover:  # they move to b and finish while a is still down
        for t in threads:
            t.join(180)
        a.start()
    else:  # they retry until a is back
        time.sleep(1.0)
        a.start()
        for t in threads:
            t.join(180)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    view = load(PREFIX, dash_root=(a, b)[failover].root)
    rows = view.metrics("train").read()
    assert [r["index"] for r in rows] == list(range(WRITERS * ROWS))
    got = sorted((r["data"]["w"], r["data"]["i"]) for r in rows)
    assert got == [(k, i) for k in range(WRITERS) for i in range(ROWS)]  # every row exactly once
    for k in range(WRITERS):  # each writer's rows keep their order
        mine = [r["data"]["i"] for r in rows if r["data"]["w"] == k]
        assert mine == list(range(ROWS))
    logs = view.logs.read()
    assert [r["sequenceNumber"] for r in logs] == list(range(WRITERS * ROWS // 100))
    assert sorted(r["message"] for r in logs) == sorted(f"writer {k} at {i}" for k in range(WRITERS)
                                                        for i in range(0, ROWS, 100))
