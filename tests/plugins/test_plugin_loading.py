"""Plugin discovery, in fresh interpreters: nothing loads at `import ml_dash`; installed plugins load when the
first experiment starts; a broken plugin is skipped with a warning naming it; hooks without a spec are reported;
ML_DASH_DISABLE_PLUGINS=1 turns discovery off."""

from __future__ import annotations

import json

import pytest
from plugin_helpers import fake_dist, run_py

# Plugins for a fake site folder. Each good one leaves a trace in $TRACE so the run shows which hooks ran.
GOOD = """
import json, os
def _trace(*what):
    with open(os.environ["TRACE"], "a") as f:
        f.write(json.dumps(list(what)) + "\\n")
def ml_dash_experiment_started(experiment):
    _trace("started", experiment.prefix)
def ml_dash_experiment_finished(experiment, status):
    _trace("finished", experiment.prefix, status)
"""
BROKEN_IMPORT = "raise RuntimeError('boom at import')\n"
MISSPELT = """
def ml_dash_experiment_begun(experiment):   # no such hook
    pass
def ml_dash_experiment_finished(experiment, status):
    import os
    with open(os.environ["TRACE"], "a") as f:
        f.write('["misspelt-plugin-finished"]\\n')
"""
BAD_SIGNATURE = """
def ml_dash_experiment_finished(experiment, status, extra):   # 'extra' is not an argument of the spec
    pass
"""
MISSING_ATTR = "x = 1\n"

RUN = """
import sys, warnings
from ml_dash import Experiment
with Experiment("proj/run") .run as exp:
    for i in range(5):
        exp.metrics("train").log(step=i, loss=1.0 / (i + 1))
print("done", exp.status)
"""


@pytest.fixture
def site(tmp_path):
    site = tmp_path / "site"
    fake_dist(site, "good-plugin", "good", "good_plugin_mod", GOOD)
    fake_dist(site, "broken-plugin", "broken", "broken_plugin_mod", BROKEN_IMPORT)
    fake_dist(site, "misspelt-plugin", "misspelt", "misspelt_plugin_mod", MISSPELT)
    fake_dist(site, "badsig-plugin", "badsig", "badsig_plugin_mod", BAD_SIGNATURE)
    fake_dist(site, "noattr-plugin", "noattr", "noattr_plugin_mod", MISSING_ATTR, attr="plugin")
    return site


def traces(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_broken_plugins_are_skipped_with_a_warning_naming_them(site, tmp_path):
    trace = tmp_path / "trace.jsonl"
    res = run_py(RUN, cwd=tmp_path, env={"PYTHONPATH": str(site), "TRACE": str(trace)})
    assert res.returncode == 0, res.stderr
    assert "done COMPLETED" in res.stdout
    err = res.stderr
    # an entry point whose module raises on import
    assert "plugin 'broken' (broken_plugin_mod, from broken-plugin) failed to load and is skipped: " \
           "RuntimeError: boom at import" in err
    # an entry point naming an attribute that does not exist
    assert "plugin 'noattr' (noattr_plugin_mod:plugin, from noattr-plugin) failed to load and is skipped: " \
           "AttributeError" in err
    # an implementation whose arguments do not match the spec: refused by pluggy, reported, skipped
    assert "plugin 'badsig' (badsig_plugin_mod, from badsig-plugin) is skipped: PluginValidationError" in err
    assert "extra" in err
    # an implementation without a spec: reported, the rest of that plugin still works
    assert "plugin 'misspelt' (misspelt_plugin_mod, from misspelt-plugin) implements hooks that do not exist " \
           "and are never called: ml_dash_experiment_begun" in err
    t = traces(trace)  # the order among plugins follows discovery order, which the file system decides
    assert t[0] == ["started", "proj/run"]
    assert sorted(map(json.dumps, t[1:])) == sorted(map(json.dumps, [["misspelt-plugin-finished"],
                                                                     ["finished", "proj/run", "COMPLETED"]]))
    assert "good" not in err  # the good plugin is not mentioned at all
    from ml_dash import load

    assert len(load("proj/run", dash_root=str(tmp_path / ".dash")).metrics("train").read()) == 5


def test_disable_plugins_turns_discovery_off(site, tmp_path):
    trace = tmp_path / "trace.jsonl"
    code = RUN + """
import ml_dash.plugins as plugins
class InCode:
    def ml_dash_experiment_finished(self, experiment, status):
        print("in-code plugin saw", status)
plugins.register(InCode(), name="in-code")
with Experiment("proj/run2").run as exp:
    exp.log("hi")
try:
    Experiment("proj/run3", stores=["tensorboard"]).run.start()
except ValueError as e:
    print("refused:", e)
print("loaded:", sorted(m for m in sys.modules if m.endswith("_plugin_mod") or m == "ml_dash_tensorboard"))
"""
    res = run_py(code, cwd=tmp_path, env={"PYTHONPATH": str(site), "TRACE": str(trace),
                                          "ML_DASH_DISABLE_PLUGINS": "1"})
    assert res.returncode == 0, res.stderr
    assert "done COMPLETED" in res.stdout
    assert "MLDashWarning" not in res.stderr, res.stderr  # nothing was loaded, so nothing is reported
    assert traces(trace) == []
    assert "loaded: []" in res.stdout
    assert "in-code plugin saw COMPLETED" in res.stdout  # in-code registration still works
    assert "refused: no store handles destination 'tensorboard'" in res.stdout


def test_import_ml_dash_loads_no_plugin_and_scans_no_entry_point(tb_plugin, tmp_path):
    code = """
    import importlib.metadata as md, sys
    scans = []
    real = md.entry_points
    def spy(*a, **k):
        scans.append(k.get("group"))
        return real(*a, **k)
    md.entry_points = spy
    import ml_dash
    from ml_dash import Experiment, load
    from ml_dash.buffer import BufferConfig
    exp = Experiment("proj/lazy")          # made, not started: still nothing
    print("after import:", scans, "ml_dash_tensorboard" in sys.modules, "ml_dash.plugins" in sys.modules,
          "pluggy" in sys.modules)
    with exp.run:
        exp.metrics("train").log(step=0, loss=1.0)
    print("after a run:", scans, "ml_dash_tensorboard" in sys.modules)
    """
    res = run_py(code, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "after import: [] False False False" in res.stdout
    # the positive control: starting an experiment is what loads the installed plugins, once
    assert "after a run: ['ml_dash'] True" in res.stdout
