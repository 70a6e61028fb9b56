"""The REST API (``/api/v1``) as a Starlette app. Reference: docs/api.md and ``GET /api/v1/openapi.json``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from .. import __version__
from ..jsonio import read_json
from ..reader import effective_status, list_experiments, merge_tracks
from . import reads
from .guard import SEP, Guard
from .openapi import document
from .storage import BadRequest, ServerRoot, storage_failure
from .upload import TooLarge, receive_file
from .work import Work

MAX_PAGE = 100_000


class JSONNaN(JSONResponse):
    """Every JSON answer. Metric values may be NaN or infinite: written as the bare tokens Python's json reads
    back; non-ASCII as JSON \\u escapes, so any stored string (a lone surrogate too) is answered losslessly."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, allow_nan=True, separators=(",", ":")).encode()


def _prefix(request: Request, key: str = "prefix") -> str:
    return str(request.path_params[key]).replace(SEP, "/")


def _page(request: Request, rows: list[Any]) -> dict[str, Any]:
    try:
        start = int(request.query_params.get("start", 0))
        limit = int(request.query_params.get("limit", MAX_PAGE))
    except ValueError:
        raise HTTPException(400, "start and limit must be integers") from None
    if start < 0 or limit < 1:
        raise HTTPException(400, "start must be >= 0 and limit >= 1")
    limit = min(limit, MAX_PAGE)
    return {"total": len(rows), "start": start, "records": rows[start : start + limit]}


