"""The viewer's server-side reductions against brute force: min/max per pixel bucket (linear and log x axes) and
the log search (substring and regex, either case, per line)."""

from __future__ import annotations

import numpy as np
from ml_dash.viewer.data import Columns, Logs, search_logs
from ml_dash.viewer.series import reduce


def _cols(x: np.ndarray, y: np.ndarray) -> Columns:
    n = len(x)
    return Columns(cols={"index": np.arange(n, dtype=float), "_ts": np.full(n, np.nan), "step": x, "v": y}, rows=n)


def test_buckets_hold_the_exact_min_and_max_of_their_rows() -> None:
    rng = np.random.default_rng(7)
    for trial in range(24):
        n_rows = int(rng.integers(3000, 40000))
        x = np.arange(n_rows, dtype=float) if trial % 2 else np.sort(rng.uniform(0.5, 1e4, n_rows))
        y = rng.normal(size=n_rows)
        y[rng.integers(0, n_rows, 5)] = 50.0  # isolated spikes
        xlog = trial % 4 == 3
        n = int(rng.integers(10, 900))
        xmin, xmax = (None, None) if trial % 3 else (float(x[n_rows // 5]), float(x[n_rows // 2]))
        d = reduce([("a", _cols(x, y))], "v", "step", n, xmin, xmax, xlog=xlog)
        assert d["mode"] == "buckets"
        ok = x > 0 if xlog else np.ones(n_rows, bool)
        lo = x[ok][0] if xmin is None else xmin
        hi = x[ok][-1] if xmax is None else xmax
        sel = ok & (x >= lo) & (x <= hi)
        xs, ys = x[sel], y[sel]
        tr = np.log10 if xlog else (lambda v: v)
        idx = np.clip(((tr(xs) - tr(lo)) / (tr(hi) - tr(lo)) * n).astype(int), 0, n - 1)
        want = {int(k): (ys[idx == k].min(), ys[idx == k].max(), ys[idx == k][-1]) for k in np.unique(idx)}
        got_k = np.rint((tr(np.array(d["x"])) - tr(lo)) / (tr(hi) - tr(lo)) * n - 0.5).astype(int)
        r = d["runs"][0]
        got = {int(k): (r["lo"][i], r["hi"][i], r["y"][i]) for i, k in enumerate(got_k)}
        assert got == want, f"trial {trial}"


def test_log_search_either_case_per_line() -> None:
    lg = Logs()
    lg.add([{"message": m, "level": lv, "sequenceNumber": i}
            for i, (m, lv) in enumerate([("Hello World", "info"), ("a\nloss b", "WARN"), ("İx loss", "info"),
                                         ("nothing", "info"), ("LOSS loss", "error"), ("x\\Sy 1", "info")])])
    assert list(search_logs(lg, None, "loss", False)) == [1, 2, 4]
    assert list(search_logs(lg, None, "LOSS", True)) == [1, 2, 4]
    assert list(search_logs(lg, "info", "loss", False)) == [2]
    assert list(search_logs(lg, "warn,error", None, False)) == [1, 4]
    assert list(search_logs(lg, None, "^loss", True)) == [4]  # ^ and $ hold at each line
    assert list(search_logs(lg, None, "world$", True)) == [0]
    assert list(search_logs(lg, None, r"\S+ 1$", True)) == [5]  # an escape whose meaning depends on case
    assert list(search_logs(lg, None, "\\S", False)) == [5]  # a substring is literal
    assert list(search_logs(lg, None, None, False)) == list(range(6))
