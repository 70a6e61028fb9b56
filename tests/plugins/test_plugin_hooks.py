"""Hooks registered in code: lifecycle hooks fire with the right arguments and never on the hot path, hooks
that raise never reach training, stores from plugins each get their own worker, store errors are reported."""

from __future__ import annotations

import threading
import time
import warnings

import pytest
from ml_dash import Experiment, load
from ml_dash.buffer import BufferConfig
from ml_dash.stores import Store


class Recorder:
    """Implements every lifecycle hook and records each call: (hook, prefix, extra, thread name)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, object, str]] = []

    def _rec(self, hook: str, exp, extra=None) -> None:
        self.calls.append((hook, exp.prefix, extra, threading.current_thread().name))

    def ml_dash_experiment_started(self, experiment):
        self._rec("started", experiment)

    def ml_dash_experiment_flushed(self, experiment, counts):
        self._rec("flushed", experiment, dict(counts))

    def ml_dash_experiment_finished(self, experiment, status):
        self._rec("finished", experiment, status)

    def ml_dash_store_error(self, experiment, store, error):
        self._rec("store_error", experiment, (store.key, str(error)))


def test_lifecycle_hooks_fire_with_their_arguments_and_never_on_the_hot_path(pm, tmp_path):
    rec = Recorder()
    assert pm.register(rec, name="recorder") == "recorder"
    exp = Experiment("proj/hooks", dash_root=tmp_path)
    exp.run.start()
    with exp.run:  # already open: not announced twice
        assert [c[0] for c in rec.calls] == ["started"]
        before = len(rec.calls)
        for i in range(2000):  # the hot path: log calls of every kind
            exp.metrics("train").log(step=i, loss=0.1)
            exp.log("line", step=i)
            exp.tracks("pos").append(_ts=float(i), x=i)
        exp.params.set(lr=0.1)
        assert len(rec.calls) == before, rec.calls[before:]  # no hook ran for any of the 6,001 calls
        assert exp.flush()
    assert [c[0] for c in rec.calls] == ["started", "flushed", "finished"]
    assert all(c[1] == "proj/hooks" for c in rec.calls)
    counts = rec.calls[1][2]
    assert counts["metrics"] == 2000 and counts["logs"] == 2000 and counts["tracks"] == 2000
    assert rec.calls[2][2] == "COMPLETED"

    with pytest.raises(ZeroDivisionError), exp.run:  # re-opened, then failed
        raise ZeroDivisionError("boom")
    assert [c[0] for c in rec.calls[3:]] == ["started", "finished"] and rec.calls[-1][2] == "FAILED"

    pm.unregister(rec)
    with Experiment("proj/after", dash_root=tmp_path).run as e:
        e.log("x")
    assert len(rec.calls) == 5  # unregistered: no more calls


class Raising:
    def ml_dash_experiment_started(self, experiment):
        raise RuntimeError("started hook is broken")

    def ml_dash_experiment_flushed(self, experiment, counts):
        raise KeyError("flushed")

    def ml_dash_experiment_finished(self, experiment, status):
        raise OSError("finished hook is broken")


def test_a_raising_hook_never_reaches_training_and_the_others_still_run(pm, tmp_path):
    rec = Recorder()
    pm.register(rec, name="recorder")
    pm.register(Raising(), name="raising")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Experiment("proj/raising", dash_root=tmp_path).run as exp:
            exp.metrics("train").log(step=0, loss=1.0)
            exp.flush()
            exp.flush()
    assert [c[0] for c in rec.calls] == ["started", "flushed", "flushed", "finished"]
    text = [str(w.message) for w in caught]
    assert any("plugin 'raising' raised in hook ml_dash_experiment_started (ignored): RuntimeError: started hook "
               "is broken" in t for t in text), text
    assert any("plugin 'raising' raised in hook ml_dash_experiment_finished" in t and "OSError" in t for t in text)
    assert sum("ml_dash_experiment_flushed" in t for t in text) == 1  # reported once, not on every flush
    assert load("proj/raising", dash_root=str(tmp_path)).status == "COMPLETED"


class MemoryStore(Store):
    def __init__(self, key: str, gate: threading.Event | None = None, fail_first: int = 0) -> None:
        self.key = key
        self.rows: list[dict] = []
        self.threads: set[str] = set()
        self.gate = gate
        self.fail_first = fail_first
        self.statuses: list[str] = []

    def write_metrics(self, name, records):
        self.threads.add(threading.current_thread().name)
        if self.gate is not None:
            self.gate.wait(30)  # a stuck store (bounded, as a store owes)
        if self.fail_first > 0:
            self.fail_first -= 1
            raise ConnectionError("store is down")
        self.rows.extend(r for r in records if r["index"] >= len(self.rows))  # idempotent by index

    def set_status(self, info):
        self.statuses.append(info.get("status"))


class MemoryPlugin:
    def __init__(self) -> None:
        self.stores: dict[str, MemoryStore] = {}
        self.gate = threading.Event()

    def ml_dash_store(self, destination, experiment):
        if destination == "mem-fast":
            self.stores[destination] = MemoryStore("mem-fast")
        elif destination == "mem-stuck":
            self.stores[destination] = MemoryStore("mem-stuck", gate=self.gate)
        elif destination == "mem-flaky":
            self.stores[destination] = MemoryStore("mem-flaky", fail_first=1)
        else:
            return None
        return self.stores[destination]


def wait_for(cond, limit: float = 30.0) -> bool:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def test_several_stores_each_with_its_own_worker(pm, tmp_path):
    plugin = MemoryPlugin()
    pm.register(plugin, name="memory")
    mirror = tmp_path / "mirror"
    cfg = BufferConfig(flush_interval=0.05)
    exp = Experiment("proj/multi", dash_root=tmp_path / "main", stores=["mem-fast", "mem-stuck", str(mirror)],
                     buffer_config=cfg)
    exp.run.start()
    try:
        for i in range(300):
            exp.metrics("train").log(step=i, loss=i / 300)
        fast, stuck = plugin.stores["mem-fast"], plugin.stores["mem-stuck"]
        # the stuck store holds its own worker; the fast store and the mirror get everything meanwhile
        assert wait_for(lambda: bool(stuck.threads))  # it is inside write_metrics, waiting
        assert wait_for(lambda: len(fast.rows) == 300)
        assert wait_for(lambda: len(load("proj/multi", dash_root=str(mirror)).metrics("train").read()) == 300)
        assert stuck.rows == []
        assert len(fast.threads | stuck.threads) == 2 and not (fast.threads & stuck.threads)
        assert threading.current_thread().name not in fast.threads
    finally:
        plugin.gate.set()
        exp.run.complete()
    assert [r["data"]["step"] for r in stuck.rows] == list(range(300))
    assert [r["data"]["step"] for r in fast.rows] == list(range(300))
    assert fast.statuses[-1] == stuck.statuses[-1] == "COMPLETED"


def test_store_errors_reach_the_store_error_hook_and_the_batch_is_retried(pm, tmp_path):
    plugin, rec = MemoryPlugin(), Recorder()
    pm.register(plugin, name="memory")
    pm.register(rec, name="recorder")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Experiment("proj/flaky", dash_root=tmp_path, stores=["mem-flaky"]).run as exp:
            for i in range(10):
                exp.metrics("train").log(step=i)
    errors = [c for c in rec.calls if c[0] == "store_error"]
    assert errors and errors[0][2] == ("mem-flaky", "store is down")
    assert errors[0][3] != threading.current_thread().name  # on the store's worker, not the training thread
    assert [r["data"]["step"] for r in plugin.stores["mem-flaky"].rows] == list(range(10))
    assert any("mem-flaky" in str(w.message) and "store is down" in str(w.message) for w in caught)


class BrokenStorePlugin:
    def ml_dash_store(self, destination, experiment):
        raise RuntimeError("cannot make a store")


def test_a_plugin_that_fails_to_make_a_store_is_reported_and_the_next_one_asked(pm, tmp_path):
    plugin = MemoryPlugin()
    pm.register(plugin, name="memory")
    pm.register(BrokenStorePlugin(), name="broken-store")  # registered last: asked first
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Experiment("proj/next", dash_root=tmp_path, stores=["mem-fast"]).run as exp:
            exp.metrics("train").log(step=0)
    assert [r["data"]["step"] for r in plugin.stores["mem-fast"].rows] == [0]
    assert any("plugin 'broken-store' failed to make a store for 'mem-fast' and is skipped: RuntimeError: cannot "
               "make a store" in str(w.message) for w in caught)

    pm.unregister(name="memory")  # now only the broken plugin would take it: the run goes on without the store
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Experiment("proj/none", dash_root=tmp_path, stores=["mem-fast"]).run as exp:
            exp.metrics("train").log(step=0)
    assert any("no store for 'mem-fast'" in str(w.message) for w in caught)
    assert load("proj/none", dash_root=str(tmp_path)).status == "COMPLETED"


def test_a_destination_nobody_takes_is_a_clear_error(pm, tmp_path):
    exp = Experiment("proj/typo", dash_root=tmp_path, stores=["tensorbored"])
    with pytest.raises(ValueError, match="no store handles destination 'tensorbored'"):
        exp.run.start()
    info = load("proj/typo", dash_root=str(tmp_path)).info
    assert info["status"] == "FAILED" and "tensorbored" in info["statusReason"]


def test_unmarked_and_marked_implementations_and_unknown_hooks(pm):
    from ml_dash.plugins import hookimpl

    class Marked:
        @hookimpl(tryfirst=True)
        def ml_dash_experiment_started(self, experiment):
            pass

    class Misspelt:
        def ml_dash_experiment_stared(self, experiment):
            pass

        def ml_dash_experiment_finished(self, experiment, status):
            pass

    assert pm.register(Marked(), name="marked") == "marked"
    with pytest.warns(UserWarning, match=r"plugin 'misspelt' implements hooks that do not exist and are never "
                                         r"called: ml_dash_experiment_stared"):
        assert pm.register(Misspelt(), name="misspelt") == "misspelt"
    names = [i.plugin_name for i in pm.implementations("ml_dash_experiment_finished")]
    assert "misspelt" in names
    assert pm.implementations("ml_dash_experiment_started")[0].plugin_name == "marked"
    with pytest.warns(UserWarning, match="plugin 'marked' is skipped: ValueError"):
        assert pm.register(Marked(), name="marked") is None  # name already taken


def test_hook_wrappers_are_honoured_for_lifecycle_hooks(pm, tmp_path):
    from ml_dash.plugins import hookimpl

    seen: list[str] = []

    class Wrapper:
        @hookimpl(wrapper=True)
        def ml_dash_experiment_finished(self, experiment, status):
            seen.append("before")
            result = yield
            seen.append("after")
            return result

    class Plain:
        def ml_dash_experiment_finished(self, status):  # fewer arguments than the spec: fine
            seen.append(status)

    pm.register(Plain(), name="plain")
    pm.register(Wrapper(), name="wrapper")
    with Experiment("proj/wrapped", dash_root=tmp_path).run as exp:
        exp.log("x")
    assert seen == ["before", "COMPLETED", "after"]
