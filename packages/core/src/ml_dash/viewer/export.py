"""``ml-dash export-html PREFIX... -o DIR``: a static copy of runs' pages that opens from ``file://`` offline.

The folder holds the same scripts as the live viewer, and ``data.js`` with each chart's data already reduced
(min/max/last per bucket, so spikes survive) and the last log lines: no server, no network, no fetch.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from .app import STATIC, bundle, dumps, run_info, shell, track_data
from .data import Root, log_row
from .series import reduce

LOG_LINES = 2000


def _round(values: list[float | None]) -> list[float | None]:
    """Values to 7 significant digits: what a chart can show, at half the size."""
    return [None if v is None else float(f"{v:.7g}") for v in values]


def export_html(prefixes: list[str], root: str | os.PathLike[str], out: str | os.PathLike[str],
                points: int = 500) -> Path:
    dest = Path(out)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FileExistsError(f"{dest} exists and is not an empty folder")
    r = Root(root)
    prefixes = list(dict.fromkeys(prefixes))
    data: dict[str, Any] = {"runs": [], "index": {}, "run": {}, "series": {}, "logs": {}, "tracks": {}}
    for i, prefix in enumerate(prefixes):
        info = run_info(r, prefix)  # raises NotFound with a clear message for an unknown prefix
        data["index"][prefix] = i
        data["runs"].append(r.summary(prefix))
        info["files"] = 0
        data["run"][prefix] = info
        for stream, sinfo in info["streams"].items():
            cols = r.stream_columns(prefix, stream)
            for field in sinfo["fields"]:
                res = reduce([(prefix, cols)], field, "step", points)
                one = res["runs"][0]
                keep = {k: one[k] for k in ("prefix", "y", "points", "rows", "lastTs", "firstTs", "lastIndex",
                                            "invalid")}
                keep["y"] = _round(one["y"])
                if res["mode"] == "buckets":
                    keep.update(lo=_round(one["lo"]), hi=_round(one["hi"]))
                data["series"][f"{prefix}\0{stream}\0{field}"] = {"mode": res["mode"], "x": res["x"], "runs": [keep]}
        lg = r.run_logs(prefix)
        n = len(lg.message)
        data["logs"][prefix] = {"total": n, "rows": [log_row(lg, k) for k in range(max(0, n - LOG_LINES), n)]}
        data["tracks"][prefix] = {t: track_data(r, prefix, t) for t in info["topics"]}
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(STATIC, dest / "static", dirs_exist_ok=True)
    (dest / "static" / "viewer.js").write_bytes(bundle()[0])
    (dest / "data.js").write_bytes(b"window.__mlDashStatic = " + dumps(data) + b";\n")

    def page(name: str, kind: str, attrs: dict[str, str] | None = None) -> None:
        html = shell("static", kind, extra_scripts=["data.js"], meta_csp=True, attrs=attrs)
        (dest / name).write_text(html, encoding="utf-8")

    page("index.html", "runs")
    page("compare.html", "compare")
    for i, prefix in enumerate(prefixes):
        page(f"run-{i}.html", "run", {"run": prefix})
    return dest / "index.html"
