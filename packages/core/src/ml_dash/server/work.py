"""Where the work of a JSON write request runs (parse the body, check it, store it), and how many bytes of request
bodies may be in flight at once.

`Budget`: a request takes its body's declared size (``Content-Length``; a body without one takes the whole
budget) from a budget of ``max_inflight`` bytes *before* its body is read, and gives it back when its work is
done. While the budget is spent the others wait with their bodies unread (TCP back-pressure: their senders wait
too); one that waits longer than `WAIT` seconds is answered 503 with ``Retry-After``, and its client retries.

`Work`: the bodies are parsed and stored in worker processes (``workers`` > 0: each rebuilds the engine from
``backend.spec``), so neither parsing megabytes of JSON nor formatting rows ever holds the event loop that answers
``/health``, and the server uses more than one core; without workers (or for an engine built in-process without a
``spec``) on threads of the server process. `Workers`: each worker process has a socket pair to the event loop,
which sends it one request at a time (its operation, then the body's bytes as received, not pickled) and reads
back the pickled answer; no executor threads, no copy of the body but the kernel's. The engines guard every stream with locks that hold across
processes (POSIX record locks for the folder engine, row locks for PostgreSQL), so any number of workers append to
one store safely.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import pickle
import signal
import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from orjson import loads as _fast_loads
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request

from .backend import Backend, BadRequest, Unavailable, check_source

WAIT = 30.0  # seconds a request waits for room in the budget before it is answered 503


def parse(body: bytes | bytearray) -> dict[str, Any]:
    """The body as a JSON object, or `BadRequest` naming what is wrong with it. orjson first; what it refuses
    (NaN and infinities, lone surrogates, integers beyond 64 bits, deep nesting, bad input) goes to the standard
    parser, which reads the first three and names the problem of the others."""
    try:
        obj = _fast_loads(body)
    except ValueError:
        obj = None
    if obj is None:
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


def _create(store: Backend, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    prefix = body.get("prefix")
    if not isinstance(prefix, str):
        raise BadRequest("'prefix' (\"project/name\") is required")
    return store.open_experiment(prefix, body.get("info", {}), check_source(body.get("source")))


def _status(store: Backend, body: dict[str, Any], prefix: str) -> dict[str, Any]:
    return store.open_experiment(prefix, body.get("info", {}), check_source(body.get("source")))[0]


def _params(store: Backend, body: dict[str, Any], prefix: str) -> bool:
    return store.set_params(prefix, body.get("data"), body.get("version"), check_source(body.get("source")))


def _logs(store: Backend, body: dict[str, Any], prefix: str) -> dict[str, int]:
    return store.append_logs(prefix, body.get("records"), check_source(body.get("source")))


def _metric(store: Backend, body: dict[str, Any], prefix: str, name: str) -> dict[str, int]:
    return store.append_metrics(prefix, name, body.get("records"), check_source(body.get("source")))


def _track(store: Backend, body: dict[str, Any], prefix: str, topic: str) -> dict[str, int]:
    return store.append_tracks(prefix, topic, body.get("entries"), body.get("offset"), body.get("end"),
                               body.get("offsets"), check_source(body.get("source")))


OPS: dict[str, Callable[..., Any]] = {"create": _create, "status": _status, "params": _params, "logs": _logs,
                                      "metric": _metric, "track": _track}


def run(store: Backend, op: str, args: tuple[str, ...], body: bytes | bytearray) -> Any:
    return OPS[op](store, parse(body), *args)


# ---- the worker processes ------------------------------------------------------------------------------------
_worker_store: Backend | None = None
_worker_spec: tuple[Callable[..., Backend], tuple[Any, ...]] | None = None


def _die_with_parent(parent: int) -> None:
    """A worker never outlives its server (a server killed with SIGKILL leaves no orphans behind)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass
    if os.getppid() != parent:  # the server died before the line above
        os._exit(0)


def _init_worker(spec: tuple[Callable[..., Backend], tuple[Any, ...]], parent: int) -> None:
    global _worker_spec
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the server, which stops its workers
    _worker_spec = spec
    try:  # open the engine now, before this worker takes a request: the first requests do not wait for it (on a
        _store()  # loaded machine, connecting and importing take longer than a client's timeout)
    except Exception:  # the database is down: the first request opens it (a 503 until then), as before
        pass


def _store() -> Backend:
    """The worker's engine, opened on its first request (a database that is down then is a 503, retried, not a
    worker that fails to start)."""
    global _worker_store
    if _worker_store is None:
        assert _worker_spec is not None
        factory, args = _worker_spec
        try:
            _worker_store = factory(*args)
        except (OSError, RuntimeError) as e:
            raise Unavailable(f"{e}; nothing of this request was stored; retry later") from None
    return _worker_store


