"""One module owns the `.dash` format: the layout's file names appear in the code of `ml_dash.layout` (and the
name rules of `ml_dash.names`) only; every other module asks `layout`. Docstrings, comments and messages (text
with spaces) may name them."""

import ast
from pathlib import Path

from ml_dash import layout

CORE = Path(__file__).resolve().parents[2] / "packages" / "core" / "src" / "ml_dash"
NAMES = ("experiment.json", "parameters.json", "logs.jsonl", "data.jsonl", "metadata.json", ".files_metadata")
OWNERS = {"layout.py", "names.py"}
# modules that still spell the layout out themselves; the test fails when one no longer does, so this only shrinks
KNOWN = {"runs.py", "server/dump.py", "server/folder.py", "server/storage.py", "viewer/app.py",
         "viewer/data.py", "viewer/live.py"}


def literals(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings \
                and not any(c.isspace() for c in node.value):  # a path or file name, not a sentence about one
            found.update(name for name in NAMES if name in node.value)
    return found


def test_only_layout_spells_out_the_format():
    spelled = {}
    for path in sorted(CORE.rglob("*.py")):
        rel = path.relative_to(CORE).as_posix()
        if rel in OWNERS:
            continue
        hits = literals(path)
        if hits:
            spelled[rel] = sorted(hits)
    unexpected = {k: v for k, v in spelled.items() if k not in KNOWN}
    assert not unexpected, f"use ml_dash.layout instead of spelling out the layout: {unexpected}"
    gone = sorted(k for k in KNOWN if k not in spelled and (CORE / k).exists())
    assert not gone, f"these modules no longer spell out the layout: remove them from KNOWN: {gone}"


def test_layout_names_every_file_of_a_run():
    assert (layout.EXPERIMENT_JSON, layout.PARAMETERS_JSON, layout.DATA, layout.META, layout.LOGS,
            layout.FILES_INDEX, layout.PRIVATE) == ("experiment.json", "parameters.json", "data.jsonl",
                                                    "metadata.json", "logs/logs.jsonl", ".files_metadata.json",
                                                    ".ml_dash")


def test_listings_builders_and_staging(tmp_path):
    from ml_dash import Experiment

    exp = Experiment("proj/run", dash_root=tmp_path)
    with exp.run:
        exp.metrics("train").log(loss=1.0)
        exp.metrics("eval/sub").log(acc=0.5)
        exp.tracks("a/b").append(_ts=1.0, x=1)
        exp.tracks("a_b").append(_ts=1.0, y=2)  # same folder name as 'a/b': gets a folder of its own
        exp.files("out").save_text("hi", "note.txt")
    d = layout.ExperimentDir(tmp_path, "proj/run")
    assert {"train", "eval/sub"} <= set(d.metric_names())
    topics = dict(d.topic_files())
    assert set(topics) == {"a/b", "a_b"} and topics["a/b"].parent != topics["a_b"].parent
    assert d.topic_file("a_b") == topics["a_b"] and d.topic_file("nope") is None
    kinds = [k for k, _ in d.stream_files()]
    assert kinds.count("logs") == 1 and kinds.count("tracks") == 2
    assert [e["filename"] for e in d.files_index()] == ["note.txt"]
    assert d.read_info()["status"] == "COMPLETED" and layout.list_runs(tmp_path) == ["proj/run"]
    assert d.rel(d.metric_file("train")) == "metrics/train/data.jsonl"
    # a staged file (content and its entry) is found again by the next opening, until it is published
    content = d.new_stage()
    content.write_text("x")
    layout.stage_entry(content, layout.file_entry("proj/run", "/", "x.txt", None, None, None, None))
    found = d.recover_staged()
    assert [e["filename"] for _, e in found] == ["x.txt"] and found[0][1]["contentType"] == "text/plain"
    content.rename(tmp_path / "moved")  # published: the content moved away, then the staging folder goes
    layout.unstage(content)
    assert d.recover_staged() == []
    assert layout.new_info("n", "p", "p/n", None, None, None, "t")["created_at"] == "t"
    assert layout.effective_status({"status": "RUNNING", "heartbeatAt": "2000-01-01T00:00:00.000000Z"}) == "CRASHED"
    assert layout.merge_tracks([{"timestamp": 1, "a": 1}, {"timestamp": 1, "b": 2}]) == [{"timestamp": 1, "a": 1,
                                                                                            "b": 2}]
