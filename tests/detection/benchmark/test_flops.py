"""detection/benchmark/models.py: FLOPs of a prepared model (one-call convolutions) counted."""
import copy

import torch
from torch.utils.flop_counter import FlopCounterMode

import detection.benchmark.models  # noqa: F401  (registers the fused convolution's formula)
from backbones.resnet import ResNet
from detection.precision import resolve_precision


def test_a_prepared_bf16_model_counts_the_flops_of_its_fused_convolutions(one_thread):
    model = ResNet(depth=18, out_features=["res5"]).eval()
    precision = resolve_precision("bf16", "cpu")
    prepared = precision.prepare(copy.deepcopy(model))
    x = torch.randn(1, 3, 64, 64)
    counts = []
    for m in (model, prepared):
        with FlopCounterMode(display=False) as counter, torch.inference_mode(), \
                precision.autocast():
            m(x)
        counts.append(counter.get_total_flops())
    # by hand: 2 * (multiply-adds of every convolution) of ResNet-18 at 64 x 64
    macs = 32 * 32 * 64 * 3 * 49                                    # stem, 32 x 32 out
    macs += 4 * 16 * 16 * 64 * 64 * 9                               # res2, 16 x 16
    macs += 8 * 8 * (128 * 64 * 9 + 3 * 128 * 128 * 9 + 128 * 64)   # res3 (+ projection)
    macs += 4 * 4 * (256 * 128 * 9 + 3 * 256 * 256 * 9 + 256 * 128)
    macs += 2 * 2 * (512 * 256 * 9 + 3 * 512 * 512 * 9 + 512 * 256)
    assert counts == [2 * macs, 2 * macs]
