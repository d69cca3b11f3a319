"""Experiment trackers (detection/engine/trackers.py): what MLflow and W&B hold equals
metrics.jsonl, read back with their own APIs; a missing package is one warning."""
from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import pytest

from detection.engine.runlog import MetricsWriter, scalar_tags
from detection.engine.trackers import build_trackers, flat_params

CONFIG = {"solver": {"base_lr": 0.01, "steps": [3, 4]}, "seed": 3, "hooks": [],
          "model": {"backbone": {"name": "resnet18", "weights": None}}}
RECORDS = [
    {"type": "data", "iteration": 0, "split": "train", "images": 24, "boxes": 60},
    {"type": "train", "iteration": 1, "lr": 0.001, "loss": 2.5, "loss_cls": 1.5, "time": 0.2},
    {"type": "train", "iteration": 2, "lr": 0.01, "loss": 2.0, "loss_cls": 1.0, "time": 0.2},
    {"type": "eval", "iteration": 2, "mAP": 12.5, "mAP_l": float("nan"), "val_loss": 1.75,
     "per_category": {"circle": 10.0, "traffic light": 15.0}},
    {"type": "train", "iteration": 3, "lr": 0.001, "loss": 1.5, "loss_cls": 0.5, "time": 0.2},
]


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    """One SQLite store for the module's MLflow tests (creating its tables takes seconds)."""
    pytest.importorskip("mlflow", reason='the mlflow extra: pip install -e ".[mlflow]"')
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def _trackers(mlflow=None, wandb=None):
    off = {"enabled": False}
    return SimpleNamespace(mlflow=SimpleNamespace(**(mlflow or off)),
                           wandb=SimpleNamespace(**(wandb or off)))


def _run(tracker, out):
    """Records through a MetricsWriter with ``tracker`` attached, as a training run does."""
    with MetricsWriter(out) as writer:
        tracker.attach(writer)
        tracker.before_train()
        for record in RECORDS:
            writer.write(record)
        tracker.after_train()
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _history(lines) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(iteration, value), ...]}`` of metrics.jsonl, the trackers' expected content."""
    out: dict[str, list] = {}
    for record in lines:
        for tag, value in scalar_tags(record).items():
            out.setdefault(tag, []).append((record["iteration"], value))
    return out


def test_tensorboard_scalars_read_back_equal_to_metrics_jsonl(tmp_path, detection_log):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (tracker,) = build_trackers(_trackers(), config=CONFIG, output_dir=tmp_path,
                                tensorboard=True)
    lines = _run(tracker, tmp_path)
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    scalars = {tag: [(e.step, e.value) for e in acc.Scalars(tag)]
               for tag in acc.Tags()["scalars"]}
    expected = _history(lines)
    assert set(scalars) == set(expected)
    for tag, points in expected.items():
        assert scalars[tag] == [(i, pytest.approx(v, rel=1e-6)) for i, v in points], tag
    assert "eval/mAP_l" not in scalars and scalars["eval/per_category/circle"] == [(2, 10.0)]
    assert detection_log == []  # no warning


def test_missing_tensorboard_warns_once_naming_the_extra(tmp_path, monkeypatch, detection_log):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import -> ImportError
    assert build_trackers(_trackers(), config=CONFIG, output_dir=tmp_path,
                          tensorboard=True) == []
    assert detection_log == [
        'tensorboard: true, but the tensorboard package is not installed; the run is not logged '
        'to tensorboard. Install the extra: pip install -e ".[tensorboard]" (or set '
        'tensorboard: false)']
    assert build_trackers(_trackers(), config=CONFIG, output_dir=tmp_path) == []  # not asked
    assert len(detection_log) == 1 and not (tmp_path / "tensorboard").exists()


