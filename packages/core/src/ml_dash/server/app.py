"""The REST API (``/api/v1``) as a Starlette app. Reference: docs/api.md and ``GET /api/v1/openapi.json``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from .. import __version__
from ..jsonio import read_json, read_jsonl
from ..reader import effective_status, list_experiments, merge_tracks
from . import reads
from .guard import SEP, Guard
from .openapi import document
from .storage import BadRequest, ServerRoot, check_source
from .upload import TooLarge, receive_file

MAX_PAGE = 100_000


class JSONNaN(JSONResponse):
    """Every JSON answer. Metric values may be NaN or infinite: written as the bare tokens Python's json reads
    back; non-ASCII as JSON \\u escapes, so any stored string (a lone surrogate too) is answered losslessly."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, allow_nan=True, separators=(",", ":")).encode()


def _prefix(request: Request, key: str = "prefix") -> str:
    return str(request.path_params[key]).replace(SEP, "/")


async def _body(request: Request) -> dict[str, Any]:
    limit = int(request.scope.get("state", {}).get("ml_dash_limit") or 0)
    chunks = []
    n = 0
    async for chunk in request.stream():
        n += len(chunk)
        if limit and n > limit:
            raise HTTPException(413, f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    try:
        obj = json.loads(b"".join(chunks))
    except ValueError:
        raise HTTPException(400, "the body is not valid JSON") from None
    if not isinstance(obj, dict):
        raise HTTPException(400, "the body must be a JSON object")
    return obj


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
        def work() -> list[dict[str, Any]]:
            out = []
            for p in list_experiments(store.root):
                info = read_json(store.root / p / "experiment.json")
                out.append({"prefix": p, "status": effective_status(info),
                            "updated_at": info.get("updated_at") if isinstance(info, dict) else None})
            return out
        return JSONNaN({"experiments": await run_in_threadpool(work)})

    async def create_exp(request: Request) -> Response:
        body = await _body(request)
        prefix = body.get("prefix")
        if not isinstance(prefix, str):
            raise BadRequest("'prefix' (\"project/name\") is required")
        info = body.get("info", {})
        exp, created = await run_in_threadpool(store.open_experiment, prefix, info, check_source(body.get("source")))
        return JSONNaN({"experiment": exp, "created": created, "limits": limits}, 201 if created else 200)

    async def get_exp(request: Request) -> Response:
        d = exp_or_404(_prefix(request))
        info = read_json(d.path / "experiment.json") or {}
        return JSONNaN({"experiment": info, "status": effective_status(info)})

    async def put_status(request: Request) -> Response:
        prefix = _prefix(request)
        body = await _body(request)
        info = body.get("info", {})
        exp, _ = await run_in_threadpool(store.open_experiment, prefix, info, check_source(body.get("source")))
        return JSONNaN({"experiment": exp})

    async def get_params(request: Request) -> Response:
        d = exp_or_404(_prefix(request))
        p = read_json(d.path / "parameters.json")
        return JSONNaN(p if isinstance(p, dict) else {"version": 0, "data": {}})

    async def put_params(request: Request) -> Response:
        prefix = _prefix(request)
        body = await _body(request)
        applied = await run_in_threadpool(store.set_params, prefix, body.get("data"), body.get("version"),
                                          check_source(body.get("source")))
        return JSONNaN({"applied": applied})

    async def get_logs(request: Request) -> Response:
        d = exp_or_404(_prefix(request))
        rows, _ = await run_in_threadpool(read_jsonl, d.path / "logs" / "logs.jsonl")
        return JSONNaN(_page(request, rows))

    async def post_logs(request: Request) -> Response:
        prefix = _prefix(request)
        body = await _body(request)
        res = await run_in_threadpool(store.append_logs, prefix, body.get("records"), check_source(body.get("source")))
        return JSONNaN(res)

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
        rows, _ = await run_in_threadpool(read_jsonl, d.path.joinpath("metrics", *segs, "data.jsonl"))
        return JSONNaN(_page(request, rows))

    async def post_metric(request: Request) -> Response:
        prefix, name = _prefix(request), _prefix(request, "name")
        body = await _body(request)
        res = await run_in_threadpool(store.append_metrics, prefix, name, body.get("records"),
                                      check_source(body.get("source")))
        return JSONNaN(res)

    def _topics(d: Any) -> dict[str, Path]:
        base = d.path / "tracks"
        out = {}
        for folder in sorted(base.iterdir()) if base.is_dir() else []:
            meta = read_json(folder / "metadata.json")
            if isinstance(meta, dict) and isinstance(meta.get("topic"), str):
                out[meta["topic"]] = folder
        return out

    async def list_tracks(request: Request) -> Response:
        d = exp_or_404(_prefix(request))
        return JSONNaN({"tracks": sorted(_topics(d))})

    async def get_track(request: Request) -> Response:
        d = exp_or_404(_prefix(request))
        folder = _topics(d).get(_prefix(request, "topic"))
        rows: list[dict[str, Any]] = []
        if folder is not None:
            rows, _ = await run_in_threadpool(read_jsonl, folder / "data.jsonl")
        if request.query_params.get("merged", "true").lower() not in ("0", "false", "no"):
            rows = merge_tracks(rows)
        return JSONNaN(_page(request, rows))

    async def post_track(request: Request) -> Response:
        prefix, topic = _prefix(request), _prefix(request, "topic")
        body = await _body(request)
        res = await run_in_threadpool(store.append_tracks, prefix, topic, body.get("entries"), body.get("offset"),
                                      body.get("end"), body.get("offsets"), check_source(body.get("source")))
        return JSONNaN(res)

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
                path = d.file_path(e)
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
    ] + reads.routes(store.root)  # ls, show, export against the server: docs/reading.md
    app = Starlette(routes=routes, exception_handlers={BadRequest: bad_request, HTTPException: http_error})
    guard = Guard(app, list(tokens or []), max_body=max_body, max_file=max_file, fault_every=fault_every,
                  stall_every=stall_every, stall_seconds=stall_seconds)
    from ..viewer.auth import ViewerGate  # the web viewer at /, signed in by cookie (docs/viewer.md)

    return ViewerGate(guard, store.root, list(tokens or []))
