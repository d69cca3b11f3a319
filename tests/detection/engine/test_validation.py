"""The validation loss (detection/engine/validation.py) equals a hand-run of the model on the
test batches, and changes nothing: modes, norm statistics, RNG states."""
from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from detection.build import build_model
from detection.config import load_config
from detection.data.coco import COCODataset
from detection.data.loader import make_test_loader, move_batch
from detection.data.transforms import build_transforms
from detection.engine.validation import loss_mode, validation_loss

CPU = torch.device("cpu")


class FixedStatsNorm(nn.Module):
    """A BatchNorm that always normalises with its running statistics (whatever the mode)."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm):
        super().__init__()
        self.bn = bn

    def forward(self, x):
        b = self.bn
        return F.batch_norm(x, b.running_mean, b.running_var, b.weight, b.bias, False, 0.0, b.eps)


def _fixed_stats(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose BatchNorms normalise by their running statistics in training
    mode too: what the validation loss must compute."""
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                setattr(parent, name, FixedStatsNorm(child))
    return model


@pytest.fixture(scope="module")
def detector_and_batches(synthetic_coco, tiny_model_config, one_thread):
    cfg = load_config(None, [f"model={json.dumps(tiny_model_config())}"])
    torch.manual_seed(0)
    model = build_model(cfg, num_classes=5)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns  # BN trained from scratch: its running statistics matter here
    g = torch.Generator().manual_seed(1)
    for m in bns:  # statistics far from a fresh batch's, so using the batch's would show
        m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.5)
        m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    data = COCODataset(images=synthetic_coco.val_images,
                       annotations=synthetic_coco.val_annotations, train=False,
                       transforms=build_transforms(train=False, min_size=64, max_size=96))
    data = torch.utils.data.Subset(data, range(3))
    batches = list(make_test_loader(data, batch_size=2, num_workers=0))
    assert [len(b) for b in batches] == [2, 1]
    return model, batches


def test_validation_loss_equals_a_hand_run_with_norms_on_running_statistics(
        detector_and_batches):
    model, batches = detector_and_batches
    model.eval()
    got = validation_loss(model, batches, prepare_batch=move_batch, device=CPU, seed=7)

    hand = _fixed_stats(model).train()
    torch.manual_seed(7)  # the loss's own sampling seed, then the batches in order
    with torch.no_grad():
        per_batch = [hand(*move_batch(b, CPU)) for b in batches]
    names = sorted(per_batch[0])
    expected = {f"val_{n}": (2 * float(per_batch[0][n]) + float(per_batch[1][n])) / 3
                for n in names}
    assert set(got) == {"val_loss", *expected}
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    assert got["val_loss"] == pytest.approx(sum(expected.values()), rel=1e-9)
    # with the batch's statistics (BN in training mode) the loss would be another number
    model.train()
    torch.manual_seed(7)
    with torch.no_grad():
        batch_stats = copy.deepcopy(model)(*move_batch(batches[0], CPU))
    assert float(batch_stats["loss_rpn_cls"]) != pytest.approx(
        float(per_batch[0]["loss_rpn_cls"]), rel=1e-3)


def test_validation_loss_changes_no_mode_statistic_or_rng_state(detector_and_batches):
    model, batches = detector_and_batches
    for training in (True, False):
        model.train(training)
        buffers = {k: v.clone() for k, v in model.state_dict().items()}
        modes = [m.training for m in model.modules()]
        rng = torch.get_rng_state()
        first = validation_loss(model, batches, prepare_batch=move_batch, device=CPU)
        assert torch.equal(torch.get_rng_state(), rng)
        assert [m.training for m in model.modules()] == modes
        assert all(torch.equal(v, buffers[k]) for k, v in model.state_dict().items())
        # a function of the weights only: the same number again, whatever the RNG did between
        torch.rand(5)
        assert validation_loss(model, batches, prepare_batch=move_batch, device=CPU) == first


def test_dropout_is_off_and_the_training_path_is_taken():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.drop = nn.Linear(4, 4), nn.Dropout(0.5)

        def forward(self, x, y):
            out = self.drop(self.fc(x))
            return {"loss_mse": F.mse_loss(out, y), "metric": out.sum()} if self.training \
                else out

    torch.manual_seed(0)
    net, x, y = Net(), torch.randn(3, 4), torch.randn(3, 4)
    got = validation_loss(net, [[(x, y)]], prepare_batch=lambda b, d: b[0], device=CPU)
    with torch.no_grad():
        expected = float(F.mse_loss(net.fc(x), y))  # no dropout
    assert got == {"val_loss": pytest.approx(expected), "val_loss_mse": pytest.approx(expected)}
    with loss_mode(net):
        assert net.training and not net.drop.training
    assert net.training and net.drop.training
