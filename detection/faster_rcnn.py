"""Faster R-CNN meta-architecture: normalise and batch images, backbone (+ FPN), RPN, RoI heads.

Shape shorthand: ``N`` images, ``Hp, Wp`` the padded batch size (a multiple of
``size_divisibility``), ``Di`` detections of image ``i``.

Input images are ``(3, H, W)`` RGB in 0..255 (uint8 or float), of any sizes; each is normalised
``(x - pixel_mean) / pixel_std`` and copied to the top-left of a zero batch ``(N, 3, Hp, Wp)``
(zero after normalisation: the mean colour). With ``input_format="BGR"`` (backbone weights
trained on BGR images, e.g. MSRA's original ResNets) the channels are reversed first, and
``pixel_mean``/``pixel_std`` are given in BGR order. Boxes are absolute ``xyxy`` pixels of the input
images throughout; detections are rescaled to ``original_sizes`` when given, as torchvision does.

With a mask head in the RoI heads (Mask R-CNN) each target also carries ``masks``
(``detection.masks.InstanceMasks``, one per box), training adds ``loss_mask``, and each image's
detections carry ``masks`` (Di, 1, M, M): probabilities over each box, unchanged by
``original_sizes`` (``detection.masks.paste_masks`` puts them into the image).

With ``channels_last`` (the default) the batch is laid out ``(N, H, W, 3)`` in memory, so every
convolution of the backbone, FPN and RPN runs on channels-last maps (equal results up to float
rounding; docs/benchmarks.md gives the speed-up), and the 4-D weights are
channels-last too (no per-call weight reorder; gradients in the parameters' own layout, as DDP's
buckets expect).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .masks import InstanceMasks
from .roi_heads import RoIHeads
from .rpn import RPN

__all__ = ["FasterRCNN"]


class FasterRCNN(nn.Module):
    """``forward(images, targets=None, original_sizes=None)``: losses (training) or detections."""

    def __init__(
        self, *, backbone: nn.Module, rpn: RPN, roi_heads: RoIHeads,
        pixel_mean: Sequence[float], pixel_std: Sequence[float], size_divisibility: int = 32,
        channels_last: bool = True, input_format: str = "RGB",
    ) -> None:
        super().__init__()
        if len(pixel_mean) != 3 or len(pixel_std) != 3:
            raise ValueError(f"pixel_mean/pixel_std need 3 values, got {pixel_mean}, {pixel_std}")
        if input_format not in ("RGB", "BGR"):
            raise ValueError(f"input_format must be 'RGB' or 'BGR', got {input_format!r}")
        self.input_format = input_format
        self.backbone = backbone
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(3, 1, 1), False)
        self.size_divisibility = max(int(size_divisibility), 1)
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)  # 4-D tensors only; values unchanged

    def preprocess(self, images: Sequence[Tensor]) -> tuple[Tensor, list[tuple[int, int]]]:
        """Normalised, zero-padded batch (N, 3, Hp, Wp) and each image's (h, w)."""
        if len(images) == 0:
            raise ValueError("FasterRCNN got an empty list of images")
        for i, img in enumerate(images):
            if img.dim() != 3 or img.shape[0] != 3:
                raise ValueError(f"image {i} must be a (3, H, W) tensor, got {tuple(img.shape)}")
        sizes = [(int(img.shape[1]), int(img.shape[2])) for img in images]
        div = self.size_divisibility
        hp = int(math.ceil(max(h for h, _ in sizes) / div) * div)
        wp = int(math.ceil(max(w for _, w in sizes) / div) * div)
        mean, std = self.pixel_mean, self.pixel_std
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        batch = torch.empty((len(images), 3, hp, wp), dtype=mean.dtype, device=mean.device,
                            memory_format=layout).zero_()
        for img, out, (h, w) in zip(images, batch, sizes):
            region = out[:, :h, :w]
            if self.input_format == "BGR":
                img = img.flip(0)  # (3, H, W) RGB -> BGR
            region.copy_(img)  # uint8 or float -> float32, on the model's device
            region.sub_(mean).div_(std)
        return batch, sizes

    def forward(
        self, images: Sequence[Tensor], targets: Sequence[dict[str, Tensor]] | None = None,
        original_sizes: Sequence[tuple[int, int]] | None = None,
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        batch, image_sizes = self.preprocess(images)
        if self.training:
            num_classes = self.roi_heads.box_predictor.num_classes
            targets = self._check_targets(targets, len(images), num_classes, batch.device,
                                          masks=self.roi_heads.mask_head is not None)
        features = self.backbone(batch)
        gt_boxes = [t["boxes"] for t in targets] if self.training else None
        proposals, rpn_losses = self.rpn(features, image_sizes, batch.shape[-2:], gt_boxes)
        detections, roi_losses = self.roi_heads(
            features, proposals, image_sizes, targets if self.training else None
        )
        if self.training:
            return {**rpn_losses, **roi_losses}
        if original_sizes is not None:
            if len(original_sizes) != len(images):
                raise ValueError(
                    f"got {len(original_sizes)} original_sizes for {len(images)} images"
                )
            for det, size, orig in zip(detections, image_sizes, original_sizes):
                det["boxes"] = rescale_boxes(det["boxes"], size, orig)
        return detections

    @staticmethod
    def _check_targets(
        targets: Sequence[dict[str, Tensor]] | None, num_images: int, num_classes: int,
        device: torch.device, masks: bool = False,
    ) -> list[dict[str, Tensor]]:
        if targets is None or len(targets) != num_images:
            got = "none" if targets is None else len(targets)
            raise ValueError(f"training needs one target per image: {num_images} images, {got}")
        checked = []
        for i, t in enumerate(targets):
            boxes, labels = t.get("boxes"), t.get("labels")
            if boxes is None or labels is None:
                raise ValueError(f"target {i} needs 'boxes' and 'labels', has {sorted(t)}")
            boxes = torch.as_tensor(boxes, dtype=torch.float32, device=device)
            labels = torch.as_tensor(labels, dtype=torch.int64, device=device).reshape(-1)
            if boxes.numel() == 0:
                boxes = boxes.reshape(0, 4)
            if boxes.dim() != 2 or boxes.shape[1] != 4:
                raise ValueError(f"target {i}: boxes must be (n, 4) xyxy, got {tuple(boxes.shape)}")
            if boxes.shape[0] != labels.shape[0]:
                raise ValueError(
                    f"target {i}: {boxes.shape[0]} boxes but {labels.shape[0]} labels"
                )
            bad = (boxes[:, 2:] <= boxes[:, :2]).any(dim=1)
            if bad.any():
                j = int(torch.nonzero(bad)[0])
                raise ValueError(
                    f"target {i}: box {j} {boxes[j].tolist()} has no area (need x2 > x1, y2 > y1)"
                )
            if labels.numel() and (int(labels.min()) < 1 or int(labels.max()) > num_classes):
                raise ValueError(f"target {i}: labels must be in 1..{num_classes} (0 is the "
                                 f"background), got {labels.tolist()}")
            checked.append({"boxes": boxes, "labels": labels})
            if masks:
                checked[-1]["masks"] = _check_masks(t.get("masks"), i, len(boxes), device)
        return checked


def _check_masks(masks: InstanceMasks | None, i: int, num_boxes: int, device: torch.device
                 ) -> InstanceMasks:
    """Target ``i``'s ``masks``, one per box, on ``device``."""
    if not isinstance(masks, InstanceMasks):
        raise ValueError(f"target {i} needs 'masks' (InstanceMasks) for the mask head, got "
                         f"{type(masks).__name__}")
    if len(masks) != num_boxes:
        raise ValueError(f"target {i}: {num_boxes} boxes but {len(masks)} masks")
    return masks.to(device)


def rescale_boxes(boxes: Tensor, size: tuple[int, int], original: tuple[int, int]) -> Tensor:
    """Boxes (D, 4) from an ``(h, w)`` image to the ``original`` (h, w), as torchvision does."""
    orig = torch.tensor(original, dtype=torch.float32)
    ratio_h, ratio_w = (orig / torch.tensor(size, dtype=torch.float32)).tolist()
    scale = torch.tensor([ratio_w, ratio_h, ratio_w, ratio_h], dtype=torch.float32)
    return boxes * scale.to(boxes.device)
