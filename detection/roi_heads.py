"""RoI heads of Fast/Faster R-CNN: sample proposals, pool, box head, classify and refine.

Shape shorthand: ``N`` images, ``Pi`` proposals of image ``i``, ``R`` RoIs over the batch, ``K``
foreground classes (labels ``1..K``, ``0`` = background), ``D`` box-head output size.

Naming: ``pred_class_logits`` (R, K+1) before softmax, ``pred_deltas`` (R, (K+1)*4) class-specific
offsets, ``gt_labels`` per sampled RoI, ``scores`` after softmax.

Training: the ground-truth boxes are appended to each image's proposals; each proposal is matched
(IoU >= ``fg_iou_thresh``: its gt class; < ``bg_iou_thresh``: background 0; between: ignored), and
``batch_size_per_image`` RoIs are sampled per image (``positive_fraction`` positive). Losses, as
torchvision's ``fastrcnn_loss``::

    loss_cls = mean_R cross_entropy(pred_class_logits, gt_labels)
    loss_box = sum_{fg} smooth_l1(pred_deltas[gt class] - encode(gt_box, proposal); beta) / R

Inference (batched over images): softmax, drop the background column and (RoI, class) scores
<= ``score_thresh``, decode the remaining class-specific boxes, clip them to the image, drop those
with a side < 0.01 px, NMS per image and class at ``nms_thresh``, keep the
``detections_per_img`` best per image.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.ops import box_iou

from .box_coder import BoxCoder
from .box_heads import BoxPredictor
from .matcher import Matcher
from .poolers import RoIPooler
from .rpn import batched_nms_topk, clip_boxes
from .roi_sampling import BalancedSampler

__all__ = ["RoIHeads"]


class RoIHeads(nn.Module):
    """Pooler + box head + predictor, with their sampling, losses and post-processing."""

    def __init__(
        self, *, in_features: Sequence[str], pooler: RoIPooler, box_head: nn.Module,
        box_predictor: BoxPredictor, box_coder: BoxCoder, matcher: Matcher,
        sampler: BalancedSampler, smooth_l1_beta: float = 1.0 / 9.0, score_thresh: float = 0.05,
        nms_thresh: float = 0.5, detections_per_img: int = 100, min_box_size: float = 1e-2,
    ) -> None:
        super().__init__()
        self.in_features = list(in_features)
        self.pooler = pooler
        self.box_head = box_head
        self.box_predictor = box_predictor
        self.box_coder = box_coder
        self.matcher = matcher
        self.sampler = sampler
        self.smooth_l1_beta = smooth_l1_beta
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.min_box_size = min_box_size

    def forward(
        self, features: dict[str, Tensor], proposals: list[Tensor],
        image_sizes: Sequence[tuple[int, int]], targets: Sequence[dict[str, Tensor]] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        """Detections per image (inference) or ``{loss_cls, loss_box}`` (training)."""
        if self.training:
            if targets is None:
                raise ValueError("the RoI heads need targets in training mode")
            proposals, gt_labels, target_deltas = self.label_and_sample_proposals(
                proposals, [t["boxes"] for t in targets], [t["labels"] for t in targets]
            )
        pred_class_logits, pred_deltas = self.predict(features, proposals)
        if self.training:
            return [], self.losses(pred_class_logits, pred_deltas, gt_labels, target_deltas)
        return self.postprocess(pred_class_logits, pred_deltas, proposals, image_sizes), {}

    def predict(self, features: dict[str, Tensor], boxes: list[Tensor]) -> tuple[Tensor, Tensor]:
        """RoIs N x (Pi, 4) -> pred_class_logits (R, K+1), pred_deltas (R, (K+1)*4)."""
        pooled = self.pooler([features[f] for f in self.in_features], boxes)  # (R, C, S, S)
        return self.box_predictor(self.box_head(pooled))

    @torch.no_grad()
    def label_and_sample_proposals(
        self, proposals: list[Tensor], gt_boxes: list[Tensor], gt_labels: list[Tensor]
    ) -> tuple[list[Tensor], Tensor, Tensor]:
        """Sampled RoIs N x (Si, 4), their gt_labels (R,), and target deltas (R_fg, 4)."""
        all_boxes, all_labels, all_matched = [], [], []
        for props, gt, labels in zip(proposals, gt_boxes, gt_labels):
            boxes = torch.cat([props, gt.to(props.dtype)])  # ground truth as extra proposals
            match = self.matcher(box_iou(gt, boxes)) if gt.numel() else torch.full(
                (boxes.shape[0],), Matcher.BELOW_LOW_THRESHOLD, dtype=torch.int64,
                device=boxes.device)
            idx = match.clamp(min=0)
            label = labels[idx] if gt.numel() else torch.zeros_like(match)
            label = torch.where(match == Matcher.BELOW_LOW_THRESHOLD, 0, label)
            label = torch.where(match == Matcher.BETWEEN_THRESHOLDS, -1, label)
            all_boxes.append(boxes)
            all_labels.append(label)
            all_matched.append(gt[idx] if gt.numel() else None)

        # (N, max Pi) labels, padded with -1 (ignored) so all images are sampled at once
        padded = nn.utils.rnn.pad_sequence(all_labels, batch_first=True, padding_value=-1)
        pos, neg = self.sampler(padded)
        sampled = pos | neg
        rois, labels, targets = [], [], []
        for i, (boxes, label, matched) in enumerate(zip(all_boxes, all_labels, all_matched)):
            keep = torch.nonzero(sampled[i, : boxes.shape[0]]).squeeze(1)
            rois.append(boxes[keep])
            labels.append(label[keep])
            fg = keep[label[keep] > 0]
            if fg.numel():
                targets.append(self.box_coder.encode(matched[fg], boxes[fg]))
        targets_t = torch.cat(targets) if targets else all_boxes[0].new_zeros((0, 4))
        return rois, torch.cat(labels), targets_t

    def losses(
        self, pred_class_logits: Tensor, pred_deltas: Tensor, gt_labels: Tensor,
        target_deltas: Tensor,
    ) -> dict[str, Tensor]:
        """``loss_cls`` (cross entropy) and ``loss_box`` (smooth L1 on the gt class)."""
        num_rois = gt_labels.numel()
        if num_rois == 0:  # nothing sampled in the whole batch: zero, but keep the graph
            zero = pred_class_logits.sum() * 0.0 + pred_deltas.sum() * 0.0
            return {"loss_cls": zero, "loss_box": zero}
        loss_cls = F.cross_entropy(pred_class_logits, gt_labels)
        fg = torch.nonzero(gt_labels > 0).squeeze(1)
        # (R, (K+1)*4) -> (R, K+1, 4), the gt class's deltas of each foreground RoI
        fg_deltas = pred_deltas.view(num_rois, -1, 4)[fg, gt_labels[fg]]
        loss_box = F.smooth_l1_loss(
            fg_deltas, target_deltas, beta=self.smooth_l1_beta, reduction="sum"
        ) / num_rois
        return {"loss_cls": loss_cls, "loss_box": loss_box}

    @torch.no_grad()
    def postprocess(
        self, pred_class_logits: Tensor, pred_deltas: Tensor, proposals: list[Tensor],
        image_sizes: Sequence[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        """Detections ``[{boxes (Di, 4), scores (Di,), labels (Di,)}]``, batched over images.

        Only the (RoI, class) pairs above ``score_thresh`` are decoded (a few thousand of the
        R*K): the same numbers as decoding all and filtering after, at a fraction of the work.
        """
        num_images = len(proposals)
        num_rois = pred_class_logits.shape[0]
        device = pred_class_logits.device
        counts = torch.tensor([p.shape[0] for p in proposals], device=device)
        roi_images = torch.repeat_interleave(torch.arange(num_images, device=device), counts)

        # (R, K) in at least float32, background dropped
        logits = pred_class_logits.to(torch.promote_types(pred_class_logits.dtype, torch.float32))
        scores = F.softmax(logits, dim=-1)[:, 1:]
        # candidates in (RoI, class) row-major order, as torchvision's reshape(-1) gives them
        roi_idx, class_idx = torch.nonzero(scores > self.score_thresh, as_tuple=True)
        scores, labels = scores[roi_idx, class_idx], class_idx + 1
        # (R, (K+1)*4) -> (R, K+1, 4), each candidate's own class deltas -> (C, 4); K+1 spelled
        # out, so that R = 0 (no proposal in the whole batch) reshapes too
        deltas = pred_deltas.view(num_rois, pred_class_logits.shape[1], 4)[roi_idx, labels]
        boxes = self.box_coder.decode(deltas, torch.cat(proposals)[roi_idx])
        image_ids = roi_images[roi_idx]
        sizes = torch.as_tensor(image_sizes, dtype=boxes.dtype, device=device)[image_ids]
        boxes = clip_boxes(boxes, sizes[:, 0], sizes[:, 1])

        wh = boxes[:, 2:] - boxes[:, :2]
        keep = torch.nonzero((wh >= self.min_box_size).all(dim=1)).squeeze(1)
        boxes, scores, labels, image_ids = boxes[keep], scores[keep], labels[keep], image_ids[keep]
        num_classes = pred_class_logits.shape[1]  # K + 1
        per_image = batched_nms_topk(
            boxes, scores, image_ids * num_classes + labels, image_ids,
            nms_thresh=self.nms_thresh, topk=self.detections_per_img, num_images=num_images,
        )
        return [{"boxes": boxes[k], "scores": scores[k], "labels": labels[k]} for k in per_image]
