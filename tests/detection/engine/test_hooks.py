"""Hooks (detection/engine/hooks.py): a user's hook from the config runs in its place in the
order and survives a resume; early stopping ends the run at the right evaluation; the
validation loss joins the evaluation without changing the training; hooks are imported only
from a user's config."""
from __future__ import annotations

import json
import sys

import pytest
import torch

from detection.config import checkpoint_config, config_to_dict, load_config
from detection.data.loader import move_batch
from detection.engine.checkpoint import load_checkpoint, seed_all
from detection.engine.hooks import (EarlyStop, ValidationLoss, build_user_hooks,
                                    standard_hooks)
from detection.engine.runlog import MetricsWriter
from detection.engine.schedule import WarmupLRScheduler, param_groups
from detection.engine.trainer import Trainer
from detection.engine.validation import validation_loss
from detection.evaluation.inference import inference_on_dataset
from toy_detector import ToyDetector, ToyEvaluator, toy_batches, toy_sample

CPU = torch.device("cpu")
TEST = [[toy_sample(100 + i), toy_sample(103 + i)] for i in range(2)]
USER_HOOKS = [{"class": "recording_hook.Recorder", "tag": "mine"}]


def _trainer(out, *, max_iter=6, start_ckpt=None, crash_at=None, values=None, val_loss=False,
             patience=0, user=(), init_seed=0):
    seed_all(init_seed)
    model = ToyDetector()
    opt = torch.optim.SGD(param_groups(model, weight_decay=1e-4, weight_decay_norm=0.0),
                          lr=0.05, momentum=0.9)
    sched = WarmupLRScheduler(opt, max_iter=max_iter, steps=[4], warmup_iters=2)
    start = 0 if start_ckpt is None else start_ckpt["iteration"]
    evaluator = ToyEvaluator(values=values)
    evaluate = lambda m: inference_on_dataset(m, TEST, evaluator, device=CPU)[0]  # noqa: E731
    hooks = standard_hooks(
        log_period=1, eval_period=2, checkpoint_period=2, best_metric="mAP",
        validation=ValidationLoss(TEST, prepare_batch=move_batch) if val_loss else None,
        early_stop=EarlyStop(metric="mAP", patience=patience) if patience else None,
        user=list(user))
    trainer = Trainer(model=model, optimizer=opt, scheduler=sched,
                      data_loader=toy_batches(seed=0, batch_size=4, start_iter=start,
                                              crash_at=crash_at),
                      max_iter=max_iter, output_dir=out, device=CPU, evaluate=evaluate,
                      hooks=hooks, extra_state={"config": {}, "classes": []},
                      writer=MetricsWriter(out, truncate_after=start), prepare_batch=move_batch)
    if start_ckpt is not None:
        trainer.load_state_dict(start_ckpt)
    return trainer


def _user_hooks():
    cfg = load_config(None, ["hooks=" + json.dumps(USER_HOOKS)])  # as a user's config names it
    return build_user_hooks(cfg.hooks)


def test_a_hook_from_the_config_runs_in_order_and_survives_resume(tmp_path):
    values = [30.0, 70.0, 50.0]
    full = _trainer(tmp_path / "full", values=values, val_loss=True, user=_user_hooks())
    full.train()
    (recorder,) = [h for h in full.hooks if h.name == "Recorder"]
    assert recorder.tag == "mine" and [type(h).__name__ for h in full.hooks] == [
        "MetricsLogger", "PeriodicEvaluation", "ValidationLoss", "BestCheckpoint", "Recorder",
        "PeriodicCheckpoint"]
    steps = [e for it in range(6) for e in (["before_step", it], ["after_step", it + 1])]
    for at, k in ((3, 0), (8, 1), (13, 2)):  # every 2 iterations, inside the step's after_step
        steps.insert(at, ["after_evaluation", 2 * (k + 1), values[k], True, max(values[:k + 1])])
    assert recorder.events == [["before_train", 0], *steps, ["after_train", 6]]

    crashed = _trainer(tmp_path / "resumed", values=values, val_loss=True, user=_user_hooks(),
                       crash_at=5)
    with pytest.raises(KeyboardInterrupt):
        crashed.train()
    ckpt = load_checkpoint(tmp_path / "resumed" / "last.pth")
    assert ckpt["iteration"] == 4 and ckpt["hooks"]["Recorder"]["tag"] == "mine"
    # the checkpoint, written last at iteration 4, holds the hook's state after that step
    assert ckpt["hooks"]["Recorder"]["events"] == recorder.events[:11]
    resumed = _trainer(tmp_path / "resumed", values=values[2:], val_loss=True,
                       user=_user_hooks(), start_ckpt=ckpt, init_seed=9)
    resumed.train()
    (again,) = [h for h in resumed.hooks if h.name == "Recorder"]
    assert again.events == [*recorder.events[:11], ["before_train", 4], *recorder.events[11:]]
    for (name, a), b in zip(full.model.state_dict().items(),
                            resumed.model.state_dict().values()):
        assert torch.equal(a, b), name  # and the training resumed bitwise


