"""Read routes for ``ml-dash ls``, ``show`` and ``export`` against a server, over the same column cache and the
same summary functions (``ml_dash.runs``) the commands use on a local folder.

``read_columns(root, prefix, kind, name)`` is the one place the server reads a stream's columns: another storage
backend answers these routes by providing its own function with that signature.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..names import split_path
from .guard import SEP


def read_columns(root: Path, prefix: str, kind: str, name: str | None) -> Any:
    """The columns of one stream (kind: metrics, tracks or logs) of the run ``prefix`` stored under ``root``."""
    from ..reader import load

    view = load(prefix, root)
    if kind == "metrics":
        return view.metrics(name).columns()
    if kind == "tracks":
        if name is None:
            raise ValueError("a track topic is required")
        return view.tracks(name).columns()
    return view.logs.columns()


def _json(obj: Any, status: int = 200) -> Response:
    body = json.dumps(obj, allow_nan=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return Response(body.encode(), status, media_type="application/json")


def _param(request: Request, key: str) -> str:
    return str(request.path_params[key]).replace(SEP, "/")


def columns_body(cols: Any, fields: list[str] | None) -> dict[str, Any]:
    """{rows, columns: {field: [values]}, other: {field: [values]}}: NaN and infinities as bare JSON tokens."""
    names = list(cols) if fields is None else fields
    missing = [f for f in names if f not in cols and f not in cols.other]
    if missing:
        raise HTTPException(400, f"no field(s) {', '.join(map(repr, missing))}; fields: {', '.join(cols)}")
    main = {f: cols[f].tolist() for f in names if f in cols}
    other = {f: [None if v is None else v for v in cols.other[f].tolist()] for f in names if f in cols.other}
    if fields is None:
        other.update({f: v.tolist() for f, v in cols.other.items() if f not in other})
    return {"rows": int(cols.rows), "kind": cols.kind, "columns": main, "other": other}


def routes(root: Path, reader: Callable[[Path, str, str, str | None], Any] = read_columns) -> list[Route]:
    from ..runs import find_runs, parse_selector, show, summary

    def run_or_404(prefix: str) -> str:
        try:
            split_path(prefix, "experiment prefix", allow_single=False)
        except (TypeError, ValueError) as e:
            raise HTTPException(400, str(e)) from None
        if not root.joinpath(*prefix.split("/"), "experiment.json").is_file():
            raise HTTPException(404, f"no experiment {prefix!r}")
        return prefix

    async def list_runs(request: Request) -> Response:
        try:
            last = [parse_selector(s) for s in (request.query_params.get("last") or "").split(",") if s]
        except ValueError as e:
            raise HTTPException(400, str(e)) from None

        def work() -> list[dict[str, Any]]:
            return [summary(root, p, last) for p in find_runs(root)]

        return _json({"runs": await run_in_threadpool(work)})

    async def run_summary(request: Request) -> Response:
        prefix = run_or_404(_param(request, "prefix"))

        def work() -> dict[str, Any]:
            from ..reader import load

            return show(load(prefix, root))

        return _json(await run_in_threadpool(work))

    def column_route(kind: str) -> Callable[[Request], Any]:
        async def handler(request: Request) -> Response:
            prefix = run_or_404(_param(request, "prefix"))
            name = _param(request, "name") if "name" in request.path_params else None
            fields_q = request.query_params.get("fields")
            fields = [f for f in fields_q.split(",") if f] if fields_q else None
            try:
                cols = await run_in_threadpool(reader, root, prefix, kind, name)
            except (TypeError, ValueError) as e:
                raise HTTPException(400, str(e)) from None
            return _json(await run_in_threadpool(columns_body, cols, fields))

        return handler

    e = "/api/v1/experiments/{prefix}"
    return [
        Route("/api/v1/runs", list_runs, methods=["GET"]),
        Route(e + "/summary", run_summary, methods=["GET"]),
        Route(e + "/columns/metrics/{name}", column_route("metrics"), methods=["GET"]),
        Route(e + "/columns/tracks/{name}", column_route("tracks"), methods=["GET"]),
        Route(e + "/columns/logs", column_route("logs"), methods=["GET"]),
    ]