def _in_worker(op: str, args: tuple[str, ...], body: bytes | bytearray) -> Any:
    try:
        return run(_store(), op, args, body)
    finally:
        if len(body) > TRIM_OVER:
            del body
            trim()


TRIM_OVER = 1024 * 1024


def _libc_trim() -> Callable[[], None]:
    try:
        import ctypes

        fn = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return lambda: None
    return lambda: fn(0) and None


trim = _libc_trim()
"""Give the heap's free memory back to the system: after a large body, the parsed rows are freed, but glibc
keeps the space (and raises its mmap threshold, so the next large body lands on the heap too)."""


_HEAD = struct.Struct("<IQ")  # a request to a worker: the pickled (op, args)'s length, the body's length
_LEN = struct.Struct("<Q")  # an answer: the pickled ("ok", result) or ("err", exception)'s length


def _recv_exact(sock: socket.socket, n: int) -> bytearray | None:
    """``n`` bytes from the socket, or None when the server closed it (it is stopping)."""
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = sock.recv_into(view[got:])
        if not k:
            return None
        got += k
    return buf


def _worker_main(sock: socket.socket, spec: tuple[Callable[..., Backend], tuple[Any, ...]], parent: int) -> None:
    """A worker process: runs the requests the server sends on ``sock``, one at a time, until it closes it."""
    _init_worker(spec, parent)
    while True:
        head = _recv_exact(sock, _HEAD.size)
        if head is None:
            return
        mlen, blen = _HEAD.unpack(head)
        meta = _recv_exact(sock, mlen)
        body = _recv_exact(sock, blen)
        if meta is None or body is None:
            return
        try:
            op, args = pickle.loads(meta)
            answer: tuple[str, Any] = ("ok", _in_worker(op, args, body))
        except BaseException as e:  # noqa: BLE001 - handed to the server, which raises it for the request
            answer = ("err", e)
        del body
        try:
            out = pickle.dumps(answer)
        except Exception:  # noqa: BLE001 - an exception that does not pickle: its text
            out = pickle.dumps(("err", RuntimeError(f"{type(answer[1]).__name__}: {answer[1]}")))
        sock.sendall(_LEN.pack(len(out)) + out)


class WorkerDied(RuntimeError):
    pass


class Workers:
    """``n`` worker processes, each with its socket to this event loop; a request takes an idle one (or waits for
    one), sends its operation and body, and reads the answer. A worker that dies (out of memory, killed) is
    replaced, and its request answered 503."""

    def __init__(self, n: int, spec: tuple[Callable[..., Backend], tuple[Any, ...]]) -> None:
        self.n, self.spec = n, spec
        self._ctx = multiprocessing.get_context("spawn")
        self._idle: asyncio.Queue[tuple[Any, socket.socket]] | None = None
        self._all: list[tuple[Any, socket.socket]] = []
        self._closed = False

    def _spawn(self) -> tuple[Any, socket.socket]:
        ours, theirs = socket.socketpair()
        proc = self._ctx.Process(target=_worker_main, args=(theirs, self.spec, os.getpid()), daemon=True)
        proc.start()
        theirs.close()
        ours.setblocking(False)
        w = (proc, ours)
        self._all.append(w)
        return w

    def start(self) -> None:
        """Start the worker processes (in the background: they import and open the engine meanwhile)."""
        if self._idle is None:
            self._idle = asyncio.Queue()
            for _ in range(self.n):
                self._idle.put_nowait(self._spawn())

    async def call(self, op: str, args: tuple[str, ...], body: bytes | bytearray) -> Any:
        if self._idle is None:
            self.start()
        assert self._idle is not None
        w = await self._idle.get()
        # shielded: a request cancelled midway still reads its answer, so the worker's socket stays in step
        kind, value = await asyncio.shield(self._exchange(w, op, args, body))
        if kind == "ok":
            return value
        raise value

    async def _exchange(self, w: tuple[Any, socket.socket], op: str, args: tuple[str, ...],
                        body: bytes | bytearray) -> tuple[str, Any]:
        assert self._idle is not None
        proc, sock = w
        loop = asyncio.get_running_loop()
        try:
            meta = pickle.dumps((op, args))
            await loop.sock_sendall(sock, _HEAD.pack(len(meta), len(body)) + meta)
            await loop.sock_sendall(sock, memoryview(body))
            head = await self._read(loop, sock, _LEN.size)
            out = await self._read(loop, sock, _LEN.unpack(head)[0])
        except (OSError, EOFError, WorkerDied):
            await loop.run_in_executor(None, self._bury, w)
            if not self._closed:
                self._idle.put_nowait(await loop.run_in_executor(None, self._spawn))
            return "err", Unavailable("a worker process of the server stopped (out of memory?) while storing this "
                                      "request; retry it (what was committed is not stored twice)")
        self._idle.put_nowait(w)
        try:
            return pickle.loads(out)  # type: ignore[no-any-return]
        except Exception as e:  # noqa: BLE001 - an exception that does not unpickle here: its text
            return "err", RuntimeError(f"the worker's answer could not be read: {type(e).__name__}: {e}")

    @staticmethod
    async def _read(loop: asyncio.AbstractEventLoop, sock: socket.socket, n: int) -> bytearray:
        buf = bytearray(n)
        view, got = memoryview(buf), 0
        while got < n:
            k = await loop.sock_recv_into(sock, view[got:])
            if not k:
                raise WorkerDied
            got += k
        return buf

    def _bury(self, w: tuple[Any, socket.socket]) -> None:
        proc, sock = w
        if w in self._all:
            self._all.remove(w)
        sock.close()
        if proc.is_alive():
            proc.kill()
        proc.join(1)

    def close(self) -> None:
        """Stop the workers: each sees its socket close, finishes its request and exits."""
        self._closed = True
        workers, self._all = self._all, []
        for _, sock in workers:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for proc, sock in workers:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(1)
            sock.close()


