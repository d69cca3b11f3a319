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

Masks (Mask R-CNN, with a ``mask_head``): in training the foreground RoIs among the sampled ones
are pooled by ``mask_pooler`` (or, without one, the C4 variant: their ``res5`` maps of the box
head are reused) and ``loss_mask`` is the mask head's (``detection/mask_head.py``), with targets
read from each RoI's matched ground truth (``targets[i]["masks"]``, ``InstanceMasks``); at
inference the mask head runs on the final detections and adds ``masks`` (Di, 1, M, M)
probabilities of each detection's class to the outputs.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.ops import box_iou

from .box_coder import BoxCoder
from .box_heads import BoxPredictor
from .mask_head import MaskHead
from .masks import InstanceMasks
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
        mask_head: MaskHead | None = None, mask_pooler: RoIPooler | None = None,
    ) -> None:
        super().__init__()
        if mask_head is not None and mask_pooler is None and not hasattr(box_head, "features"):
            raise ValueError("a mask head without a mask_pooler runs on the box head's maps: "
                             "the box head needs a features() method (Res5Head)")
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
        self.mask_head = mask_head
        self.mask_pooler = mask_pooler

    def forward(
        self, features: dict[str, Tensor], proposals: list[Tensor],
        image_sizes: Sequence[tuple[int, int]], targets: Sequence[dict[str, Tensor]] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        """Detections per image (inference) or ``{loss_cls, loss_box[, loss_mask]}``
        (training)."""
        if self.training:
            if targets is None:
                raise ValueError("the RoI heads need targets in training mode")
            proposals, gt_labels, target_deltas, gt_index = self._label_and_sample(
                proposals, [t["boxes"] for t in targets], [t["labels"] for t in targets]
            )
        if self.mask_head is not None and self.mask_pooler is None and self.training:
            # C4: the res5 maps of the sampled RoIs are the mask head's input too
            maps = self.box_head.features(self._pool(features, proposals))  # (R, C5, h, w)
            pred_class_logits, pred_deltas = self.box_predictor(maps.mean(dim=(2, 3)))
        else:
            maps = None
            pred_class_logits, pred_deltas = self.predict(features, proposals)
        if self.training:
            losses = self.losses(pred_class_logits, pred_deltas, gt_labels, target_deltas)
            if self.mask_head is not None:
                losses.update(self.mask_losses(features, proposals, gt_labels, gt_index,
                                               [t["masks"] for t in targets], maps))
            return [], losses
        detections = self.postprocess(pred_class_logits, pred_deltas, proposals, image_sizes)
        if self.mask_head is not None:
            self.predict_masks(features, detections)
        return detections, {}

    def _pool(self, features: dict[str, Tensor], boxes: list[Tensor]) -> Tensor:
        return self.pooler([features[f] for f in self.in_features], boxes)  # (R, C, S, S)

    def predict(self, features: dict[str, Tensor], boxes: list[Tensor]) -> tuple[Tensor, Tensor]:
        """RoIs N x (Pi, 4) -> pred_class_logits (R, K+1), pred_deltas (R, (K+1)*4)."""
        return self.box_predictor(self.box_head(self._pool(features, boxes)))

    def label_and_sample_proposals(
        self, proposals: list[Tensor], gt_boxes: list[Tensor], gt_labels: list[Tensor]
    ) -> tuple[list[Tensor], Tensor, Tensor]:
        """Sampled RoIs N x (Si, 4), their gt_labels (R,), and target deltas (R_fg, 4)."""
        return self._label_and_sample(proposals, gt_boxes, gt_labels)[:3]

    @torch.no_grad()
    def _label_and_sample(
        self, proposals: list[Tensor], gt_boxes: list[Tensor], gt_labels: list[Tensor]
    ) -> tuple[list[Tensor], Tensor, Tensor, list[Tensor]]:
        """:meth:`label_and_sample_proposals`, and N x (Fi,) the index of each foreground RoI's
        ground truth in its image (in the RoIs' order)."""
        all_boxes, all_labels, all_matched, all_index = [], [], [], []
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
            all_index.append(idx)

        # (N, max Pi) labels, padded with -1 (ignored) so all images are sampled at once
        padded = nn.utils.rnn.pad_sequence(all_labels, batch_first=True, padding_value=-1)
        pos, neg = self.sampler(padded)
        sampled = pos | neg
        rois, labels, targets, gt_index = [], [], [], []
        for i, (boxes, label, matched) in enumerate(zip(all_boxes, all_labels, all_matched)):
            keep = torch.nonzero(sampled[i, : boxes.shape[0]]).squeeze(1)
            rois.append(boxes[keep])
            labels.append(label[keep])
            fg = keep[label[keep] > 0]
            gt_index.append(all_index[i][fg])
            if fg.numel():
                targets.append(self.box_coder.encode(matched[fg], boxes[fg]))
        targets_t = torch.cat(targets) if targets else all_boxes[0].new_zeros((0, 4))
        return rois, torch.cat(labels), targets_t, gt_index

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

    def mask_losses(
        self, features: dict[str, Tensor], rois: list[Tensor], gt_labels: Tensor,
        gt_index: list[Tensor], gt_masks: Sequence[InstanceMasks], maps: Tensor | None,
    ) -> dict[str, Tensor]:
        """``loss_mask`` over the foreground RoIs of the sampled ``rois`` N x (Si, 4)
        (``gt_labels`` (R,) > 0); ``maps`` (R, C5, h, w): the C4 box head's, else None."""
        fg = gt_labels > 0
        per_image = fg.split([len(r) for r in rois])
        fg_rois = [r[f] for r, f in zip(rois, per_image)]  # N x (Fi, 4)
        if maps is not None:
            x = maps[fg]  # (F, C5, h, w)
        else:
            x = self.mask_pooler([features[f] for f in self.in_features], fg_rois)
        mask_logits = self.mask_head(x)  # (F, P, M, M)
        size = mask_logits.shape[-1]
        targets = [m.crop_and_resize(r, i, size) for m, r, i in zip(gt_masks, fg_rois,
                                                                     gt_index)]
        return self.mask_head.losses(mask_logits, gt_labels[fg], torch.cat(targets))

    def predict_masks(self, features: dict[str, Tensor], detections: list[dict[str, Tensor]]
                      ) -> None:
        """Add ``masks`` (Di, 1, M, M) to each image's detections (in place)."""
        boxes = [d["boxes"] for d in detections]
        maps = [features[f] for f in self.in_features]
        if self.mask_pooler is None:  # C4: res5 on the detections' pooled res4 maps
            x = self.box_head.features(self.pooler(maps, boxes))
        else:
            x = self.mask_pooler(maps, boxes)
        labels = torch.cat([d["labels"] for d in detections])
        probabilities = self.mask_head.probabilities(self.mask_head(x), labels)
        for det, masks in zip(detections, probabilities.split([len(b) for b in boxes])):
            det["masks"] = masks

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
