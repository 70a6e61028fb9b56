"""The work behind each JSON write request (parse the body, check it, append it), and where it runs.

Bytes in flight are bounded: a request takes its body's size from a budget of ``max_body`` bytes before its body
is read (a request with a larger or unknown size takes the whole budget), and gives it back when its work is done,
so at most one maximum-size body (or many small ones) is being read, parsed and stored at any time; the others wait
unread (the client's send waits too). Small bodies are handled on a thread of the server process; larger ones
(over ``SMALL_BODY``) in a worker process, so parsing megabytes of JSON never holds the event loop (``/health``
keeps answering) and their Python objects never stay in the server process. Every step of the storage is
guarded by file locks, so worker processes and threads append to one root safely.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import asynccontextmanager
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request

from .storage import BadRequest, ServerRoot, check_source

SMALL_BODY = 256 * 1024
WORKERS = 1  # bodies over SMALL_BODY are parsed one at a time anyway (the budget): one process to bound


def parse(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or BadRequest naming what is wrong with it."""
    try:
        obj = json.loads(body)
    except RecursionError:
        raise BadRequest("the body nests JSON too deeply") from None
    except UnicodeDecodeError as e:
        raise BadRequest(f"the body is not valid UTF-8 ({e.reason} at byte {e.start})") from None
    except ValueError as e:  # also integers of more digits than Python converts
        raise BadRequest(f"the body is not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise BadRequest("the body must be a JSON object")
    return obj


def _create(store: ServerRoot, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    prefix = body.get("prefix")
    if not isinstance(prefix, str):
        raise BadRequest("'prefix' (\"project/name\") is required")
    return store.open_experiment(prefix, body.get("info", {}), check_source(body.get("source")))


def _status(store: ServerRoot, body: dict[str, Any], prefix: str) -> dict[str, Any]:
    return store.open_experiment(prefix, body.get("info", {}), check_source(body.get("source")))[0]


def _params(store: ServerRoot, body: dict[str, Any], prefix: str) -> bool:
    return store.set_params(prefix, body.get("data"), body.get("version"), check_source(body.get("source")))


def _logs(store: ServerRoot, body: dict[str, Any], prefix: str) -> dict[str, int]:
    return store.append_logs(prefix, body.get("records"), check_source(body.get("source")))


def _metric(store: ServerRoot, body: dict[str, Any], prefix: str, name: str) -> dict[str, int]:
    return store.append_metrics(prefix, name, body.get("records"), check_source(body.get("source")))


def _track(store: ServerRoot, body: dict[str, Any], prefix: str, topic: str) -> dict[str, int]:
    return store.append_tracks(prefix, topic, body.get("entries"), body.get("offset"), body.get("end"),
                               body.get("offsets"), check_source(body.get("source")))


OPS: dict[str, Callable[..., Any]] = {"create": _create, "status": _status, "params": _params, "logs": _logs,
                                      "metric": _metric, "track": _track}


def run(store: ServerRoot, op: str, args: tuple[str, ...], body: bytes) -> Any:
    return OPS[op](store, parse(body), *args)


_worker_store: ServerRoot | None = None


def _init_worker(root: str, fsync: bool) -> None:
    global _worker_store
    _worker_store = ServerRoot(root, fsync=fsync)


def _in_worker(op: str, args: tuple[str, ...], body: bytes) -> Any:
    assert _worker_store is not None
    return run(_worker_store, op, args, body)


class Budget:
    """Bytes in flight: ``take(n)`` waits until ``n`` more fit (or nothing else is taken)."""

    def __init__(self, total: int) -> None:
        self.total = max(1, total)
        self.used = 0
        self._cond = asyncio.Condition()

    @asynccontextmanager
    async def take(self, n: int) -> AsyncIterator[None]:
        n = max(1, min(n, self.total))
        async with self._cond:
            await self._cond.wait_for(lambda: self.used == 0 or self.used + n <= self.total)
            self.used += n
        try:
            yield
        finally:
            async with self._cond:
                self.used -= n
                self._cond.notify_all()


class Work:
    """Runs the write operations of the JSON routes within the byte budget, small ones here, large ones in a
    worker process."""

    def __init__(self, store: ServerRoot, max_body: int, fsync: bool) -> None:
        self.store = store
        self.max_body = max_body
        self.fsync = fsync
        self.budget = Budget(max_body)
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_init_worker, initargs=(str(self.store.root), self.fsync))
        return self._pool

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    async def __call__(self, request: Request, op: str, *args: str) -> Any:
        limit = int(request.scope.get("state", {}).get("ml_dash_limit") or self.max_body)
        try:
            expected = int(request.headers.get("content-length", limit))
        except ValueError:
            expected = limit
        async with self.budget.take(expected):
            chunks = []
            n = 0
            async for chunk in request.stream():
                n += len(chunk)
                if n > limit:
                    raise HTTPException(413, f"request body exceeds the limit of {limit} bytes")
                chunks.append(chunk)
            body = b"".join(chunks)
            del chunks
            if len(body) <= SMALL_BODY:
                return await run_in_threadpool(run, self.store, op, args, body)
            loop = asyncio.get_running_loop()
            try:
                return await loop.run_in_executor(self._executor(), _in_worker, op, args, body)
            except BrokenProcessPool:
                self.close()
                raise HTTPException(503, "the server's worker process stopped (out of memory?); nothing of this "
                                         "request was committed; retry", {"Retry-After": "5"}) from None
