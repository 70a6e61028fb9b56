"""Read routes for ``ml-dash ls``, ``show`` and ``export`` against a server, answered by the storage engine's
read methods (`Backend.summaries`, `show`, `columns`): the `.dash` folder engine through the same column cache and
summary functions (``ml_dash.runs``) the commands use on a local folder, PostgreSQL through `pgread`, with the
same answers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..names import split_path
from .backend import Backend
from .guard import SEP


def _json(obj: Any, status: int = 200) -> Response:
    # \uXXXX escapes: any stored string (a lone surrogate too) is answered losslessly (docs/server.md)
    body = json.dumps(obj, allow_nan=True, separators=(",", ":"), default=str)
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


def routes(store: Backend) -> list[Route]:
    from ..runs import parse_selector

    def check(prefix: str) -> str:
        try:
            split_path(prefix, "experiment prefix", allow_single=False)
        except (TypeError, ValueError) as e:
            raise HTTPException(400, str(e)) from None
        return prefix

    async def run_or_404(prefix: str) -> str:
        if await run_in_threadpool(store.info, check(prefix)) is None:
            raise HTTPException(404, f"no experiment {prefix!r}")
        return prefix

    async def list_runs(request: Request) -> Response:
        try:
            last = [parse_selector(s) for s in (request.query_params.get("last") or "").split(",") if s]
        except ValueError as e:
            raise HTTPException(400, str(e)) from None
        body = await run_in_threadpool(store.summaries_json, last)
        return Response(body, 200, media_type="application/json")

    async def run_summary(request: Request) -> Response:
        prefix = check(_param(request, "prefix"))
        found = await run_in_threadpool(store.show, prefix)
        if found is None:
            raise HTTPException(404, f"no experiment {prefix!r}")
        return _json(found)

    def column_route(kind: str) -> Callable[[Request], Any]:
        async def handler(request: Request) -> Response:
            prefix = await run_or_404(_param(request, "prefix"))
            name = _param(request, "name") if "name" in request.path_params else None
            fields_q = request.query_params.get("fields")
            fields = [f for f in fields_q.split(",") if f] if fields_q else None
            try:
                cols = await run_in_threadpool(store.columns, prefix, kind, name)
            except (TypeError, ValueError) as e:
                raise HTTPException(400, str(e)) from None
            if request.query_params.get("format") == "binary":  # what `ml-dash export --url` asks for
                from ..colview import BINARY_TYPE, pack

                try:
                    return Response(await run_in_threadpool(pack, cols, fields), media_type=BINARY_TYPE)
                except KeyError as e:
                    raise HTTPException(400, str(e.args[0])) from None
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
