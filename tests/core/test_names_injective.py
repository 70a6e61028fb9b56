"""Names never collide: every (prefix, kind, name) the checks accept maps to its own files, and no accepted
name reaches into another run's or stream's layout; refused names fail at the call with a ValueError that
names the reserved segment. Symbolic links never lead a run out of its root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ml_dash import Experiment, load
from ml_dash.layout import ExperimentDir
from ml_dash.names import check_prefix, logical_dir, metric_segments, topic_folder

KINDS = {"metrics": "metric", "tracks": "track", "files": "files"}
SEGS = st.lists(st.sampled_from(["a", "b", "metrics", "logs", "tracks", "files", "experiment.json", "parameters.json",
                                 "data.jsonl", "metadata.json", "logs.jsonl", ".ml_dash", ".files_metadata.json"]),
                min_size=3, max_size=7)


def _items(segs: list[str]) -> list[tuple[str, str, str]]:
    """Every way to read one path as (prefix, kind, name): the cut points where collisions would hide."""
    out = []
    for i in range(2, len(segs)):
        prefix, head, rest = "/".join(segs[:i]), segs[i], segs[i + 1:]
        if head in ("experiment.json", "parameters.json", ".ml_dash") and not rest:
            out.append((prefix, "info", ""))
        elif head == "logs" and rest == ["logs.jsonl"]:
            out.append((prefix, "logs", ""))
        elif head in KINDS and rest:
            out.append((prefix, KINDS[head], "/".join(rest)))
    return out


def _owned(prefix: str, kind: str, name: str) -> set[tuple[str, ...]]:
    """The files and folders one stream owns, as path tuples under the root (the files its writer creates)."""
    run = tuple(check_prefix(prefix))
    if kind == "info":
        return {run + ("experiment.json",), run + ("parameters.json",), run + (".ml_dash",)}
    if kind == "logs":
        return {run + ("logs", "logs.jsonl")}
    if kind == "metric":
        folder = run + ("metrics", *metric_segments(name))
        return {folder + ("data.jsonl",), folder + ("metadata.json",)}
    if kind == "track":
        return {run + ("tracks", topic_folder(name))}
    segs = [s for s in logical_dir(name).split("/") if s]
    return {run + ("files", *segs, "1234567890123456789")}


@settings(max_examples=300, deadline=None)
@given(st.lists(SEGS, min_size=1, max_size=3))
def test_accepted_names_never_share_or_nest_into_each_others_files(paths: list[list[str]]) -> None:
    owned: dict[tuple[str, str, str], set[tuple[str, ...]]] = {}
    for segs in paths:
        for prefix, kind, name in _items(segs) + [("/".join(segs[:2]), "info", ""), ("/".join(segs), "info", "")]:
            try:
                owned[(prefix, kind, name)] = _owned(prefix, kind, name)
            except ValueError:
                continue
    keys = list(owned)
    for i, k1 in enumerate(keys):
        for k2 in keys[i + 1:]:
            if k1[1] == k2[1] == "track" and k1[0] == k2[0]:
                continue  # 'a/b' and 'a_b' share a base folder name: the layout gives the second '~2'
            for p1 in owned[k1]:
                for p2 in owned[k2]:
                    n = min(len(p1), len(p2))
                    assert p1[:n] != p2[:n], f"{k1} and {k2} collide at {'/'.join(p1[:n])}"


def test_the_issue_collision_is_refused_at_the_call(tmp_path: Path) -> None:
    with Experiment("nest/r", dash_root=tmp_path).run as e:
        e.metrics("a/metrics/b").log(v=1)
    with pytest.raises(ValueError, match="'metrics' is reserved"):
        Experiment("nest/r/metrics/a", dash_root=tmp_path)
    for bad in ("p/a/experiment.json", "p/experiment.json", "p/.ml_dash", "p/a/logs", "p/a/files/x"):
        with pytest.raises(ValueError, match="reserved"):
            Experiment(bad, dash_root=tmp_path)
    with Experiment("p/a", dash_root=tmp_path).run as e:
        for name in ("x/data.jsonl", "metadata.json", ".hidden"):
            with pytest.raises(ValueError, match="reserved"):
                e.metrics(name).log(v=1)
        with pytest.raises(ValueError, match="reserved"):
            e.files(".files_metadata.json").save_text("x", to="a.txt")
        with pytest.raises(ValueError, match="in total"):
            e.metrics("/".join(["m" * 150] * 8)).log(v=1)
    assert load("nest/r", dash_root=tmp_path).metrics("a/metrics/b").read()[0]["data"]["v"] == 1


def test_symlinks_never_lead_a_run_out_of_its_root(tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    os.symlink(elsewhere, root / "lnk")
    with pytest.raises(ValueError, match="symbolic link"):
        Experiment("lnk/run", dash_root=root)
    with pytest.raises(ValueError, match="symbolic link"):
        ExperimentDir(root, "lnk/deeper/run")
    (root / "p").mkdir()
    os.symlink(elsewhere, root / "p" / "r")
    with pytest.raises(ValueError, match="symbolic link"):
        Experiment("p/r", dash_root=root)
    assert list(elsewhere.iterdir()) == []
    linked_root = tmp_path / "linked-root"  # the root itself may be a link: that is the user's choice
    os.symlink(root, linked_root)
    with Experiment("p/ok", dash_root=linked_root).run as e:
        e.log("fine")
    assert load("p/ok", dash_root=root).logs.read()[0]["message"] == "fine"
