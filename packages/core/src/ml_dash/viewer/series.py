"""Chart data from full-resolution columns: x axis choice, smoothing, range filter, then min/max/last per bucket.

Buckets are laid on the x axis (not on row counts), so overlaid runs share one grid; a range is filtered before
it is reduced, so zooming in re-queries at full detail; when every run has at most ``n`` points in range, the
points are sent as they are.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .data import Columns

X_AXES = ("step", "index", "wall", "relative")


def x_column(c: Columns, x: str) -> np.ndarray:
    """``step`` (the step field when logged, else the row index), ``index``, ``wall`` (``_ts``), ``relative``
    (seconds since the first row) or any numeric field."""
    if x == "step":
        col = c.cols.get("step")
        return col if col is not None and np.isfinite(col).any() else c.cols.get("index", np.empty(0))
    if x == "wall":
        return c.cols.get("_ts", np.empty(0))
    if x == "relative":
        ts = c.cols.get("_ts", np.empty(0))
        fin = ts[np.isfinite(ts)]
        return ts - fin[0] if len(fin) else ts
    col = c.cols.get(x)
    if col is None:
        raise KeyError(f"no field {x!r} in this stream to use as x axis")
    return col


def ema(y: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's debiased exponential moving average; non-finite values pass through and are skipped."""
    out = np.array(y, dtype=np.float64)
    fin = np.isfinite(y)
    v = y[fin]
    if not len(v) or weight <= 0:
        return out
    try:
        from scipy.signal import lfilter  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        acc = 0.0
        res = np.empty(len(v))
        w1 = 1.0 - weight
        for i, val in enumerate(v.tolist()):
            acc = acc * weight + w1 * val
            res[i] = acc
    else:
        res = lfilter([1.0 - weight], [1.0, -weight], v)
    debias = 1.0 - weight ** np.arange(1, len(v) + 1, dtype=np.float64)
    out[fin] = res / debias
    return out


