"""The REST API (``/api/v1``) as a Starlette app. Reference: docs/api.md and ``GET /api/v1/openapi.json``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .. import __version__
from ..names import check_prefix
from ..reader import effective_status, merge_tracks
from . import reads
from .backend import Backend, BadRequest, Unavailable, storage_failure
from .folder import FolderBackend
from .guard import SEP, Guard
from .openapi import document
from .upload import TooLarge, receive_file
from .work import Work

MAX_PAGE = 100_000


class JSONNaN(JSONResponse):
    """Every JSON answer. Metric values may be NaN or infinite: written as the bare tokens Python's json reads
    back; non-ASCII as JSON \\u escapes, so any stored string (a lone surrogate too) is answered losslessly."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, allow_nan=True, separators=(",", ":")).encode()


def _attachment(filename: str) -> str:
    from urllib.parse import quote

    return f"attachment; filename*=utf-8''{quote(filename)}"


def _prefix(request: Request, key: str = "prefix") -> str:
    return str(request.path_params[key]).replace(SEP, "/")


def _range(request: Request) -> tuple[int, int]:
    try:
        start = int(request.query_params.get("start", 0))
        limit = int(request.query_params.get("limit", MAX_PAGE))
    except ValueError:
        raise HTTPException(400, "start and limit must be integers") from None
    if start < 0 or limit < 1:
        raise HTTPException(400, "start must be >= 0 and limit >= 1")
    return start, min(limit, MAX_PAGE)


