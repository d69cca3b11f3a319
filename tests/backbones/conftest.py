"""Shared helpers for the backbone tests: torchvision models with random weights, no network."""

import pytest
import torch
import torchvision


def _randomized_torchvision(name: str, seed: int = 0) -> torch.nn.Module:
    """torchvision `name` (weights=None) with random convs and random BN affine AND running
    statistics, in eval mode, so that loading BN statistics correctly is actually checked."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)(weights=None)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(1000)
    return model.eval()


@pytest.fixture
def randomized_torchvision():
    return _randomized_torchvision
