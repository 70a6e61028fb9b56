"""The OpenAPI 3.1 document served at ``/api/v1/openapi.json`` (kept in step with app.py and docs/api.md)."""

from __future__ import annotations

from typing import Any

_OBJ: dict[str, Any] = {"type": "object"}
_SEG = r"[A-Za-z0-9_-][A-Za-z0-9_.~ -]{0,63}"  # what names look like in practice (the server accepts more)
_POS = {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}
_REC = {"type": "integer", "minimum": 0, "maximum": 2**63 - 2}  # a record's position: the next one must fit too
_SOURCE = {"type": "string", "pattern": r"^[A-Za-z0-9_.-]{1,100}$",
           "description": "Stable id of the client's .dash folder; positions are deduplicated per source"}
_TEXT = {"type": "string", "maxLength": 10_000}
_TIME = {"type": "string", "maxLength": 64, "description": "ISO-8601 UTC time"}
_DATA = {"type": "object", "maxProperties": 50, "propertyNames": {"maxLength": 100}}


def _json_body(props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "properties": props, "required": required}}}}


def _ok(desc: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": desc, "content": {"application/json": {"schema": schema or _OBJ}}}


_ERRORS = {
    "400": {"description": "Malformed request or invalid name; the detail names the problem (never retried by "
                           "the client: the batch is set aside)"},
    "401": {"description": "Missing or invalid bearer token; nothing was touched"},
    "404": {"description": "No such experiment, file or route"},
    "413": {"description": "Body larger than the server's limit (see GET /health)"},
    "503": {"description": "A storage fault on the server; nothing of the request was committed; retry "
                           "(Retry-After)"},
    "507": {"description": "The server's disk is full (or a file reached its size limit); nothing of the request "
                           "was committed; retry later (Retry-After)"},
}

_APPEND_RESULT = {"type": "object", "properties": {
    "received": {"type": "integer"}, "stored": {"type": "integer", "description": "new records written"},
    "next": {"type": "integer", "description": "the source's next expected position"}}}

_PAGE = {"name": "start", "in": "query", "schema": {"type": "integer", "minimum": 0}}, \
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100000}}


def _p(name: str, desc: str, pattern: str, example: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": desc, "example": example,
            "schema": {"type": "string", "pattern": pattern, "maxLength": 1000}}


PREFIX = _p("prefix", "Experiment prefix 'project/.../name' as ONE percent-encoded segment (proj%2Fexp); rules "
                      "for names: docs/names.md", f"^{_SEG}(/{_SEG}){{1,3}}$", "proj/exp")
_NAME = f"^{_SEG}(/{_SEG}){{0,2}}$"
_LOG = {"type": "object", "required": ["sequenceNumber", "level", "message"], "properties": {
    "sequenceNumber": _REC, "timestamp": _TIME, "level": {"enum": ["info", "warn", "error", "debug", "fatal"]},
    "message": _TEXT, "metadata": {"anyOf": [_DATA, {"type": "null"}]}}}
_ROW = {"type": "object", "required": ["index", "data"], "properties": {"index": _REC, "data": _DATA,
                                                                      "createdAt": _TIME}}
_ENTRY = {"type": "object", "required": ["timestamp"], "maxProperties": 50,
          "properties": {"timestamp": {"type": "number"}}}
_INFO = {"type": "object", "description": "experiment.json fields", "properties": {
    "description": {"anyOf": [_TEXT, {"type": "null"}]}, "tags": {"type": "array", "items": _TEXT, "maxItems": 50},
    "metadata": {"anyOf": [_DATA, {"type": "null"}]}, "status": {"enum": ["RUNNING", "COMPLETED", "FAILED",
                                                                         "CANCELLED"]},
    "statusReason": {"anyOf": [_TEXT, {"type": "null"}]}, "heartbeatAt": _TIME, "endedAt": _TIME,
    "updated_at": _TIME, "created_at": _TIME}}


def _list(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items, "maxItems": 1000}
_FIELDS = {"name": "fields", "in": "query", "schema": {"type": "string"}, "description": "comma-separated fields"}