def running_mean(y: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last ``window`` finite values (fewer at the start)."""
    out = np.array(y, dtype=np.float64)
    fin = np.isfinite(y)
    v = y[fin]
    if not len(v) or window <= 1:
        return out
    cs = np.concatenate([[0.0], np.cumsum(v)])
    i = np.arange(1, len(v) + 1)
    lo = np.maximum(0, i - window)
    out[fin] = (cs[i] - cs[lo]) / (i - lo)
    return out


def smooth(y: np.ndarray, spec: str | None) -> np.ndarray | None:
    """``ema:<weight 0..0.999>`` or ``mean:<window>``; None or ``none``: no smoothing."""
    if not spec or spec == "none":
        return None
    kind, _, arg = spec.partition(":")
    try:
        val = float(arg)
    except ValueError:
        raise ValueError(f"invalid smoothing {spec!r}: expected ema:<weight> or mean:<window>") from None
    if kind == "ema" and 0 <= val < 1:
        return ema(y, val)
    if kind == "mean" and 1 <= val <= 1_000_000:
        return running_mean(y, int(val))
    raise ValueError(f"invalid smoothing {spec!r}: ema weight in [0, 1), mean window in [1, 1e6]")


def _clean(a: np.ndarray) -> list[float | None]:
    return [None if not math.isfinite(v) else v for v in a.tolist()]


def _prepare(c: Columns, field: str, x: str, spec: str | None, xlog: bool = False) -> dict[str, Any]:
    y = c.cols.get(field)
    if y is None:
        return {"x": np.empty(0), "y": np.empty(0), "s": None, "ts": np.empty(0), "missing": True}
    xs = x_column(c, x)
    ts = c.cols.get("_ts", np.full(len(y), np.nan))
    ok = np.isfinite(xs) & np.isfinite(y)
    if xlog:
        with np.errstate(invalid="ignore"):
            ok &= xs > 0  # a log x axis has no place for x <= 0
    if not ok.all():  # the common case (every row has both) needs no copy
        xs, y, ts = xs[ok], y[ok], ts[ok]
    if len(xs) > 1 and not (xs[1:] >= xs[:-1]).all():
        order = np.argsort(xs, kind="stable")
        xs, y, ts = xs[order], y[order], ts[order]
    s = smooth(y, spec)
    return {"x": xs, "y": y, "s": s, "ts": ts, "missing": False}


def reduce(runs: list[tuple[str, Columns]], field: str, x: str = "step", n: int = 1000,
           xmin: float | None = None, xmax: float | None = None, spec: str | None = None,
           xlog: bool = False) -> dict[str, Any]:
    """One chart's data for several runs on a shared x grid: per run ``y`` (last per bucket), ``lo``/``hi``
    (min/max per bucket: the band), ``s`` (smoothed, when asked), with nulls where a run has no point.
    ``xlog``: buckets of equal width on a logarithmic x axis (rows with x <= 0 left out)."""
    n = max(10, min(int(n), 20_000))
    if xlog and xmin is not None and xmin <= 0:
        xmin = None
    prep = [(p, _prepare(c, field, x, spec, xlog), c) for p, c in runs]
    sel = []
    for p, d, c in prep:
        xs = d["x"]
        a = 0 if xmin is None else int(np.searchsorted(xs, xmin, "left"))
        b = len(xs) if xmax is None else int(np.searchsorted(xs, xmax, "right"))
        sel.append((p, d, c, a, b))
    counts = [b - a for _, _, _, a, b in sel]
    step = max(1, sum(counts) // 20_000)  # the percentiles of an even sample: as good for a y range, far cheaper
    finite_all = [d["y"][a:b:step] for _, d, _, a, b in sel if b > a]
    q = None
    if finite_all:
        allv = np.concatenate(finite_all)
        if len(allv):
            lo_q, hi_q = np.quantile(allv, [0.01, 0.99])
            q = [float(lo_q), float(hi_q)]
    out_runs: list[dict[str, Any]] = []
    if not counts or max(counts) <= n:
        grid = np.unique(np.concatenate([d["x"][a:b] for _, d, _, a, b in sel])) if sel else np.empty(0)
        for p, d, c, a, b in sel:
            yv = np.full(len(grid), np.nan)
            sv = np.full(len(grid), np.nan) if d["s"] is not None else None
            pos = np.searchsorted(grid, d["x"][a:b])
            yv[pos] = d["y"][a:b]
            if sv is not None:
                sv[pos] = d["s"][a:b]
            out_runs.append(_run_out(p, d, c, a, b, yv, yv, yv, sv))
        return {"mode": "raw", "x": _clean(grid), "runs": out_runs, "q": q, "n": n}
    lo = min(float(d["x"][a]) for _, d, _, a, b in sel if b > a) if xmin is None else float(xmin)
    hi = max(float(d["x"][b - 1]) for _, d, _, a, b in sel if b > a) if xmax is None else float(xmax)
    tr = np.log10 if xlog else None  # bucket positions are laid out on the axis as drawn
    if tr is not None:
        lo, hi = float(tr(lo)), float(tr(max(hi, lo)))
    width = (hi - lo) or 1.0
    grid = lo + (np.arange(n) + 0.5) * width / n
    edges = lo + np.arange(n + 1) * width / n
    if tr is not None:
        grid, edges = 10.0 ** grid, 10.0 ** edges
    used = np.zeros(n, dtype=bool)
    tmp = []
    for p, d, c, a, b in sel:
        xs, y = d["x"][a:b], d["y"][a:b]
        yv, lov, hiv = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
        sv = np.full(n, np.nan) if d["s"] is not None else None
        if len(xs):
            # xs is sorted: each bucket's rows start where its left edge would be inserted (n binary searches,
            # not arithmetic over every row); the first and last bucket take what lies beyond the range
            pos = np.searchsorted(xs, edges, "left")
            pos[0], pos[-1] = 0, len(xs)
            bid = np.flatnonzero(pos[1:] > pos[:-1])
            starts = pos[bid]
            ends = pos[bid + 1] - 1
            lov[bid] = np.fmin.reduceat(y, starts)
            hiv[bid] = np.fmax.reduceat(y, starts)
            yv[bid] = y[ends]
            if sv is not None:
                sv[bid] = d["s"][a:b][ends]
            used[bid] = True
        tmp.append((p, d, c, a, b, yv, lov, hiv, sv))
    keep = np.flatnonzero(used)
    for p, d, c, a, b, yv, lov, hiv, sv in tmp:
        out_runs.append(_run_out(p, d, c, a, b, yv[keep], lov[keep], hiv[keep],
                                 sv[keep] if sv is not None else None))
    return {"mode": "buckets", "x": _clean(grid[keep]), "runs": out_runs, "q": q, "n": n}


def _run_out(p: str, d: dict[str, Any], c: Columns, a: int, b: int, yv: np.ndarray, lov: np.ndarray,
             hiv: np.ndarray, sv: np.ndarray | None) -> dict[str, Any]:
    ts = d["ts"]
    m = float(np.fmax.reduce(ts)) if len(ts) else math.nan  # fmax skips NaN
    last_ts = m if math.isfinite(m) else None
    s_all = d["s"]
    return {"prefix": p, "y": _clean(yv), "lo": _clean(lov), "hi": _clean(hiv),
            "s": _clean(sv) if sv is not None else None, "points": int(np.isfinite(yv).sum()),
            "inRange": b - a, "rows": c.rows, "offset": c.offset, "invalid": c.invalid,
            "missing": d["missing"], "lastTs": last_ts,
            "lastX": float(d["x"][-1]) if len(d["x"]) else None,
            "lastIndex": _last_finite(c.cols.get("index")), "firstTs": _first_finite(c.cols.get("_ts")),
            "smoothLast": float(s_all[-1]) if s_all is not None and len(s_all) else None,
            "smoothCount": int(len(d["y"])),
            "tail": _clean(d["y"][-100:])}


def _last_finite(a: np.ndarray | None) -> float | None:
    """The last finite value, looked for in growing windows from the end (no pass over a long column)."""
    if a is None or not len(a):
        return None
    k = 16
    while True:
        w = a[-k:]
        fin = np.flatnonzero(np.isfinite(w))
        if len(fin):
            return float(w[fin[-1]])
        if k >= len(a):
            return None
        k *= 16


def _first_finite(a: np.ndarray | None) -> float | None:
    if a is None or not len(a):
        return None
    k = 16
    while True:
        w = a[:k]
        fin = np.flatnonzero(np.isfinite(w))
        if len(fin):
            return float(w[fin[0]])
        if k >= len(a):
            return None
        k *= 16


def group(runs: list[dict[str, Any]], key_of: dict[str, str]) -> list[dict[str, Any]]:
    """Runs merged per group: the mean of the members' lines and the min/max of their bands."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault(key_of.get(r["prefix"], "(none)"), []).append(r)
    out = []
    for key, members in groups.items():
        def arr(k: str, members: list[dict[str, Any]] = members) -> np.ndarray:
            return np.array([[np.nan if v is None else v for v in m[k]] for m in members], dtype=np.float64)

        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                y = np.nanmean(arr("y"), axis=0)
                lo = np.nanmin(arr("lo"), axis=0)
                hi = np.nanmax(arr("hi"), axis=0)
                s = np.nanmean(arr("s"), axis=0) if all(m["s"] is not None for m in members) else None
        lts = [m["lastTs"] for m in members if m["lastTs"] is not None]
        out.append({"prefix": key, "members": [m["prefix"] for m in members], "y": _clean(y), "lo": _clean(lo),
                    "hi": _clean(hi), "s": _clean(s) if s is not None else None,
                    "points": int(np.isfinite(y).sum()), "rows": sum(m["rows"] for m in members),
                    "lastTs": max(lts) if lts else None, "offset": None, "invalid": 0, "missing": False,
                    "tail": [], "smoothLast": None, "smoothCount": 0, "lastX": None,
                    "lastIndex": None, "firstTs": None})
    return out
