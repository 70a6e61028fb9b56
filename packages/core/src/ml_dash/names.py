"""Validation of every name that becomes a path: prefixes, metric names, topics, file folders and names.

The mapping from (prefix, kind, name) to paths is injective: no two different names share a file, and no name
reaches into the layout of another run or stream. The rules (docs/names.md states them for users):

- every segment (the parts between '/'): not empty, '.' or '..'; at most 200 bytes as UTF-8; valid Unicode
  (no lone surrogate); no control character or backslash. A whole name is at most 1,000 bytes, so every path
  stays far below the system's limit;
- prefix, metric name and track topic: no segment starts with '.' (room for private state and temp files);
- prefix: no segment is ``experiment.json`` or ``parameters.json``; from the third segment on (inside a folder
  that may be a run), none is ``logs``, ``metrics``, ``tracks`` or ``files``;
- metric name: no segment is ``data.jsonl`` or ``metadata.json`` (the files of a metric folder);
- files folder: no segment starts with ``.files_metadata`` (the files index and its temporary copies).
"""

from __future__ import annotations

import re

MAX_SEGMENT = 200
MAX_NAME = 1000
# The layout's own names, spelled once, here, below `ml_dash.layout` (which builds every path from them; docs/layout.md)
# because the rules below refuse them as names
EXPERIMENT_JSON = "experiment.json"
PARAMETERS_JSON = "parameters.json"
LOGS_DIR = "logs"
METRICS = "metrics"
TRACKS = "tracks"
FILES = "files"
DATA = "data.jsonl"
META = "metadata.json"
FILES_INDEX_STEM = ".files_metadata"  # the files index, its temporary and corrupt copies
PRIVATE = ".ml_dash"
RUN_FILES = (EXPERIMENT_JSON, PARAMETERS_JSON)
RUN_FOLDERS = (LOGS_DIR, METRICS, TRACKS, FILES)
STREAM_FILES = (DATA, META)


def _check_segment(seg: str, what: str, full: str) -> None:
    if seg in ("", ".", ".."):
        raise ValueError(f"invalid {what} {full!r}: empty, '.' or '..' path segment")
    try:
        nbytes = len(seg.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(f"invalid {what} {full!r}: not valid Unicode (lone surrogate)") from None
    if nbytes > MAX_SEGMENT:
        raise ValueError(f"invalid {what} {full!r}: a path segment is longer than {MAX_SEGMENT} bytes")
    for ch in seg:
        if ch < " " or ch == "\x7f" or ch == "\\":
            raise ValueError(f"invalid {what} {full!r}: contains a control character or backslash")


def _reserved(what: str, full: str, seg: str, why: str) -> ValueError:
    return ValueError(f"invalid {what} {full!r}: the segment {seg!r} is reserved ({why}); see docs/names.md")


def split_path(name: object, what: str, *, allow_single: bool = True) -> list[str]:
    """Split a '/'-separated name into checked segments. Absolute paths and '..' are refused."""
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a string, got {type(name).__name__}")
    if not name:
        raise ValueError(f"invalid {what}: empty")
    if name.startswith("/"):
        raise ValueError(f"invalid {what} {name!r}: absolute paths are not allowed")
    segs = name.split("/")
    for seg in segs:
        _check_segment(seg, what, name)
    if len(name.encode("utf-8")) > MAX_NAME:
        raise ValueError(f"invalid {what} {name[:40]!r}...: longer than {MAX_NAME} bytes in total")
    if not allow_single and len(segs) < 2:
        raise ValueError(f"invalid {what} {name!r}: expected '<project>/<name>' (at least two segments)")
    return segs


def _no_dot(segs: list[str], what: str, full: str) -> None:
    for seg in segs:
        if seg.startswith("."):
            raise _reserved(what, full, seg, "names starting with '.' hold private state")


def check_prefix(prefix: object) -> list[str]:
    segs = split_path(prefix, "experiment prefix", allow_single=False)
    full = str(prefix)
    _no_dot(segs, "experiment prefix", full)
    for i, seg in enumerate(segs):
        if seg in RUN_FILES:
            raise _reserved("experiment prefix", full, seg, "a run's own file")
        if i >= 2 and seg in RUN_FOLDERS:
            raise _reserved("experiment prefix", full, seg, f"inside {'/'.join(segs[:i])!r}, a run's own folder")
    return segs


def metric_segments(name: str | None) -> list[str]:
    if name is None:
        return ["None"]
    segs = split_path(name, "metric name")
    _no_dot(segs, "metric name", name)
    for seg in segs:
        if seg in STREAM_FILES:
            raise _reserved("metric name", name, seg, "a file of every metric folder")
    return segs


def logical_dir(path: object) -> str:
    """Normalise a files() folder to the index form '/a/b' ('/' for the top)."""
    if path is None:
        return "/"
    if not isinstance(path, str):
        raise TypeError(f"files folder must be a string, got {type(path).__name__}")
    stripped = path.strip("/")
    if not stripped:
        return "/"
    segs = split_path(stripped, "files folder")
    for seg in segs:
        if seg.startswith(FILES_INDEX_STEM):
            raise _reserved("files folder", path, seg, "the files index")
    return "/" + "/".join(segs)


def file_name(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"file name must be a string, got {type(name).__name__}")
    if "/" in name:
        raise ValueError(f"invalid file name {name!r}: must not contain '/'")
    _check_segment(name, "file name", name)
    return name


def topic_folder(topic: str) -> str:
    """The reference's folder name for a track topic: '/' becomes '_'."""
    segs = split_path(topic, "track topic")
    _no_dot(segs, "track topic", topic)
    folder = "_".join(segs)
    if len(folder.encode("utf-8")) > MAX_SEGMENT:
        raise ValueError(f"invalid track topic {topic!r}: longer than {MAX_SEGMENT} bytes as one folder name")
    return folder


_MEDIA_TYPE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+/[!#$%&'*+.^_`|~0-9A-Za-z-]+(\s*;[\x20-\x7e]*)?$")


def content_type(value: object) -> str:
    """A stored file's media type ('type/subtype[; params]', printable ASCII): it becomes an HTTP header."""
    if not isinstance(value, str):
        raise TypeError(f"content type must be a string, got {type(value).__name__}")
    if len(value) > 255 or not _MEDIA_TYPE.match(value):
        raise ValueError(f"invalid content type {value[:80]!r}: expected 'type/subtype' in printable ASCII "
                         "(at most 255 characters, no line breaks)")
    return value