def test_an_mlflow_run_reads_back_equal_to_metrics_jsonl_and_resumes(tmp_path, monkeypatch,
                                                                     mlflow_uri):
    import mlflow

    monkeypatch.chdir(tmp_path)  # a SQLite store keeps artifacts in ./mlruns
    uri = mlflow_uri
    (tracker,) = build_trackers(_trackers(mlflow={
        "enabled": True, "tracking_uri": uri, "experiment": "test", "run_name": None,
        "artifacts": True}), config=CONFIG, output_dir=tmp_path / "run")
    lines = _run(tracker, tmp_path / "run")

    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params == flat_params(CONFIG)
    assert run.data.params["solver.steps"] == "[3, 4]"
    expected = _history(lines)
    assert "eval/mAP_l" not in expected and "eval/per_category/traffic light" in expected
    assert set(run.data.metrics) == set(expected)
    for tag, points in expected.items():
        got = [(m.step, m.value) for m in client.get_metric_history(tracker.run_id, tag)]
        assert sorted(got) == sorted(points), tag
    assert "metrics.jsonl" in {a.path for a in client.list_artifacts(tracker.run_id)}
    # a resumed run continues the same MLflow run
    state = tracker.state_dict()
    (again,) = build_trackers(_trackers(mlflow={
        "enabled": True, "tracking_uri": uri, "experiment": "test", "run_name": None,
        "artifacts": False}), config=CONFIG, output_dir=tmp_path / "run")
    again.load_state_dict(state)
    with MetricsWriter(tmp_path / "run") as writer:
        again.attach(writer)
        writer.write({"type": "train", "iteration": 4, "loss": 1.0})
        again.after_train()
    assert [m.value for m in client.get_metric_history(state["run_id"], "train/loss")] == [
        2.5, 2.0, 1.5, 1.0]


def test_a_missing_package_is_one_warning_naming_the_extra(tmp_path, monkeypatch,
                                                          detection_log):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    trackers = build_trackers(_trackers(mlflow={
        "enabled": True, "tracking_uri": None, "experiment": "x", "run_name": None,
        "artifacts": True}), config=CONFIG, output_dir=tmp_path)
    assert trackers == []
    assert detection_log == [
        'trackers.mlflow.enabled: true, but the mlflow package is not installed; the run is '
        'not logged to mlflow. Install the extra: pip install -e ".[mlflow]" (or set '
        'trackers.mlflow.enabled: false)']


def test_a_training_run_logs_to_mlflow_and_wandb_what_metrics_jsonl_holds(
        synthetic_coco, tiny_config, tmp_path, monkeypatch, mlflow_uri):
    """End to end: a tiny detector trained with both trackers on; MLflow read back with its own
    client (params = the resolved config, every metric's history = metrics.jsonl, the run
    folder as artifacts); W&B's offline run (no account) holds every tag and the config."""
    import mlflow
    pytest.importorskip("wandb", reason='the wandb extra: pip install -e ".[wandb]"')
    import torch

    from detection.config import config_to_dict, load_config
    from detection.setup import build_trainer

    monkeypatch.chdir(tmp_path)  # a SQLite store keeps artifacts in ./mlruns
    monkeypatch.setenv("WANDB_SILENT", "true")
    uri = mlflow_uri
    config = tiny_config(tmp_path, synthetic_coco, solver={"max_iter": 2, "steps": [1]},
                         test={"eval_period": 1, "vis_images": 0, "val_loss": True},
                         trackers={"mlflow": {"enabled": True, "tracking_uri": uri},
                                   "wandb": {"enabled": True}}, tensorboard=False)
    trainer, cfg = build_trainer(load_config(config), device=torch.device("cpu"))
    trainer.train()
    lines = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert {r["type"] for r in lines} == {"data", "train", "eval"}
    assert all("val_loss" in r for r in lines if r["type"] == "eval")

    mlflow_hook, wandb_hook = [h for h in trainer.hooks if h.name in ("MLflowTracker",
                                                                       "WandbTracker")]
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    run = client.get_run(mlflow_hook.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "out"
    assert run.data.params == flat_params(config_to_dict(cfg))
    expected = _history(lines)
    assert {"eval/val_loss", "eval/mAP", "data/train/images", "train/loss_cls"} <= set(expected)
    assert set(run.data.metrics) == set(expected)
    for tag, points in expected.items():
        got = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, tag)]
        assert sorted(got) == sorted(points), tag
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.jsonl", "last.pth", "best.pth", "config.yaml"} <= artifacts
    (offline,) = (tmp_path / "out" / "wandb").glob("offline-run-*")
    assert wandb_hook.run is None  # finished
    data = (offline / f"run-{wandb_hook.run_id}.wandb").read_bytes()
    assert all(tag.encode() in data for tag in expected)  # protobuf records: names as bytes
    assert b"base_lr" in data and b"backbone" in data  # the config
    # the run ids are in the checkpoint: a --resume continues both runs
    hooks = torch.load(tmp_path / "out" / "last.pth", weights_only=True)["hooks"]
    assert hooks["MLflowTracker"] == {"run_id": run.info.run_id}
    assert hooks["WandbTracker"] == {"run_id": wandb_hook.run_id}
