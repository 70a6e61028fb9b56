"""Stateful property test (issue 3): random sequences of log/metric/track/file/flush/params calls; what reads back
equals what was accepted, in order per stream."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

sys.path.insert(0, str(Path(__file__).resolve().parent / "helpers"))

import dashtest as dt  # noqa: E402
from ml_dash import Experiment, load  # noqa: E402
from ml_dash.buffer import BufferConfig  # noqa: E402

PREFIX = "proj/run"

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3), max_leaves=5)
keys = st.text(min_size=1, max_size=8).filter(lambda k: k != "_ts")
rows = st.dictionaries(keys, values, max_size=4)
stream_names = st.sampled_from([None, "train", "eval", "a/b", "None2"])
topics = st.sampled_from(["pos", "robot/arm", "robot_arm"])
levels = st.sampled_from(["info", "warn", "error", "debug", "fatal"])
param_keys = st.text(alphabet="abcxyz.", min_size=1, max_size=5).filter(
    lambda k: not k.startswith(".") and not k.endswith(".") and ".." not in k)


class JournalMachine(RuleBasedStateMachine):
    @initialize(write_interval=st.sampled_from([0.0, 0.01, 5.0]), pending=st.sampled_from([4, 1000]))
    def open(self, write_interval: float, pending: int) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="mldash-prop-"))
        self.exp = Experiment(PREFIX, dash_root=self.tmp, buffer_config=BufferConfig(
            write_interval=write_interval, max_pending_items=pending, quiet=True, close_timeout=5))
        self.exp.run.start()
        self.metrics: dict[Any, list[dict[str, Any]]] = {}
        self.logs: list[tuple[str, str, Any]] = []
        self.tracks: dict[str, list[dict[str, Any]]] = {}
        self.files: list[tuple[str, str, str]] = []
        self.params: dict[str, Any] = {}
        self.ts = 1000.0
        self.closed = False

    @rule(name=stream_names, row=rows)
    def metric(self, name: Any, row: dict[str, Any]) -> None:
        self.exp.metrics(name).log(**row)
        self.metrics.setdefault(name, []).append(row)

    @rule(message=st.text(max_size=30), level=levels, meta=st.none() | st.dictionaries(keys, scalars, max_size=2))
    def log(self, message: str, level: str, meta: Any) -> None:
        self.exp.log(message, level=level, metadata=meta)
        self.logs.append((message, level, meta))

    @rule(topic=topics, row=st.dictionaries(keys.filter(lambda k: k != "timestamp"), scalars, min_size=1, max_size=3))
    def track(self, topic: str, row: dict[str, Any]) -> None:
        self.ts += 1.0
        self.exp.tracks(topic).append(_ts=self.ts, **row)
        self.tracks.setdefault(topic, []).append({"timestamp": self.ts, **row})

    @rule(folder=st.sampled_from(["ckpt", "a/b"]), text=st.text(max_size=50))
    def file(self, folder: str, text: str) -> None:
        name = f"f{len(self.files)}.txt"
        self.exp.files(folder).save_text(text, to=name)
        self.files.append(("/" + folder, name, text))

    @rule(kv=st.dictionaries(param_keys, scalars, min_size=1, max_size=3))
    def set_params(self, kv: dict[str, Any]) -> None:
        self.exp.params.set(**kv)
        self.params.update(kv)

    @rule()
    def flush_and_check(self) -> None:
        assert self.exp.flush(timeout=10)
        self.reads_back()

    @precondition(lambda self: not self.closed)
    @rule()
    def complete_and_reopen(self) -> None:
        self.exp.run.complete()
        self.exp.run.start()

    def reads_back(self) -> None:
        if not hasattr(self, "exp"):
            return
        v = load(PREFIX, dash_root=self.tmp) if not self.exp.is_open else None
        for name, want in self.metrics.items():
            got = (v.metrics(name) if v else self.exp.metrics(name)).read()
            assert [r["index"] for r in got] == list(range(len(want)))
            data = [{k: x for k, x in r["data"].items() if k != "_ts"} for r in got]
            assert dt.same(data, want), (name, data, want)
        got_logs = (v.logs if v else self.exp.logs).read()
        assert [g["sequenceNumber"] for g in got_logs] == list(range(len(self.logs)))
        assert dt.same([(g["message"], g["level"], g["metadata"]) for g in got_logs], [list(x) for x in self.logs])
        for topic, want in self.tracks.items():
            got_t = (v.tracks(topic) if v else self.exp.tracks(topic)).read()
            assert dt.same(got_t, want), (topic, got_t, want)
        got_files = (v.files if v else self.exp.files).list()
        assert [(e["path"], e["filename"]) for e in got_files] == [(f[0], f[1]) for f in self.files]
        for e, f in zip(got_files, self.files, strict=False):
            assert Path(e["localPath"]).read_bytes() == f[2].encode()
        assert dt.same((v.params if v else self.exp.params).get(), self.params)

    def teardown(self) -> None:
        if hasattr(self, "exp"):
            self.exp.run.complete()
            self.reads_back()
            assert load(PREFIX, dash_root=self.tmp).status == "COMPLETED"
            shutil.rmtree(self.tmp, ignore_errors=True)


JournalMachine.TestCase.settings = settings(
    max_examples=25, stateful_step_count=20, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestJournal = JournalMachine.TestCase
