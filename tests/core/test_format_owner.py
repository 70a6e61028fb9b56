"""One module owns the `.dash` format: the layout's file names, its folder names in paths and the JSON shapes of its
files appear in the code of `ml_dash.layout` (and the name rules of `ml_dash.names`) only; every other module asks
`layout`. Docstrings, comments and messages (text with spaces) may name them."""

import ast
from pathlib import Path

from ml_dash import layout

CORE = Path(__file__).resolve().parents[2] / "packages" / "core" / "src" / "ml_dash"
NAMES = ("experiment.json", "parameters.json", "logs.jsonl", "data.jsonl", "metadata.json", ".files_metadata",
         ".ml_dash")
# a run's folders: flagged where a path is built from them (`/`, `+`, joinpath, glob...), not as stream kinds
FOLDERS = {"logs", "metrics", "tracks", "files"}
JOINS = {"joinpath", "join", "inside", "glob", "rglob"}
# keys only the format's files have: a dict literal (or a table of key/value pairs) holding one builds a file's shape
KEYS = {"write_protected", "bindrs", "created_at", "metricId", "trackId", "totalDataPoints", "totalEntries",
        "nextIndex", "firstTimestamp", "lastTimestamp", "uploadedAt", "deletedAt", "heartbeatAt", "sequenceNumber"}
OWNERS = {"layout.py", "names.py"}
# the HTTP API's schema describes the records it accepts (docs/api.md), field by field: not a writer of the files
SCHEMA = {"server/openapi.py"}


def _str(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _folder(node: ast.AST) -> bool:
    """A constant naming a run folder as a path segment: 'metrics', or the start of a path 'metrics/...'."""
    text = _str(node)
    return text is not None and (text in FOLDERS or text.split("/")[0] in FOLDERS and text.endswith("/"))


def literals(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    found = set()
    for node in ast.walk(tree):
        text = _str(node)
        if text is not None and id(node) not in docstrings \
                and not any(c.isspace() for c in text):  # a path or file name, not a sentence about one
            found.update(name for name in NAMES if name in text)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Div, ast.Add)):
            found.update(f"path {_str(side)!r}" for side in (node.left, node.right) if _folder(side))
        if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in JOINS:
            found.update(f"path {_str(a)!r}" for a in node.args if _folder(a))
        if isinstance(node, ast.JoinedStr) and node.values and _folder(node.values[0]):
            found.add(f"path f{_str(node.values[0])!r}")  # f"metrics/{name}"
        if isinstance(node, ast.Dict):
            found.update(f"shape {k}" for k in map(_str, node.keys) if k in KEYS)
        if isinstance(node, ast.Tuple) and node.elts and all(isinstance(e, ast.Tuple) and len(e.elts) == 2
                                                             for e in node.elts):
            found.update(f"shape {k}" for k in (_str(e.elts[0]) for e in node.elts) if k in KEYS)  # type: ignore
    return found


def test_only_layout_spells_out_the_format():
    spelled = {}
    for path in sorted(CORE.rglob("*.py")):
        rel = path.relative_to(CORE).as_posix()
        if rel in OWNERS | SCHEMA:
            continue
        hits = literals(path)
        if hits:
            spelled[rel] = sorted(hits)
    assert not spelled, f"use ml_dash.layout instead of spelling out the layout: {spelled}"


def test_the_check_sees_each_way_of_spelling_the_format(tmp_path):
    cases = {
        'p = run / "experiment.json"': "experiment.json",
        'p = run.joinpath("metrics", name, x)': "path 'metrics'",
        'p = run / "tracks" / folder': "path 'tracks'",
        'lock = "metrics/" + name': "path 'metrics/'",
        'key = f"tracks/{topic}"': "path f'tracks/'",
        'p = os.path.join(run, "files")': "path 'files'",
        'info = {"name": n, "write_protected": False}': "shape write_protected",
        'for k, v in (("bindrs", []), ("tags", [])): e.setdefault(k, v)': "shape bindrs",
    }
    harmless = ['if kind == "metrics": pass', 'route = e + "/metrics"', 'url = f"{e}/metrics/{name}"', 'x = {"rows": 1}',
                'warn("could not write experiment.json")', 'ok = k in ("uploadedAt", "updatedAt")']
    for i, (code, want) in enumerate(cases.items()):
        f = tmp_path / f"c{i}.py"
        f.write_text(code + "\n")
        assert want in literals(f), code
    f = tmp_path / "harmless.py"
    f.write_text("\n".join(harmless) + "\n")
    assert literals(f) == set()


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
    assert layout.run_span({"created_at": "a", "endedAt": None, "heartbeatAt": "b", "updated_at": "c"}) == ("a", "b")
    assert layout.effective_status({"status": "RUNNING", "heartbeatAt": "2000-01-01T00:00:00.000000Z"}) == "CRASHED"
    assert layout.merge_tracks([{"timestamp": 1, "a": 1}, {"timestamp": 1, "b": 2}]) == [{"timestamp": 1, "a": 1,
                                                                                            "b": 2}]


def test_list_runs_walks_only_where_runs_can_be(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    for rel in ("p/a", "p/a/sub", "p/a/metrics/m", "p/.hidden/r", "single", "p/deep/x/y/z"):
        (root / rel).mkdir(parents=True)
        (root / rel / layout.EXPERIMENT_JSON).write_text("{}")
    (outside / "p" / "b").mkdir(parents=True)
    (outside / "p" / "b" / layout.EXPERIMENT_JSON).write_text("{}")
    (root / "q").symlink_to(outside / "p")  # a link out of the root is never followed
    # a run nested under a run's prefix is listed; a run's own folders, hidden folders and one-segment prefixes not
    assert layout.list_runs(root) == ["p/a", "p/a/sub", "p/deep/x/y/z"]
