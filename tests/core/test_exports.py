"""The public names of `ml_dash`: one sorted ``__all__``, every name importable, nothing public left out."""

import os
import subprocess
import sys
import types

import ml_dash

PUBLIC = [
    "__version__",
    "BufferConfig",
    "Experiment",
    "ExperimentView",
    "hookimpl",
    "load",
    "MLDashWarning",
    "PermanentError",
    "RetryLater",
    "Store",
]


def test_all_is_pinned_and_sorted():
    assert ml_dash.__all__ == PUBLIC
    assert ml_dash.__all__ == sorted(ml_dash.__all__, key=str.casefold)


def test_every_public_member_is_exported():
    # httpx's test_exported_members: whatever the package shows without an underscore is in __all__ (submodules
    # excepted: they are reached as ml_dash.<module>, not as names of the package)
    shown = {n for n in dir(ml_dash)
             if not n.startswith("_") and not isinstance(getattr(ml_dash, n), types.ModuleType)}
    assert shown | {"__version__"} == set(ml_dash.__all__)


def test_every_exported_name_is_the_documented_object():
    from ml_dash import hookimpl, hookspecs, stores

    for name in ml_dash.__all__:
        assert getattr(ml_dash, name) is not None, name
    assert hookimpl is hookspecs.hookimpl
    assert ml_dash.Store is stores.Store and ml_dash.PermanentError is stores.PermanentError
    assert ml_dash.RetryLater is stores.RetryLater and ml_dash.RetryLater("busy", retry_after=3).retry_after == 3
    assert issubclass(ml_dash.MLDashWarning, UserWarning)


def test_hookimpl_is_lazy_and_marks_a_plugin_the_manager_accepts():
    code = (
        "import sys, ml_dash\n"
        "assert 'pluggy' not in sys.modules, 'import ml_dash must not import pluggy'\n"
        "@ml_dash.hookimpl(trylast=True)\n"
        "def ml_dash_experiment_started(experiment): pass\n"
        "import types; from ml_dash import plugins\n"
        "mod = types.ModuleType('p'); mod.ml_dash_experiment_started = ml_dash_experiment_started\n"
        "print(plugins.register(mod, name='p'),\n"
        "      [i.trylast for i in plugins.implementations('ml_dash_experiment_started') if i.plugin_name == 'p'])\n"
    )
    env = dict(os.environ, ML_DASH_DISABLE_PLUGINS="1")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "p [True]"