def create_app(root: str | Path | Backend, tokens: list[str] | None = None, *, max_body: int = 32 * 1024 * 1024,
               max_file: int = 5 * 1024**3, fault_every: int = 0, stall_every: int = 0,
               stall_seconds: float = 0.0, fsync: bool = True, workers: int = 0,
               max_inflight: int | None = None, inflight_wait: float = 30.0) -> Any:
    """The ASGI app serving ``root``: a `.dash` folder, or any `Backend` (e.g. `pg.PgBackend`).
    ``tokens`` empty or None: no authentication. JSON write bodies are parsed and stored in ``workers`` worker
    processes (0: threads of this process), at most ``max_inflight`` bytes of them at once (default: one
    ``max_body``), a request waiting at most ``inflight_wait`` seconds for room (then 503); see `work`."""
    store = root if isinstance(root, Backend) else FolderBackend(root, fsync=fsync)
    limits = {"maxBodyBytes": max_body, "maxFileBytes": max_file}
    work = Work(store, max_body, workers=workers, max_inflight=max_inflight, wait=inflight_wait)

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        work.start()
        try:
            yield
        finally:
            await run_in_threadpool(work.close)

    def info_or_404(prefix: str) -> dict[str, Any]:
        info = store.info(prefix)
        if info is None:
            raise HTTPException(404, f"no experiment {prefix!r}")
        return info

    async def exists(prefix: str) -> None:
        await run_in_threadpool(info_or_404, prefix)

    async def health(request: Request) -> Response:
        return JSONNaN({"status": "ok", "version": __version__, "api": "v1", "limits": limits,
                             "auth": bool(tokens)})

    async def openapi(request: Request) -> Response:
        return JSONNaN(document(__version__))

    async def list_exps(request: Request) -> Response:
        exps = await run_in_threadpool(store.experiments)
        return JSONNaN({"experiments": [{"prefix": p, "status": effective_status(info),
                                              "updated_at": info.get("updated_at")} for p, info in exps]})

    async def create_exp(request: Request) -> Response:
        exp, created = await work(request, "create")
        return JSONNaN({"experiment": exp, "created": created, "limits": limits}, 201 if created else 200)

    async def get_exp(request: Request) -> Response:
        info = await run_in_threadpool(info_or_404, _prefix(request))
        return JSONNaN({"experiment": info, "status": effective_status(info)})

    async def put_status(request: Request) -> Response:
        return JSONNaN({"experiment": await work(request, "status", _prefix(request))})

    async def get_params(request: Request) -> Response:
        prefix = _prefix(request)
        await exists(prefix)
        return JSONNaN(await run_in_threadpool(store.params, prefix))

    async def put_params(request: Request) -> Response:
        return JSONNaN({"applied": await work(request, "params", _prefix(request))})

    async def page(request: Request, kind: str, name: str | None) -> Response:
        prefix = _prefix(request)
        await exists(prefix)
        start, limit = _range(request)
        total, rows = await run_in_threadpool(store.rows_json, prefix, kind, name, start, limit)
        body = '{"total":%d,"start":%d,"records":[%s]}' % (total, start, ",".join(rows))
        return Response(body.encode(), media_type="application/json")

    async def get_logs(request: Request) -> Response:
        return await page(request, "logs", None)

    async def post_logs(request: Request) -> Response:
        return JSONNaN(await work(request, "logs", _prefix(request)))

    async def list_metrics(request: Request) -> Response:
        prefix = _prefix(request)
        await exists(prefix)
        return JSONNaN({"metrics": await run_in_threadpool(store.names, prefix, "metrics")})

    async def get_metric(request: Request) -> Response:
        return await page(request, "metrics", _prefix(request, "name"))

    async def post_metric(request: Request) -> Response:
        return JSONNaN(await work(request, "metric", _prefix(request), _prefix(request, "name")))

    async def list_tracks(request: Request) -> Response:
        prefix = _prefix(request)
        await exists(prefix)
        return JSONNaN({"tracks": await run_in_threadpool(store.names, prefix, "tracks")})

    async def get_track(request: Request) -> Response:
        prefix = _prefix(request)
        await exists(prefix)
        _, rows = await run_in_threadpool(store.rows, prefix, "tracks", _prefix(request, "topic"))
        if request.query_params.get("merged", "true").lower() not in ("0", "false", "no"):
            rows = merge_tracks(rows)
        start, limit = _range(request)
        return JSONNaN({"total": len(rows), "start": start, "records": rows[start:start + limit]})

    async def post_track(request: Request) -> Response:
        return JSONNaN(await work(request, "track", _prefix(request), _prefix(request, "topic")))

    async def list_files(request: Request) -> Response:
        prefix = _prefix(request)
        await exists(prefix)
        return JSONNaN({"files": await run_in_threadpool(store.files, prefix)})

    async def get_file(request: Request) -> Response:
        prefix = _prefix(request)
        await exists(prefix)
        fid = request.path_params["id"]
        found = await run_in_threadpool(store.file_content, prefix, fid)
        if found is None:
            raise HTTPException(404, f"no file with id {fid!r}")
        e, content = found
        media = str(e.get("contentType") or "application/octet-stream")
        if isinstance(content, Path):
            return FileResponse(content, filename=str(e["filename"]), media_type=media)
        return StreamingResponse(iterate_in_threadpool(content), media_type=media,
                                 headers={"content-disposition": _attachment(str(e["filename"]))})

    async def post_file(request: Request) -> Response:
        prefix = _prefix(request)
        try:
            check_prefix(prefix)
        except (TypeError, ValueError) as e:
            raise BadRequest(str(e)) from None

        async def stream() -> AsyncIterator[bytes]:
            async for chunk in request.stream():
                yield chunk

        try:
            entry, staged = await receive_file(store, prefix, request.headers.get("content-type", ""), stream(),
                                               max_file, fsync)
        except TooLarge as e:
            raise HTTPException(413, str(e)) from None
        if staged is None:
            return JSONNaN({"file": entry, "stored": False})
        try:
            stored = await run_in_threadpool(store.publish_file, prefix, staged, entry)
        finally:
            staged.unlink(missing_ok=True)
        return JSONNaN({"file": entry, "stored": stored}, 201 if stored else 200)

    async def unavailable(request: Request, exc: Exception) -> Response:
        return JSONNaN({"detail": str(exc)}, 503, headers={"retry-after": "1"})

    async def bad_request(request: Request, exc: Exception) -> Response:
        return JSONNaN({"detail": str(exc)}, 400)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        detail = exc.detail
        if exc.status_code == 404 and detail == "Not Found":
            detail = ("no such route; names in paths are single percent-encoded segments "
                      "(prefix 'proj/exp' is 'proj%2Fexp'); see /api/v1/openapi.json")
        return JSONNaN({"detail": detail}, exc.status_code, headers=exc.headers)

    e = "/api/v1/experiments/{prefix}"
    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/api/v1/openapi.json", openapi, methods=["GET"]),
        Route("/api/v1/experiments", list_exps, methods=["GET"]),
        Route("/api/v1/experiments", create_exp, methods=["POST"]),
        Route(e, get_exp, methods=["GET"]),
        Route(e + "/status", put_status, methods=["PUT"]),
        Route(e + "/parameters", get_params, methods=["GET"]),
        Route(e + "/parameters", put_params, methods=["PUT"]),
        Route(e + "/logs", get_logs, methods=["GET"]),
        Route(e + "/logs", post_logs, methods=["POST"]),
        Route(e + "/metrics", list_metrics, methods=["GET"]),
        Route(e + "/metrics/{name}", get_metric, methods=["GET"]),
        Route(e + "/metrics/{name}", post_metric, methods=["POST"]),
        Route(e + "/tracks", list_tracks, methods=["GET"]),
        Route(e + "/tracks/{topic}", get_track, methods=["GET"]),
        Route(e + "/tracks/{topic}", post_track, methods=["POST"]),
        Route(e + "/files", list_files, methods=["GET"]),
        Route(e + "/files", post_file, methods=["POST"]),
        Route(e + "/files/{id}", get_file, methods=["GET"]),
    ]
    routes += reads.routes(store)  # ls, show, export against the server: docs/reading.md
    async def too_deep(request: Request, exc: Exception) -> Response:
        return JSONNaN({"detail": "the request nests JSON too deeply"}, 400)

    async def storage_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, OSError)
        status, detail = storage_failure(exc)
        return JSONNaN({"detail": detail}, status, headers={"Retry-After": "30"} if status >= 500 else None)

    handlers: dict[Any, Any] = {BadRequest: bad_request, Unavailable: unavailable, RecursionError: too_deep,
                                OSError: storage_error, HTTPException: http_error}
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)
    guard = Guard(app, list(tokens or []), max_body=max_body, max_file=max_file, fault_every=fault_every,
                  stall_every=stall_every, stall_seconds=stall_seconds)

    async def metric_append(scope: Any, receive: Any, send: Any, prefix: str, name: str) -> None:
        """``post_metric`` without Starlette's router and middleware layers (about 1 ms of the event loop's CPU
        per request); an error answered by the app's own exception handler for it."""
        try:
            response: Response = JSONNaN(await work.raw(scope, receive, "metric", prefix, name))
        except ClientDisconnect:
            return
        except tuple(handlers) as exc:
            handler = next(handlers[c] for c in type(exc).__mro__ if c in handlers)  # as Starlette picks it
            response = await handler(Request(scope, receive), exc)
        await response(scope, receive, send)

    guard.metric_append = metric_append
    from ..viewer.auth import ViewerGate  # the web viewer at /, signed in by cookie (docs/viewer.md)

    if isinstance(store, FolderBackend):  # the folder's files, each stream up to its committed size
        from ..viewer.data import Root

        return ViewerGate(guard, Root(store.root, committed=store.committed), list(tokens or []))
    from .viewsource import BackendSource  # a database: the viewer reads through the engine

    describe = getattr(store, "describe", None)
    return ViewerGate(guard, BackendSource(store, describe() if describe else type(store).__name__),
                      list(tokens or []))