def document(version: str) -> dict[str, Any]:
    e = "/api/v1/experiments/{prefix}"

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
                       _json_body({"prefix": PREFIX["schema"], "source": _SOURCE, "info": _INFO}, ["prefix"])),
        },
        e: {"get": op("experiment.json and the effective status (CRASHED for a stale RUNNING)",
                      {"200": _ok("experiment")}, params=[PREFIX])},
        e + "/status": {"put": op("Update status, statusReason, heartbeatAt (ignored when older than the "
                                  "source's last update, by info.updated_at)", {"200": _ok("experiment")},
                                  _json_body({"source": _SOURCE, "info": _INFO}, ["info"]), [PREFIX])},
        e + "/parameters": {
            "get": op("parameters.json: {version, data, updatedAt}", {"200": _ok("parameters")}, params=[PREFIX]),
            "put": op("Merge a flat parameter dict; a version not newer than the source's last is ignored",
                      {"200": _ok("applied?")},
                      _json_body({"source": _SOURCE, "version": _POS, "data": _DATA}, ["data"]),
                      [PREFIX]),
        },
        e + "/logs": {
            "get": op("Log records in order", {"200": _ok("page of records")}, params=[PREFIX, *_PAGE]),
            "post": op("Append log records; each carries the source's sequenceNumber, records at or below "
                       "one already stored for this source are skipped, the rest get the next server numbers",
                       {"200": _ok("result", _APPEND_RESULT)},
                       _json_body({"source": _SOURCE, "records": _list(_LOG)}, ["records"]), [PREFIX]),
        },
        e + "/metrics": {"get": op("Metric names", {"200": _ok("names")}, params=[PREFIX])},
        e + "/metrics/{name}": {
            "get": op("Metric rows {index, data, createdAt}", {"200": _ok("page of records")},
                      params=[PREFIX, _p("name", "metric name, percent-encoded", _NAME, "eval/sub"), *_PAGE]),
            "post": op("Append metric rows, deduplicated by the source's index as for logs",
                       {"200": _ok("result", _APPEND_RESULT)},
                       _json_body({"source": _SOURCE, "records": _list(_ROW)}, ["records"]),
                       [PREFIX, _p("name", "metric name, percent-encoded", _NAME, "eval/sub")]),
        },
        e + "/tracks": {"get": op("Track topics", {"200": _ok("topics")}, params=[PREFIX])},
        e + "/tracks/{topic}": {
            "get": op("Track entries; merged=false gives the stored lines", {"200": _ok("page of records")},
                      params=[PREFIX, _p("topic", "topic, percent-encoded", _NAME, "robot/pos"), *_PAGE,
                              {"name": "merged", "in": "query", "schema": {"type": "boolean"}}]),
            "post": op("Append track entries, deduplicated by the source's journal byte offsets",
                       {"200": _ok("result", _APPEND_RESULT)},
                       _json_body({"source": _SOURCE, "entries": _list(_ENTRY),
                                   "offset": {**_POS, "description": "offset of the first entry"},
                                   "end": {**_POS, "description": "offset just past the last"},
                                   "offsets": {**_list(_POS), "description": "offset of each entry"}},
                                  ["entries", "offset"]), [PREFIX, _p("topic", "topic, percent-encoded", _NAME, "robot/pos")]),
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
            {"200": _ok("columns")}, params=[PREFIX, _p("name", "metric name, percent-encoded", _NAME, "eval/sub"), _FIELDS])},
        e + "/columns/tracks/{name}": {"get": op(
            "A track as columns (entries sharing a timestamp merged)", {"200": _ok("columns")},
            params=[PREFIX, _p("name", "topic, percent-encoded", _NAME, "robot/pos"), _FIELDS])},
        e + "/columns/logs": {"get": op("The logs as columns: sequenceNumber, timestamp (unix seconds), level, "
                                        "message, metadata", {"200": _ok("columns")}, params=[PREFIX, _FIELDS])},
        e + "/files/{id}": {"get": {"summary": "Download a file's content", "parameters": [PREFIX, _p("id", "file id", r"^[A-Za-z0-9_-]{1,64}$", "7356562916655171")],
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