class Budget:
    """Bytes in flight: ``take(n)`` waits until ``n`` more fit (or nothing else is taken), at most ``wait`` s."""

    def __init__(self, total: int, wait: float = WAIT) -> None:
        self.total = max(1, total)
        self.wait = wait
        self.used = 0
        self._cond: asyncio.Condition | None = None

    @asynccontextmanager
    async def take(self, n: int) -> AsyncIterator[None]:
        n = max(1, min(n, self.total))
        if self._cond is None:
            self._cond = asyncio.Condition()
        cond = self._cond
        async with cond:
            try:
                await asyncio.wait_for(cond.wait_for(lambda: self.used == 0 or self.used + n <= self.total),
                                       self.wait)
            except asyncio.TimeoutError:
                raise HTTPException(503, f"the server is busy: {self.used} bytes of request bodies are in flight "
                                         f"(the limit is {self.total}); nothing of this request was read; retry",
                                    {"Retry-After": "2"}) from None
            self.used += n
        try:
            yield
        finally:
            async with cond:
                self.used -= n
                cond.notify_all()


class Work:
    """Runs the JSON write operations within the byte budget: in ``workers`` worker processes when the engine
    has a ``spec`` to rebuild itself from, else on threads of this process."""

    def __init__(self, store: Backend, max_body: int, *, workers: int = 0, max_inflight: int | None = None,
                 wait: float = WAIT) -> None:
        self.store = store
        self.max_body = max_body
        self.budget = Budget(max_inflight or max_body, wait)
        spec = getattr(store, "spec", None)
        self.workers = workers if spec is not None else 0
        self._pool = Workers(self.workers, spec) if self.workers and spec is not None else None

    def start(self) -> None:
        """Start the worker processes now, in the background (the server answers meanwhile; a request that comes
        first waits for them)."""
        if self._pool is not None:
            self._pool.start()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()

    async def __call__(self, request: Request, op: str, *args: str) -> Any:
        return await self.raw(request.scope, request.receive, op, *args)

    async def raw(self, scope: Any, receive: Any, op: str, *args: str) -> Any:
        """Read the request's body (ASGI ``receive``) within the budget and run ``op`` on it."""
        limit = int(scope.get("state", {}).get("ml_dash_limit") or self.max_body)
        expected = limit
        for k, v in scope.get("headers") or ():
            if k == b"content-length":
                try:
                    expected = int(v)
                except ValueError:
                    pass
                break
        async with self.budget.take(expected):
            body = bytearray()  # one copy of the body here (orjson and json read a bytearray as they read bytes)
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientDisconnect()
                body += message.get("body", b"")
                if len(body) > limit:
                    raise HTTPException(413, f"request body exceeds the limit of {limit} bytes")
                if not message.get("more_body", False):
                    break
            try:
                if self._pool is None:
                    return await run_in_threadpool(run, self.store, op, args, body)
                return await self._pool.call(op, args, body)
            finally:
                if len(body) > TRIM_OVER:
                    del body
                    await run_in_threadpool(trim)
