"""The OpenAPI 3.1 document served at ``/api/v1/openapi.json`` (kept in step with app.py and docs/api.md)."""

from __future__ import annotations

from typing import Any

_OBJ: dict[str, Any] = {"type": "object"}
_SOURCE = {"type": "string", "description": "Stable id of the client's .dash folder ([A-Za-z0-9_.-]{1,100}); "
                                            "positions are deduplicated per source"}


def _json_body(props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "properties": props, "required": required}}}}


def _ok(desc: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": desc, "content": {"application/json": {"schema": schema or _OBJ}}}


_ERRORS = {
    "400": {"description": "Malformed request or invalid name (never retried by the client)"},
    "401": {"description": "Missing or invalid bearer token; nothing was touched"},
    "404": {"description": "No such experiment, file or route"},
    "413": {"description": "Body larger than the server's limit (see GET /health)"},
}

_APPEND_RESULT = {"type": "object", "properties": {
    "received": {"type": "integer"}, "stored": {"type": "integer", "description": "new records written"},
    "next": {"type": "integer", "description": "the source's next expected position"}}}

_PAGE = {"name": "start", "in": "query", "schema": {"type": "integer", "minimum": 0}}, \
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100000}}


def _p(name: str, desc: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": desc, "schema": {"type": "string"}}


_FIELDS = {"name": "fields", "in": "query", "schema": {"type": "string"}, "description": "comma-separated fields"}
PREFIX = _p("prefix", "Experiment prefix 'project/.../name' as ONE percent-encoded segment (proj%2Fexp)")


def document(version: str) -> dict[str, Any]:
    e = "/api/v1/experiments/{prefix}"
    rec_list = {"type": "array", "items": _OBJ}

    def op(summary: str, responses: dict[str, Any], body: dict[str, Any] | None = None,
           params: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        o: dict[str, Any] = {"summary": summary, "responses": {**responses, **_ERRORS}}
        if body is not None:
            o["requestBody"] = body
        if params:
            o["parameters"] = params
        return o

    paths: dict[str, Any] = {
        "/health": {"get": {"summary": "Liveness, version and body limits (no authentication)", "security": [],
                            "responses": {"200": _ok("ok")}}},
        "/api/v1/openapi.json": {"get": {"summary": "This document (no authentication)", "security": [],
                                         "responses": {"200": _ok("OpenAPI document")}}},
        "/api/v1/experiments": {
            "get": op("List experiments (prefix, status, updated_at)", {"200": _ok("experiments")}),
            "post": op("Create an experiment, or reopen it when it exists; applies description, tags, metadata, "
                       "status unless older than what this source sent before",
                       {"200": _ok("reopened"), "201": _ok("created")},
                       _json_body({"prefix": {"type": "string"}, "source": _SOURCE,
                                   "info": {"type": "object", "description": "experiment.json fields"}},
                                  ["prefix"])),
        },
        e: {"get": op("experiment.json and the effective status (CRASHED for a stale RUNNING)",
                      {"200": _ok("experiment")}, params=[PREFIX])},
        e + "/status": {"put": op("Update status, statusReason, heartbeatAt (ignored when older than the "
                                  "source's last update, by info.updated_at)", {"200": _ok("experiment")},
                                  _json_body({"source": _SOURCE, "info": _OBJ}, ["info"]), [PREFIX])},
        e + "/parameters": {
            "get": op("parameters.json: {version, data, updatedAt}", {"200": _ok("parameters")}, params=[PREFIX]),
            "put": op("Merge a flat parameter dict; a version not newer than the source's last is ignored",
                      {"200": _ok("applied?")},
                      _json_body({"source": _SOURCE, "version": {"type": "integer"}, "data": _OBJ}, ["data"]),
                      [PREFIX]),
        },
        e + "/logs": {
            "get": op("Log records in order", {"200": _ok("page of records")}, params=[PREFIX, *_PAGE]),
            "post": op("Append log records; each carries the source's sequenceNumber, records at or below "
                       "one already stored for this source are skipped, the rest get the next server numbers",
                       {"200": _ok("result", _APPEND_RESULT)},
                       _json_body({"source": _SOURCE, "records": rec_list}, ["records"]), [PREFIX]),
        },
        e + "/metrics": {"get": op("Metric names", {"200": _ok("names")}, params=[PREFIX])},
        e + "/metrics/{name}": {
            "get": op("Metric rows {index, data, createdAt}", {"200": _ok("page of records")},
                      params=[PREFIX, _p("name", "metric name, percent-encoded"), *_PAGE]),
            "post": op("Append metric rows, deduplicated by the source's index as for logs",
                       {"200": _ok("result", _APPEND_RESULT)},
                       _json_body({"source": _SOURCE, "records": rec_list}, ["records"]),
                       [PREFIX, _p("name", "metric name, percent-encoded")]),
        },
        e + "/tracks": {"get": op("Track topics", {"200": _ok("topics")}, params=[PREFIX])},
        e + "/tracks/{topic}": {
            "get": op("Track entries; merged=false gives the stored lines", {"200": _ok("page of records")},
                      params=[PREFIX, _p("topic", "topic, percent-encoded"), *_PAGE,
                              {"name": "merged", "in": "query", "schema": {"type": "boolean"}}]),
            "post": op("Append track entries, deduplicated by the source's journal byte offsets",
                       {"200": _ok("result", _APPEND_RESULT)},
                       _json_body({"source": _SOURCE, "entries": rec_list,
                                   "offset": {"type": "integer", "description": "offset of the first entry"},
                                   "end": {"type": "integer", "description": "offset just past the last"},
                                   "offsets": {"type": "array", "items": {"type": "integer"},
                                               "description": "offset of each entry"}},
                                  ["entries", "offset"]), [PREFIX, _p("topic", "topic, percent-encoded")]),
        },
        e + "/files": {
            "get": op("The files index", {"200": _ok("files")}, params=[PREFIX]),
            "post": op("Upload one file (streamed to disk); an id already stored is not stored again",
                       {"200": _ok("already stored"), "201": _ok("stored")},
                       {"required": True, "content": {"multipart/form-data": {"schema": {
                           "type": "object", "required": ["entry", "file"], "properties": {
                               "entry": {"type": "string", "description": "index entry as JSON: id, path, "
                                                                          "filename, checksum (sha256), ..."},
                               "file": {"type": "string", "format": "binary"}}}}}}, [PREFIX]),
        },
        "/api/v1/runs": {"get": op("Run summaries (as `ml-dash ls --json`): status, start, end, duration, tags, params, "
                                   "rows per metric stream, entries per track; last=STREAM:FIELD,... adds last values",
                                   {"200": _ok("runs")},
                                   params=[{"name": "last", "in": "query", "schema": {"type": "string"}}])},
        e + "/summary": {"get": op("One run as `ml-dash show`: the summary plus rows and last/min/max/count of every "
                                   "metric field", {"200": _ok("summary")}, params=[PREFIX])},
        e + "/columns/metrics/{name}": {"get": op(
            "A metric stream as columns: {rows, columns: {field: [values]}, other: {field: [values]}}; index, _ts "
            "and numeric fields (null/NaN where a row lacks one); fields=a,b selects",
            {"200": _ok("columns")}, params=[PREFIX, _p("name", "metric name, percent-encoded"), _FIELDS])},
        e + "/columns/tracks/{name}": {"get": op(
            "A track as columns (entries sharing a timestamp merged)", {"200": _ok("columns")},
            params=[PREFIX, _p("name", "topic, percent-encoded"), _FIELDS])},
        e + "/columns/logs": {"get": op("The logs as columns: sequenceNumber, timestamp (unix seconds), level, "
                                        "message, metadata", {"200": _ok("columns")}, params=[PREFIX, _FIELDS])},
        e + "/files/{id}": {"get": {"summary": "Download a file's content", "parameters": [PREFIX, _p("id", "file id")],
                                    "responses": {"200": {"description": "content"}, **_ERRORS}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "ml-dash server", "version": version,
                 "description": "Stores experiments in the .dash layout. Every write is idempotent: retry freely."},
        "servers": [{"url": "/"}],
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    }
