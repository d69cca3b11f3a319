import math

import pytest
import torch
from torch import nn

from detection.engine.schedule import WarmupLRScheduler, lr_factor, param_groups

ONE_X = dict(max_iter=90000, schedule="multistep", steps=[60000, 80000], gamma=0.1,
             warmup_iters=1000, warmup_factor=0.001)


def test_warmup_and_steps_of_the_1x_schedule():
    assert lr_factor(0, **ONE_X) == pytest.approx(0.001)
    assert lr_factor(500, **ONE_X) == pytest.approx(0.001 * 0.5 + 0.5)  # linear: f(1-a) + a
    assert lr_factor(999, **ONE_X) == pytest.approx(0.001 * 0.001 + 0.999)
    assert lr_factor(1000, **ONE_X) == 1.0
    assert lr_factor(59999, **ONE_X) == 1.0
    assert lr_factor(60000, **ONE_X) == pytest.approx(0.1)
    assert lr_factor(79999, **ONE_X) == pytest.approx(0.1)
    assert lr_factor(80000, **ONE_X) == pytest.approx(0.01)


def test_cosine_decay():
    kw = dict(max_iter=100, schedule="cosine", warmup_iters=0)
    assert lr_factor(0, **kw) == 1.0
    assert lr_factor(50, **kw) == pytest.approx(0.5)
    assert lr_factor(25, **kw) == pytest.approx((1 + math.cos(math.pi / 4)) / 2)
    assert lr_factor(100, **kw) == pytest.approx(0.0)
    # warm-up multiplies the decay
    assert lr_factor(5, **{**kw, "warmup_iters": 10, "warmup_factor": 0.0}) == pytest.approx(
        0.5 * (1 + math.cos(math.pi * 0.05)) / 2)


def test_unknown_schedule_fails_at_construction():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="poly"):
        WarmupLRScheduler(opt, max_iter=10, schedule="poly")


def _lrs(sched, opt, n):
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_scheduler_follows_lr_factor_and_resumes_from_state_dict():
    kw = dict(max_iter=10, steps=[5, 8], warmup_iters=3, warmup_factor=0.1)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.2)
    sched = WarmupLRScheduler(opt, **kw)
    lrs = _lrs(sched, opt, 4)
    assert lrs == pytest.approx([0.2 * lr_factor(i, **kw) for i in range(4)])
    assert lrs[:2] == pytest.approx([0.02, 0.2 * (0.1 * 2 / 3 + 1 / 3)])

    opt2 = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.2)
    sched2 = WarmupLRScheduler(opt2, **kw)
    sched2.load_state_dict(sched.state_dict())
    opt2.load_state_dict(opt.state_dict())
    assert _lrs(sched2, opt2, 6) == pytest.approx([0.2 * lr_factor(i, **kw) for i in range(4, 10)])
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.2 * 0.01)


def test_constant_warmup_as_the_paper_trains_resnet110():
    # CIFAR-10 ResNet-110: lr 0.01 for 400 iterations, then 0.1, /10 at 32k and 48k
    kw = dict(max_iter=64000, steps=[32000, 48000], warmup_iters=400, warmup_factor=0.1,
              warmup_method="constant")
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = WarmupLRScheduler(opt, **kw)
    assert _lrs(sched, opt, 3) == pytest.approx([0.01] * 3)
    assert [0.1 * lr_factor(i, **kw) for i in (399, 400, 31999, 32000, 48000)] == pytest.approx(
        [0.01, 0.1, 0.1, 0.01, 0.001])
    with pytest.raises(ValueError, match="unknown warmup method 'cosine'"):
        lr_factor(0, max_iter=10, warmup_method="cosine")


def test_param_groups_put_norm_parameters_apart_and_skip_frozen_ones():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.GroupNorm(2, 4),
                          nn.Conv2d(4, 2, 1))
    model[3].weight.requires_grad_(False)
    groups = param_groups(model, weight_decay=1e-4, weight_decay_norm=0.0)
    assert [g["weight_decay"] for g in groups] == [1e-4, 0.0]
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(groups[0]["params"]) == ids([model[0].weight, model[0].bias, model[3].bias])
    assert ids(groups[1]["params"]) == ids([model[1].weight, model[1].bias, model[2].weight,
                                            model[2].bias])
    # SGD applies no decay to the norm group: with a zero loss only decayed weights move
    opt = torch.optim.SGD(groups, lr=1.0)
    before = [p.detach().clone() for p in model.parameters()]
    sum(p.sum() * 0 for p in model.parameters() if p.requires_grad).backward()
    opt.step()
    moved = [not torch.equal(b, p) for b, p in zip(before, model.parameters())]
    assert moved == [True, True, False, False, False, False, False, True]


def test_resuming_keeps_the_new_schedule_but_the_old_position():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = WarmupLRScheduler(opt, max_iter=10, steps=[5], warmup_iters=0)
    _lrs(sched, opt, 6)
    opt2 = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    longer = WarmupLRScheduler(opt2, max_iter=100, steps=[50], warmup_iters=0)
    longer.load_state_dict(sched.state_dict())
    assert (longer.last_epoch, longer.max_iter, longer.steps) == (6, 100, [50])
    opt2.step()
    longer.step()
    assert opt2.param_groups[0]["lr"] == 1.0  # iteration 7 of the new schedule: before its step