def test_early_stopping_stops_at_the_right_evaluation(tmp_path, detection_log):
    # evaluations at 2, 4, 6, ...: best 70 at 4, then 50, 60 do not beat it: stop at 8
    values = [30.0, 70.0, 50.0, 60.0, 90.0]
    trainer = _trainer(tmp_path, max_iter=10, values=values, patience=2)
    result = trainer.train()
    assert trainer.iteration == 8 and result["mAP"] == 60.0
    reason = ("early stop at iteration 8: mAP has not risen for 2 evaluation(s) in a row (best "
              "70 at iteration 4; solver.early_stop.patience 2)")
    assert reason in detection_log
    last = load_checkpoint(tmp_path / "last.pth")
    assert last["iteration"] == 8 and last["hooks"]["early_stop"]["reason"] == reason
    assert load_checkpoint(tmp_path / "best.pth")["iteration"] == 4
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert max(r["iteration"] for r in lines) == 8
    # resumed, it knows it stopped: no step, no evaluation
    resumed = _trainer(tmp_path, max_iter=10, values=values[4:], patience=2, start_ckpt=last)
    assert resumed.train() is None and resumed.iteration == 8
    assert detection_log[-1] == f"{reason}: nothing left to train"


def test_the_validation_loss_joins_each_evaluation_and_changes_no_weight(tmp_path):
    with_loss = _trainer(tmp_path / "a", val_loss=True)
    results = with_loss.train()
    without = _trainer(tmp_path / "b")
    without.train()
    for (name, a), b in zip(with_loss.model.state_dict().items(),
                            without.model.state_dict().values()):
        assert torch.equal(a, b), name
    # the last evaluation's numbers are those of the final weights, computed by hand
    expected = validation_loss(with_loss.model, TEST, prepare_batch=move_batch, device=CPU)
    assert {k: v for k, v in results.items() if k.startswith("val_")} == expected
    evals = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
             if '"eval"' in x]
    assert [r["iteration"] for r in evals] == [2, 4, 6]
    assert all({"val_loss", "val_loss_cls", "val_loss_box"} <= set(r) for r in evals)
    assert evals[-1]["val_loss"] == expected["val_loss"]


def test_user_hooks_are_checked_and_a_stored_config_imports_none():
    with pytest.raises(ValueError, match=r"hooks\[0\]: cannot import no_such_package for "
                                         r"no_such_package.Hook"):
        build_user_hooks([{"class": "no_such_package.Hook"}])
    with pytest.raises(ValueError, match=r"hooks\[0\]: recording_hook.NotAHook is a type, not a "
                                         r"subclass of detection.engine.hooks.HookBase"):
        build_user_hooks([{"class": "recording_hook.NotAHook"}])
    with pytest.raises(ValueError, match=r"hooks\[1\] \(recording_hook.Recorder\): .*unexpected "
                                         r"keyword argument 'colour'"):
        build_user_hooks([{"class": "recording_hook.Recorder"},
                          {"class": "recording_hook.Recorder", "colour": 1}])
    with pytest.raises(ValueError, match=r"hooks\[0\]: each hook is a mapping with its class"):
        build_user_hooks(["recording_hook.Recorder"])
    # eval / infer read a checkpoint's config: its hooks are dropped, nothing is imported
    stored = config_to_dict(load_config(None, ['hooks=[{class: evil_package.Hook}]']))
    assert stored["hooks"] == [{"class": "evil_package.Hook"}]
    cfg = checkpoint_config({"config": stored}, "last.pth")
    assert cfg.hooks == [] and "evil_package" not in sys.modules
