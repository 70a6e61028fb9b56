"""Malformed requests get a 4xx naming the problem, never a 5xx (a client retries 5xx forever): deep nesting,
huge integers, over-long names, invalid UTF-8, a multipart upload cut off before its closing boundary, upload
entry fields that would break the download. Nothing of a refused request is stored."""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import quote

E = "/api/v1/experiments/" + quote("proj/x", safe="")


def _raw(server: Any, method: str, path: str, body: bytes, ctype: str = "application/json") -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(method, path, body, {"Authorization": f"Bearer {server.token}", "Content-Type": ctype})
        r = conn.getresponse()
        return r.status, r.read().decode("utf-8", "replace")
    finally:
        conn.close()


def _rows(c: Any, metric: str = "train") -> list[Any]:
    r = c.get(f"{E}/metrics/{metric}")
    return r.json()["records"] if r.status_code == 200 else []


def test_deep_nesting_huge_integers_long_names_and_bad_utf8_are_4xx(server: Any) -> None:
    with server.client() as c:
        assert c.post("/api/v1/experiments", json={"prefix": "proj/x", "info": {}}).status_code == 201
    cases: list[tuple[str, str, bytes, str]] = [
        ("POST", f"{E}/metrics/train", b'{"records": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "too deeply"),
        ("POST", f"{E}/metrics/train", b'{"records": [{"index": 0, "data": ' + b'{"a":' * 5_000 + b"1"
         + b"}" * 5_000 + b"}]}", "too deeply"),
        ("POST", f"{E}/metrics/train", b'{"records": [{"index": ' + b"9" * 5_000 + b', "data": {}}]}', "not valid JSON"),
        ("POST", f"{E}/metrics/train", json.dumps({"records": [{"index": 10**30, "data": {}}]}).encode(), "'index'"),
        ("POST", f"{E}/logs", json.dumps({"records": [{"sequenceNumber": -1, "level": "info", "message": "m"}]}).encode(),
         "'sequenceNumber'"),
        # the largest 64-bit position: the source's next position would not fit (PostgreSQL's bigint overflowed)
        ("POST", f"{E}/logs", json.dumps({"records": [{"sequenceNumber": 2**63 - 1, "level": "info",
                                                       "message": "m"}]}).encode(), "'sequenceNumber'"),
        ("POST", f"{E}/metrics/train", json.dumps({"records": [{"index": 2**63 - 1, "data": {}}]}).encode(), "'index'"),
        ("POST", f"{E}/tracks/t", json.dumps({"entries": [{"timestamp": 1.0}], "offset": 10**40}).encode(), "'offset'"),
        ("PUT", f"{E}/parameters", json.dumps({"data": {"a": 1}, "version": 10**25}).encode(), "'version'"),
        ("POST", f"{E}/metrics/train", b'{"records": [{"index": 0, "data": {"a": "\xff\xfe"}}]}', "UTF-8"),
        ("POST", f"{E}/metrics/" + quote("/".join(["m" * 150] * 8), safe=""),
         json.dumps({"records": [{"index": 0, "data": {}}]}).encode(), "in total"),
        ("POST", "/api/v1/experiments", json.dumps({"prefix": "/".join(["p" * 190] * 6), "info": {}}).encode(),
         "in total"),
        ("POST", f"{E}/metrics/train", b"[1, 2]", "JSON object"),
        ("POST", "/api/v1/experiments/%ff%fe/logs", b"{}", "UTF-8"),
    ]
    for method, path, body, says in cases:
        status, text = _raw(server, method, path, body)
        assert 400 <= status < 500, (path[:80], body[:60], status, text[:300])
        assert says in text, (says, text[:300])
    with server.client() as c:
        assert _rows(c) == []
        assert c.get("/api/v1/experiments").status_code == 200
        assert c.get(f"{E}/parameters").json()["data"] == {}
        r = c.post(f"{E}/metrics/big", json={"records": [{"index": 2**63 - 2, "data": {"a": 1}}]})
        assert r.status_code == 200 and r.json()["stored"] == 1, r.text  # the largest position still taken
        assert _rows(c, "big")[0]["data"]["a"] == 1


def _multipart(entry: dict[str, Any], content: bytes, *, close: bool = True) -> tuple[bytes, str]:
    b = "XyZBoundary42"
    body = (f"--{b}\r\nContent-Disposition: form-data; name=\"entry\"\r\n\r\n{json.dumps(entry)}\r\n"
            f"--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + content
    if close:
        body += f"\r\n--{b}--\r\n".encode()
    return body, f"multipart/form-data; boundary={b}"


def _no_partials(server: Any) -> None:
    leftovers = [p for p in server.root.rglob("*") if p.suffix in (".part", ".tmp")]
    assert leftovers == []


def test_a_cut_off_upload_is_never_stored_and_entry_fields_are_checked(server: Any) -> None:
    with server.client() as c:
        assert c.post("/api/v1/experiments", json={"prefix": "proj/x", "info": {}}).status_code == 201
    content = b"0123456789" * 1000
    body, ctype = _multipart({"id": "1", "path": "/", "filename": "a.bin"}, content[:5000], close=False)
    status, text = _raw(server, "POST", f"{E}/files", body, ctype)
    assert status == 400 and "cut off" in text, text
    with server.client() as c:
        assert c.get(f"{E}/files").json()["files"] == []
    _no_partials(server)

    bad_entries = [({"contentType": "text/plain\r\nX-Evil: 1"}, "contentType"), ({"contentType": 5}, "contentType"),
                   ({"tags": "x"}, "tags"), ({"checksum": "nothex"}, "checksum"), ({"sizeBytes": -4}, "sizeBytes"),
                   ({"metadata": [1]}, "metadata"), ({"uploadedAt": 7}, "uploadedAt")]
    for extra, says in bad_entries:
        body, ctype = _multipart({"id": "2", "path": "/", "filename": "b.bin", **extra}, content)
        status, text = _raw(server, "POST", f"{E}/files", body, ctype)
        assert status == 400 and says in text, (extra, status, text)
    bad_utf8 = _multipart({"id": "3", "path": "/", "filename": "c.bin"}, content)[0].replace(b'"c.bin"', b'"c\xff.bin"')
    status, text = _raw(server, "POST", f"{E}/files", bad_utf8, _multipart({}, b"")[1])
    assert status == 400, text
    with server.client() as c:
        assert c.get(f"{E}/files").json()["files"] == []
    _no_partials(server)

    body, ctype = _multipart({"id": "4", "path": "/", "filename": "d.bin", "contentType": "text/plain; charset=utf-8"},
                             content)
    status, text = _raw(server, "POST", f"{E}/files", body, ctype)
    assert status == 201, text
    with server.client() as c:
        r = c.get(f"{E}/files/4")
        assert r.status_code == 200 and r.content == content
        assert r.headers["content-type"] == "text/plain; charset=utf-8"
