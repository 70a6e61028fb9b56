"""Validation of every name that becomes a path: prefixes, metric names, topics, file folders and names."""

from __future__ import annotations

_RESERVED = {"data.jsonl", "metadata.json", ".files_metadata.json", ".ml_dash"}
_MAX_SEGMENT = 200


def _check_segment(seg: str, what: str, full: str) -> None:
    if seg in ("", ".", ".."):
        raise ValueError(f"invalid {what} {full!r}: empty, '.' or '..' path segment")
    try:
        nbytes = len(seg.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(f"invalid {what} {full!r}: not valid Unicode (lone surrogate)") from None
    if nbytes > _MAX_SEGMENT:
        raise ValueError(f"invalid {what} {full!r}: a path segment is longer than {_MAX_SEGMENT} bytes")
    for ch in seg:
        if ch < " " or ch == "\x7f" or ch == "\\":
            raise ValueError(f"invalid {what} {full!r}: contains a control character or backslash")
    if seg in _RESERVED:
        raise ValueError(f"invalid {what} {full!r}: {seg!r} is a reserved name")


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
    if not allow_single and len(segs) < 2:
        raise ValueError(f"invalid {what} {name!r}: expected '<project>/<name>' (at least two segments)")
    return segs


def check_prefix(prefix: object) -> list[str]:
    return split_path(prefix, "experiment prefix", allow_single=False)


def metric_segments(name: str | None) -> list[str]:
    return ["None"] if name is None else split_path(name, "metric name")


def logical_dir(path: object) -> str:
    """Normalise a files() folder to the index form '/a/b' ('/' for the top)."""
    if path is None:
        return "/"
    if not isinstance(path, str):
        raise TypeError(f"files folder must be a string, got {type(path).__name__}")
    stripped = path.strip("/")
    if not stripped:
        return "/"
    return "/" + "/".join(split_path(stripped, "files folder"))


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
    folder = "_".join(segs)
    if len(folder.encode("utf-8")) > _MAX_SEGMENT:
        raise ValueError(f"invalid track topic {topic!r}: longer than {_MAX_SEGMENT} bytes as one folder name")
    return folder
