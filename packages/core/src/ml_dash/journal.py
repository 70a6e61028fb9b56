"""Deprecated: split into `jsonio` (JSON helpers) and `layout` (the `.dash` format). Kept only while other
branches move over; removed before the refactor ends."""

from .jsonio import encode as _encode  # noqa: F401
from .jsonio import iso, new_id, now_iso, read_json, read_jsonl, write_json_atomic  # noqa: F401
from .jsonio import scan_tail as _tail  # noqa: F401
from .layout import ExperimentDir, Stream, _track_meta, _track_stats  # noqa: F401
