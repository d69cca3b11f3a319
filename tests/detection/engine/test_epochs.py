"""Lengths in epochs (detection/engine/epochs.py): the conversion, and a run configured in
epochs equal to its twin configured in iterations by hand."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from detection.config import load_config
from detection.engine.epochs import convert_epochs, describe, epochs_to_iterations
from detection.setup import build_trainer


@pytest.mark.parametrize("epochs, images, batch, expected", [
    (1, 400, 8, 50), (2, 25, 4, 13),  # 12.5 iterations: the last batch is a whole step
    (0.1, 30, 3, 1), (0.3, 10, 1, 3),  # exact decimals: 0.3 * 10 is 3, not 3.0000000000000004
    (12, 368, 8, 552), (0, 10, 2, 0)])
def test_epochs_convert_to_whole_iterations_rounding_up(epochs, images, batch, expected):
    assert epochs_to_iterations(epochs, images=images, batch=batch) == expected


def test_only_the_keys_set_in_epochs_replace_their_twins():
    cfg = load_config(None, ["solver.ims_per_batch=4", "solver.max_epochs=3",
                             "solver.step_epochs=[2, 2.5]", "test.eval_period_epochs=1"])
    out = convert_epochs(cfg, images=10)  # 2.5 iterations an epoch
    assert (out.solver.max_iter, out.solver.steps, out.test.eval_period) == (8, [5, 7], 3)
    assert out.solver.warmup_iters == cfg.solver.warmup_iters  # not set in epochs: kept
    assert out.solver.checkpoint_period == cfg.solver.checkpoint_period
    assert out.solver.max_epochs == 3  # kept, so the saved config converts again alike
    assert convert_epochs(out, images=10) == out
    assert describe(out, images=10) == (
        "epochs: 10 training images at 4 a step = 2.5 iterations an epoch: solver.max_epochs 3.0"
        " -> solver.max_iter 8; solver.step_epochs [2.0, 2.5] -> solver.steps [5, 7]; "
        "test.eval_period_epochs 1.0 -> test.eval_period 3")
    plain = load_config(None)
    assert convert_epochs(plain, images=10) is plain and describe(plain, images=10) is None
    with pytest.raises(ValueError, match="solver.max_epochs must be positive"):
        convert_epochs(load_config(None, ["solver.max_epochs=0"]), images=10)


def test_a_run_in_epochs_equals_its_hand_converted_twin(synthetic_coco, tiny_config, tmp_path,
                                                        detection_log):
    (tmp_path / "e").mkdir()
    (tmp_path / "i").mkdir()
    epochs = tiny_config(tmp_path / "e", synthetic_coco, solver={
        "max_epochs": 1, "step_epochs": [0.5], "warmup_epochs": 0.25,
        "checkpoint_period_epochs": 0.5, "ims_per_batch": 4}, test={"eval_period_epochs": 1})
    trainer, cfg = build_trainer(load_config(epochs), device=torch.device("cpu"))
    images = len(trainer.data_loader.dataset)  # the training set as loaded (empty ones left out)
    twin_solver = {"max_iter": -(-images // 4), "steps": [-(-images // 8)],
                   "warmup_iters": -(-images // 16), "checkpoint_period": -(-images // 8),
                   "ims_per_batch": 4}
    iterations = tiny_config(tmp_path / "i", synthetic_coco, solver=twin_solver,
                             test={"eval_period": -(-images // 4)})
    twin, twin_cfg = build_trainer(load_config(iterations), device=torch.device("cpu"))
    for key, value in twin_solver.items():
        assert getattr(cfg.solver, key) == value, key
    assert cfg.test.eval_period == twin_cfg.test.eval_period
    def periods(t):
        return [getattr(h, "period", None) for h in t.hooks]  # logging, evaluation, checkpoint

    assert trainer.max_iter == twin.max_iter and periods(trainer) == periods(twin)
    assert -(-images // 8) in periods(trainer)
    assert trainer.scheduler.state_dict() == twin.scheduler.state_dict()
    assert any(line.startswith(f"epochs: {images} training images at 4 a step") for line
               in detection_log)
    # the learning rate of every iteration is the same
    lrs = []
    for t in (trainer, twin):
        lrs.append([])
        for _ in range(t.max_iter):
            lrs[-1].append(t.scheduler.get_last_lr())
            t.optimizer.step()
            t.scheduler.step()
    assert lrs[0] == lrs[1] and len(set(map(tuple, lrs[0]))) > 2  # warm-up, base, step
    trainer.writer.close()
    twin.writer.close()