def create_app(root: str | Path, tokens: list[str] | None = None, *, max_body: int = 32 * 1024 * 1024,
               max_file: int = 5 * 1024**3, fault_every: int = 0, stall_every: int = 0,
               stall_seconds: float = 0.0, fsync: bool = True) -> Any:
    """The ASGI app serving ``root`` (a `.dash` folder). ``tokens`` empty or None: no authentication."""
    store = ServerRoot(root, fsync=fsync)
    work = Work(store, max_body, fsync)
    limits = {"maxBodyBytes": max_body, "maxFileBytes": max_file}

    def exp_or_404(prefix: str) -> Any:
        d = store.existing(prefix)
        if d is None:
            raise HTTPException(404, f"no experiment {prefix!r}")
        return d

    async def health(request: Request) -> Response:
        return JSONNaN({"status": "ok", "version": __version__, "api": "v1", "limits": limits,
                             "auth": bool(tokens)})

    async def openapi(request: Request) -> Response:
        return JSONNaN(document(__version__))

    async def list_exps(request: Request) -> Response:
        def listing() -> list[dict[str, Any]]:
            out = []
            for p in list_experiments(store.root):
                info = read_json(store.root / p / "experiment.json")
                out.append({"prefix": p, "status": effective_status(info),
                            "updated_at": info.get("updated_at") if isinstance(info, dict) else None})
            return out
        return JSONNaN({"experiments": await run_in_threadpool(listing)})

    async def create_exp(request: Request) -> Response:
        exp, created = await work(request, "create")
        return JSONNaN({"experiment": exp, "created": created, "limits": limits}, 201 if created else 200)

    async def get_exp(request: Request) -> Response:
        d = exp_or_404(_prefix(request))
        info = read_json(d.path / "experiment.json") or {}
        return JSONNaN({"experiment": info, "status": effective_status(info)})

    async def put_status(request: Request) -> Response:
        return JSONNaN({"experiment": await work(request, "status", _prefix(request))})

    async def get_params(request: Request) -> Response:
        d = exp_or_404(_prefix(request))
        p = read_json(d.path / "parameters.json")
        return JSONNaN(p if isinstance(p, dict) else {"version": 0, "data": {}})

    async def put_params(request: Request) -> Response:
        return JSONNaN({"applied": await work(request, "params", _prefix(request))})

    async def get_logs(request: Request) -> Response:
        d = exp_or_404(_prefix(request))
        rows = await run_in_threadpool(store.read_rows, d, "logs", d.path / "logs" / "logs.jsonl")
        return JSONNaN(_page(request, rows))

    async def post_logs(request: Request) -> Response:
        return JSONNaN(await work(request, "logs", _prefix(request)))

    async def list_metrics(request: Request) -> Response:
        d = exp_or_404(_prefix(request))
        base = d.path / "metrics"
        names = sorted(str(p.parent.relative_to(base)) for p in base.rglob("data.jsonl")) if base.is_dir() else []
        return JSONNaN({"metrics": names})

    async def get_metric(request: Request) -> Response:
        d = exp_or_404(_prefix(request))
        name = _prefix(request, "name")
        from ..names import metric_segments

        try:
            segs = metric_segments(name)
        except ValueError as e:
            raise BadRequest(str(e)) from None
        rows = await run_in_threadpool(store.read_rows, d, "metrics/" + name, d.path.joinpath("metrics", *segs,
                                                                                                "data.jsonl"))
        return JSONNaN(_page(request, rows))

    async def post_metric(request: Request) -> Response:
        return JSONNaN(await work(request, "metric", _prefix(request), _prefix(request, "name")))

    def _topics(d: Any) -> dict[str, Path]:
        base = d.path / "tracks"
        out = {}
        for folder in sorted(base.iterdir()) if base.is_dir() else []:
            if folder.is_symlink():
                continue
            meta = read_json(folder / "metadata.json")
            if isinstance(meta, dict) and isinstance(meta.get("topic"), str):
                out[meta["topic"]] = folder
        return out

    async def list_tracks(request: Request) -> Response:
        d = exp_or_404(_prefix(request))
        return JSONNaN({"tracks": sorted(_topics(d))})

    async def get_track(request: Request) -> Response:
        d = exp_or_404(_prefix(request))
        topic = _prefix(request, "topic")
        folder = _topics(d).get(topic)
        rows: list[dict[str, Any]] = []
        if folder is not None:
            rows = await run_in_threadpool(store.read_rows, d, "tracks/" + topic, folder / "data.jsonl")
        if request.query_params.get("merged", "true").lower() not in ("0", "false", "no"):
            rows = merge_tracks(rows)
        return JSONNaN(_page(request, rows))

    async def post_track(request: Request) -> Response:
        return JSONNaN(await work(request, "track", _prefix(request), _prefix(request, "topic")))

    async def list_files(request: Request) -> Response:
        d = exp_or_404(_prefix(request))
        idx = read_json(d.path / "files" / ".files_metadata.json")
        files = idx.get("files") if isinstance(idx, dict) else None
        return JSONNaN({"files": [f for f in files or [] if isinstance(f, dict) and not f.get("deletedAt")]})

    async def get_file(request: Request) -> Response:
        d = exp_or_404(_prefix(request))
        fid = request.path_params["id"]
        idx = read_json(d.path / "files" / ".files_metadata.json")
        for e in (idx.get("files") if isinstance(idx, dict) else None) or []:
            if isinstance(e, dict) and e.get("id") == fid and not e.get("deletedAt"):
                try:
                    path = d.file_path(e)
                except (KeyError, TypeError, ValueError):
                    break
                if path.is_file():
                    return FileResponse(path, filename=str(e["filename"]),
                                        media_type=str(e.get("contentType") or "application/octet-stream"))
        raise HTTPException(404, f"no file with id {fid!r}")

    async def post_file(request: Request) -> Response:
        prefix = _prefix(request)
        d = store.exp(prefix)

        async def stream() -> AsyncIterator[bytes]:
            async for chunk in request.stream():
                yield chunk

        try:
            entry, staged = await receive_file(store, d, request.headers.get("content-type", ""), stream(),
                                               max_file, fsync)
        except TooLarge as e:
            raise HTTPException(413, str(e)) from None
        if staged is None:
            return JSONNaN({"file": entry, "stored": False})
        try:
            store.ensure(prefix)
            stored = await run_in_threadpool(store.publish_file, d, staged, entry)
        finally:
            staged.unlink(missing_ok=True)
        return JSONNaN({"file": entry, "stored": stored}, 201 if stored else 200)

    async def bad_request(request: Request, exc: Exception) -> Response:
        if isinstance(exc, RecursionError):
            return JSONNaN({"detail": "the request nests JSON too deeply"}, 400)
        return JSONNaN({"detail": str(exc)}, 400)

    async def storage_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, OSError)
        status, detail = storage_failure(exc)
        return JSONNaN({"detail": detail}, status, headers={"Retry-After": "30"} if status >= 500 else None)

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
    ] + reads.routes(store.root)  # ls, show, export against the server: docs/reading.md

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            work.close()

    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={BadRequest: bad_request, RecursionError: bad_request, HTTPException: http_error,
                                        OSError: storage_error})
    guard = Guard(app, list(tokens or []), max_body=max_body, max_file=max_file, fault_every=fault_every,
                  stall_every=stall_every, stall_seconds=stall_seconds)
    from ..viewer.auth import ViewerGate  # the web viewer at /, signed in by cookie (docs/viewer.md)

    return ViewerGate(guard, store.root, list(tokens or []))
