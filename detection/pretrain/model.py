"""An image classifier around any backbone, its batches, and the export of its backbone weights.

Shape shorthand: `N` images, `K` classes, `C` the channels of the backbone's last map.

    images (N, 3, H, W) uint8 or float, RGB in 0..255
      -> (x - pixel_mean) / pixel_std
      -> backbone, its last map (N, C, h, w)
      -> pool: global average (ResNets: (N, C)); VGG-16: pool5 + fc6/fc7 ((N, 4096))
      -> fc (N, K) logits

Training returns ``{"loss_cls": cross entropy, "top1_err": the batch's top-1 error in percent}``
(the second is a metric, logged by the trainer, never minimised); evaluation returns the logits.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ImageClassifier", "backbone_state_dict", "classification_inputs",
           "export_backbone", "label_ranks"]


def label_ranks(scores: Tensor, labels: Tensor) -> Tensor:
    """``(N,)`` int64: how many classes rank before the true one; a top-``k`` prediction is right
    iff the rank is below ``k``. A class scoring the same as the true class ranks before it, so
    ties count as errors (all-equal scores are never "right")."""
    true = scores.gather(1, labels[:, None])  # (N, 1)
    return (scores > true).sum(1) + (scores == true).sum(1) - 1


class ImageClassifier(nn.Module):
    """Backbone -> pool -> fc (module docstring).

    Args:
        backbone: returns a dict of maps; the last of ``backbone.out_features`` is classified.
        num_classes: ``K``.
        pixel_mean, pixel_std: per RGB channel, 0..255 units.
        head: applied to the pooled map before the fc (VGG-16: fc6/fc7 on its pool5 7x7 map);
            ``None``: global average pooling only (ResNets).
        head_channels: the head's output width (the fc's input); default the map's channels.
    """

    def __init__(self, *, backbone: nn.Module, num_classes: int, pixel_mean: Sequence[float],
                 pixel_std: Sequence[float], head: nn.Module | None = None,
                 head_channels: int | None = None) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head
        self.in_feature = backbone.out_features[-1]
        channels = head_channels or backbone.out_channels[self.in_feature]
        self.fc = nn.Linear(channels, num_classes)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1), False)

    def forward(self, images: Tensor, labels: Tensor | None = None) -> Tensor | dict[str, Tensor]:
        x = (images.float() - self.pixel_mean) / self.pixel_std
        x = self.backbone(x)[self.in_feature]  # (N, C, h, w)
        if self.head is None:
            x = x.mean(dim=(2, 3))  # (N, C, h, w) -> (N, C)
        else:  # VGG-16: pool5 (2x2 max), 7x7 as torchvision's AdaptiveAvgPool2d, fc6/fc7
            x = self.head(F.adaptive_avg_pool2d(F.max_pool2d(x, 2), 7))
        logits = self.fc(x)  # (N, K)
        if not self.training:
            return logits
        if labels is None:
            raise ValueError("ImageClassifier in training mode needs labels")
        with torch.no_grad():
            top1_err = 100.0 * (label_ranks(logits.float(), labels) > 0).float().mean()
        return {"loss_cls": F.cross_entropy(logits.float(), labels), "top1_err": top1_err}


def classification_inputs(batch: list[dict[str, Any]], device: torch.device
                          ) -> tuple[Tensor, Tensor]:
    """``(images (N, 3, H, W), labels (N,))`` of a batch of samples on ``device`` (the trainer's
    ``prepare_batch``): one stacked tensor, one host-to-device copy."""
    images = torch.stack([s["image"] for s in batch])
    labels = torch.stack([s["label"] for s in batch])
    return images.to(device, non_blocking=True), labels.to(device, non_blocking=True)


def backbone_state_dict(model: ImageClassifier, *, fc_prefix: str = "fc") -> dict[str, Tensor]:
    """The classifier's weights in the layout ``build_backbone(name, weights=...)`` reads: the
    backbone's own names (torchvision's), the head's (VGG: ``classifier.0/3``), the fc under
    ``fc_prefix`` (ResNets ``fc``, VGG ``classifier.6``), which ``build_backbone`` ignores."""
    def cpu(module: nn.Module, prefix: str = "") -> dict[str, Tensor]:
        return {prefix + k: v.detach() if v.is_meta else v.detach().cpu()
                for k, v in module.state_dict().items()}

    state = cpu(model.backbone)
    if model.head is not None:
        state.update(cpu(model.head))
    state.update(cpu(model.fc, prefix=f"{fc_prefix}."))
    return state


def export_backbone(model: ImageClassifier, path: str | os.PathLike, *, fc_prefix: str = "fc",
                    **extra: Any) -> None:
    """Write ``{"model": backbone_state_dict(model), **extra}`` atomically to ``path`` (``extra``:
    plain values such as ``arch``, ``config``, ``classes``, ``iteration``)."""
    from ..engine.checkpoint import save_checkpoint

    save_checkpoint({"model": backbone_state_dict(model, fc_prefix=fc_prefix), **extra}, path)
