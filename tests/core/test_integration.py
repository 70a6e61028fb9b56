"""ml_dash.integration, the adapters' kit, and one routing table that all three adapters must follow."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import enum
import pathlib
import pickle
import warnings

import numpy as np
import pytest
from ml_dash import Experiment, load
from ml_dash.integration import (
    ExperimentFactory,
    MetricRouter,
    WarnOnce,
    close_run,
    failure_reason,
    flatten_params,
    next_version,
    safe_name,
    split_key,
)

# key -> (stream, field): the contract's rule, with user metrics named like a row field kept apart
TABLE = {
    "loss": ("train", "loss"),
    "learning_rate": ("train", "learning_rate"),
    "lr-Adam": ("train", "lr-Adam"),
    "train_loss": ("train", "loss"),
    "train/acc": ("train", "acc"),
    "val_loss": ("val", "loss"),
    "val/acc_top1": ("val", "acc_top1"),
    "val_loss/dataloader_idx_1": ("val", "loss/dataloader_idx_1"),
    "eval_squad_f1": ("eval", "squad_f1"),
    "test_acc": ("test", "acc"),
    "predict_n": ("predict", "n"),
    "validation_x": ("train", "validation_x"),  # "val" not followed by _ or /
    "val_": ("train", "val_"),  # nothing after the separator
    "train_step": ("train", "train_step"),  # would overwrite the row's step: keeps its whole key
    "train_epoch": ("train", "train_epoch"),
    "val_epoch": ("val", "val_epoch"),
    "val/step": ("val", "val/step"),
    "test_epoch": ("test", "test_epoch"),
}
# a bare key named like a row field is the framework's own in Lightning and HF logs; a user metric in Keras's
BARE = {"epoch": ("train", "epoch_"), "step": ("train", "step_")}


def test_split_key_table():
    for key, want in {**TABLE, **BARE}.items():
        assert split_key(key) == want, key
    assert split_key("loss", default="test") == ("test", "loss")


def test_router_caches_and_groups_rows():
    r = MetricRouter(skip=("epoch",))
    rows = r.rows({"train_loss": 1.0, "val_loss": 2.0, "epoch": 3, "acc": 0.5}, 7, 3)
    assert rows == {"train": {"step": 7, "epoch": 3, "loss": 1.0, "acc": 0.5}, "val": {"step": 7, "epoch": 3, "loss": 2.0}}
    assert r.route("train_loss") is r.route("train_loss")  # computed once
    assert r.route("epoch") == ("train", "epoch_") and "epoch" not in r.rows({"epoch": 1}, 0, 1).get("train", {})


def test_router_log_numeric_checks_once_and_logs_nothing_it_refuses(tmp_path):
    r = MetricRouter(skip=("epoch",))
    with Experiment("route/numeric", dash_root=tmp_path).run as exp:
        # every value a plain number: one row per stream, the keys' fields in their order, key objects of any kind
        metrics = {"train_loss": float("nan"), "val_loss": 2, "epoch": 1, "acc": True, "val/x": None, ("t",): 4.0}
        assert r.log_numeric(metrics, 7, 1, exp) == 2
        assert r.log_numeric(metrics, 8, 1.5, exp) == 2  # the cached plan
        for odd in ({"loss": np.float32(1)}, {"loss": "text"}, {"loss": [1.0]}):
            assert r.log_numeric(odd, 9, 1, exp) is None
        assert r.log_numeric({"loss": 1.0}, np.int64(9), 1, exp) is None  # the step too
        assert r.log({"loss": np.float32(0.5), "val/s": "x"}, 10, 2, exp) == 2  # log() converts what it can
        with pytest.raises(TypeError, match="'loss'"):
            r.log({"loss": object()}, 11, 2, exp)
    assert r.log_numeric({"loss": 1.0}, 12, 2, exp) is None  # a closed run: the caller decides (nothing logged)
    view = load("route/numeric", dash_root=tmp_path)
    train = [{k: v for k, v in row["data"].items() if k != "_ts"} for row in view.metrics("train").read()]
    val = [{k: v for k, v in row["data"].items() if k != "_ts"} for row in view.metrics("val").read()]
    assert [list(row) for row in train[:2]] == [["step", "epoch", "loss", "acc", "('t',)"]] * 2
    assert np.isnan(train[0]["loss"]) and train[0]["acc"] is True and train[1]["('t',)"] == 4.0
    assert [(row["step"], row["epoch"]) for row in train] == [(7, 1), (8, 1.5), (10, 2)] and train[2]["loss"] == 0.5
    assert val == [{"step": 7, "epoch": 1, "loss": 2, "x": None}, {"step": 8, "epoch": 1.5, "loss": 2, "x": None},
                   {"step": 10, "epoch": 2, "s": "x"}]


def _lightning_routes(keys, tmp_path):
    pytest.importorskip("lightning")
    from ml_dash_lightning import MLDashLogger

    logger = MLDashLogger(run="route/lightning", save_dir=tmp_path)
    for i, key in enumerate(keys):
        logger.log_metrics({key: float(i), "epoch": 0}, step=i)
    logger.experiment.flush()
    view = load("route/lightning", dash_root=tmp_path)
    got = {}
    for stream in view.metrics.names():
        for r in view.metrics(stream).read():
            d = r["data"]
            (field,) = [f for f in d if f not in ("step", "epoch", "_ts")]
            assert d[field] == float(d["step"])
            got[keys[d["step"]]] = (stream, field)
    return got


def _hf_routes(keys, tmp_path):
    pytest.importorskip("transformers")
    from ml_dash_hf._mapping import route

    got = {}
    for key in keys:
        ((stream, fields),) = route({key: 1.0, "epoch": 0.5}).items()
        ((field, _),) = fields.items()
        got[key] = (stream, field)
    return got


def _keras_routes(keys, tmp_path):
    from ml_dash_keras._rows import split_logs

    got = {}
    for key in keys:
        ((stream, fields),) = split_logs({key: 1.0}).items()
        ((field, _),) = fields.items()
        got[key] = (stream, field)
    return got


@pytest.mark.parametrize("adapter", [_lightning_routes, _hf_routes, _keras_routes], ids=["lightning", "hf", "keras"])
def test_every_adapter_routes_by_the_same_table(adapter, tmp_path):
    keys = list(TABLE) + (list(BARE) if adapter is _keras_routes else [])
    assert adapter(keys, tmp_path) == {k: {**TABLE, **BARE}[k] for k in keys}


class Color(enum.Enum):
    RED = "red"
    ODD = object()


@dataclasses.dataclass
class Opt:
    name: str = "adam"
    betas: tuple = (0.9, 0.99)
    extra: dict = dataclasses.field(default_factory=dict)


def test_flatten_params_covers_every_shape_and_never_raises(tmp_path):
    torch = pytest.importorskip("torch")
    bad: list[str] = []
    flat = flatten_params(
        {
            "ns": argparse.Namespace(lr=0.1, opt=Opt()),
            "color": Color.RED, "odd": Color.ODD, "path": pathlib.Path("/data"),
            "np_f": np.float32(0.5), "np_i": np.int64(3), "arr": np.arange(3), "t": torch.tensor(2.5),
            "c": np.complex64(1 + 2j), "b": np.bytes_(b"ab"), "when": np.datetime64("2024-05-01"),
            "tc": torch.tensor(3 + 4j), "cx": 1j, "raw": b"x", "day": datetime.date(2024, 1, 2),
            "cls": dict, "fn": len, "s": {3, 1}, "none": None, "obj": object(), 7: "int key", "": "empty key",
        },
        unstorable=bad,
    )
    assert flat["ns.lr"] == 0.1 and flat["ns.opt.name"] == "adam" and flat["ns.opt.betas"] == [0.9, 0.99]
    assert flat["ns.opt.extra"] == {}
    assert flat["color"] == "red" and flat["odd"] == "ODD" and flat["path"] == "/data"
    assert flat["np_f"] == 0.5 and flat["np_i"] == 3 and flat["arr"] == [0, 1, 2] and flat["t"] == 2.5
    assert (flat["c"], flat["b"], flat["when"], flat["tc"]) == ("(1+2j)", "b'ab'", "2024-05-01", "(3+4j)")
    assert (flat["cx"], flat["raw"], flat["day"]) == ("1j", "b'x'", "2024-01-02")
    assert flat["cls"] == "builtins.dict" and flat["fn"] == "builtins.len" and flat["s"] == [1, 3]
    assert flat["none"] is None and flat["obj"].startswith("<object object") and flat["7"] == "int key"
    assert flat["_"] == "empty key"
    assert {b.split(" ")[0] for b in bad} == {"c", "b", "when", "tc", "cx", "raw", "day", "obj"}
    with Experiment("kit/params", dash_root=tmp_path).run as exp:  # everything it returns is storable
        exp.params.set(**flat)
    assert load("kit/params", dash_root=tmp_path).params.get()["when"] == "2024-05-01"
    assert flatten_params(None) == {} and flatten_params(5) == {"value": 5}


def test_names_reasons_and_warn_once(tmp_path):
    assert safe_name("my run: #1") == "my-run-1" and safe_name("///") == "run"
    assert next_version(tmp_path, "p") == 0
    (tmp_path / "p" / "version_0").mkdir(parents=True)
    (tmp_path / "p" / "version_4").mkdir()
    assert next_version(tmp_path, "p") == 5
    assert failure_reason(RuntimeError("x" * 600)).startswith("RuntimeError: xxx") and len(failure_reason(RuntimeError("x" * 600))) == 503
    assert failure_reason(KeyboardInterrupt()) == "KeyboardInterrupt" and failure_reason(None) is None
    warn = WarnOnce("kit")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert warn("k", "first") and not warn("k", "again") and warn("other", "x")
    assert [str(w.message) for w in caught] == ["kit: first", "kit: x"]
    for exc, status in ((None, "COMPLETED"), (KeyboardInterrupt(), "CANCELLED"), (ValueError("bad"), "FAILED")):
        exp = Experiment(f"kit/{status}", dash_root=tmp_path).run.start()
        close_run(exp, exc)
        assert load(f"kit/{status}", dash_root=tmp_path).status == status


def test_experiment_factory_checks_once_and_forwards_everything(tmp_path, monkeypatch):
    f = ExperimentFactory("Adapter", "kit/made", dash_root=tmp_path, echo=True, stores=[], tags=None)
    assert f.kwargs == {"dash_root": tmp_path, "echo": True, "stores": []}
    exp = f.create()
    assert exp.echo is True and exp.folder == tmp_path / "kit" / "made" and f.dash_root == str(tmp_path)
    with pytest.raises(TypeError, match="Adapter: .*colour"):
        ExperimentFactory("Adapter", "kit/x", colour="red")
    with pytest.raises(ValueError, match="Adapter: .*segments"):
        ExperimentFactory("Adapter", "justone")
    monkeypatch.delenv("ML_DASH_API_URL", raising=False)
    with pytest.raises(ValueError, match="ML_DASH_API_URL"):
        ExperimentFactory("Adapter", None, dash_url=True)
    user = Experiment("kit/user", dash_root=tmp_path)
    with pytest.raises(ValueError, match=r"Adapter: pass either experiment= or .*\(got experiment= and prefix, tags"):
        ExperimentFactory("Adapter", "kit/x", user, tags=["a"])
    with pytest.raises(TypeError, match="ml_dash.Experiment"):
        ExperimentFactory("Adapter", None, "kit/x")
    given = ExperimentFactory("Adapter", None, user)
    assert given.create() is user and given.prefix == "kit/user" and given.dash_root == str(tmp_path)
    copy = pickle.loads(pickle.dumps(given))  # re-attaches by prefix under the same root
    assert copy.create() is not user and copy.create().folder == user.folder
    assert not (tmp_path / "kit" / "x").exists()  # checking created nothing
