"""A tiny stand-in for the detector and its data, for engine tests that must not depend on the
model's speed: same call contract (images + targets -> four losses; images -> detections), uses
the global torch RNG in training (like the RPN/RoI samplers) and has BatchNorm buffers."""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

LOSS_NAMES = ("loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box")


class ToyDetector(nn.Module):
    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.cls = nn.Linear(8, num_classes + 1)
        self.box = nn.Linear(8, 4)
        self.objectness = nn.Linear(8, 1)

    def _features(self, images: list[torch.Tensor]) -> torch.Tensor:
        x = torch.stack([im.float() / 255.0 for im in images])  # (N, 3, H, W)
        return F.relu(self.bn(self.conv(x))).mean(dim=(2, 3))  # (N, 8)

    def forward(self, images, targets=None, original_sizes=None):
        feats = self._features(images)
        size = float(images[0].shape[-1])
        if self.training:
            feats = feats + 0.05 * torch.randn_like(feats)  # RNG-dependent, like box sampling
            keep = torch.randperm(feats.shape[0])[: max(1, feats.shape[0] - 1)]
            labels = torch.stack([t["labels"][0] for t in targets])[keep]
            boxes = torch.stack([t["boxes"][0] for t in targets])[keep] / size
            obj = self.objectness(feats).squeeze(1)
            return {
                "loss_rpn_cls": F.binary_cross_entropy_with_logits(obj, torch.ones_like(obj)),
                "loss_rpn_box": (self.box(feats)[:, :2].sigmoid() - 0.5).abs().mean(),
                "loss_cls": F.cross_entropy(self.cls(feats[keep]), labels),
                "loss_box": F.smooth_l1_loss(self.box(feats[keep]).sigmoid(), boxes),
            }
        scores, labels = self.cls(feats).softmax(-1)[:, 1:].max(-1)
        boxes = self.box(feats).sigmoid() * size
        boxes = torch.cat([boxes[:, :2].minimum(boxes[:, 2:]), boxes[:, :2].maximum(boxes[:, 2:])],
                          dim=1)
        return [{"boxes": b[None], "scores": s[None], "labels": (l + 1)[None]}
                for b, s, l in zip(boxes, scores, labels)]


def toy_sample(index: int, size: int = 16) -> dict:
    g = torch.Generator().manual_seed(index)
    label = index % 3 + 1
    image = torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8)
    image[label - 1] = 255 - index % 7  # the class shows in one colour channel
    x0 = float(index % 5)
    return {"image": image, "boxes": torch.tensor([[x0, 2.0, x0 + 8.0, 12.0]]),
            "labels": torch.tensor([label]), "image_id": index, "original_size": (size, size),
            "file_name": f"{index}.png"}


def toy_batches(*, seed: int, batch_size: int, start_iter: int = 0, num_samples: int = 24,
                rank: int = 0, world_size: int = 1, crash_at: int | None = None,
                signal_at: tuple[int, int] | None = None):
    """Endless batches in an order fixed by ``seed``; batch ``i`` is the same whether the
    iteration starts at 0 or at ``start_iter`` (what the real sampler promises).
    ``crash_at``: raise instead of batch ``i``; ``signal_at=(i, signum)``: this process gets
    that signal while batch ``i`` is loaded (as from a scheduler)."""
    it = start_iter
    while True:
        if crash_at is not None and it == crash_at:
            raise KeyboardInterrupt(f"simulated crash at iteration {it}")
        if signal_at is not None and it == signal_at[0]:
            os.kill(os.getpid(), signal_at[1])
        g = torch.Generator().manual_seed(seed * 100003 + it)
        order = torch.randperm(num_samples, generator=g)[: batch_size * world_size].tolist()
        yield [toy_sample(i) for i in order[rank::world_size]]
        it += 1


class ToyEvaluator:
    """Scores a fake 'mAP' from the outputs so that evaluation has real inputs."""

    def __init__(self, values=None):
        self.values = list(values or [])
        self.calls = 0

    def reset(self):
        self.samples, self.outputs = [], []

    def process(self, samples, outputs):
        self.samples += samples
        self.outputs += outputs

    def evaluate(self):
        from detection.engine.distributed import all_gather_object

        self.samples = [s for part in all_gather_object(self.samples) for s in part]
        self.calls += 1
        value = self.values[self.calls - 1] if self.values else 50.0
        return {"mAP": value, "mAP50": value + 10.0, "mAP75": value - 10.0,
                "per_category": {"a": value}, "num_images": float(len(self.samples))}
