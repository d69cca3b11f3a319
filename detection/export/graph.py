"""The inference path of :class:`~detection.FasterRCNN` as one traceable graph, for ONNX export.

Shape shorthand: ``N`` images, ``H, W`` the padded batch, ``L`` RPN levels, ``T`` top anchors
kept per image before NMS, ``P`` proposals over the batch, ``K`` foreground classes, ``C``
(RoI, class) candidates above the score threshold, ``D`` detections over the batch.

:class:`DetectorGraph` wraps a model (its modules and weights, shared, not copied) and computes
the same detections as ``model.eval()(images)``, operation for operation, with the batch as flat
tensors instead of per-image lists, so that every shape (batch size, image height and width, the
number of proposals and detections) stays symbolic when traced:

- inputs: ``images`` uint8 ``(N, 3, H, W)`` RGB 0..255, each image at the top-left and the rest
  of the batch anything (it is zeroed after normalisation, as the model's own padding), with
  ``H, W`` multiples of ``model.size_divisibility``; ``image_sizes`` int64 ``(N, 2)`` each
  image's ``(h, w)``;
- outputs: ``boxes`` float32 ``(D, 4)`` xyxy in the input image's pixels, ``scores`` ``(D,)``,
  ``labels`` int64 ``(D,)`` in ``1..K``, ``batch_index`` int64 ``(D,)``: the detections of
  image 0 first, each image's in decreasing score order (the model's order); for a model with a
  mask head also ``masks`` float32 ``(D, 1, M, M)``, each detection's mask probabilities over its
  box (the model's ``masks``; pasting into the image happens outside the graph,
  ``detection.masks.paste_masks``).

What differs from the model's own code, and why:

- anchors are computed from the feature maps' (symbolic) shapes, not cached per Python size;
- NMS within groups (image and level in the RPN, image and class in the RoI heads) is one
  ``nms`` call on boxes offset by ``group * (largest image side + 1)`` (torchvision's
  "coordinate trick"); torchvision's ``batched_nms`` loops over the groups when there are more
  than 1000 boxes, which a trace would unroll. Offset coordinates round differently, so a box
  whose IoU is within float rounding of the threshold may be kept by one and not the other;
- the per-image top-k after NMS ranks each box within its image by a cumulative count, and
  multi-level RoI pooling concatenates the levels' RoIs in level order (no Python branch on
  whether a level has RoIs).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.ops import nms, roi_align, roi_pool

from ..faster_rcnn import FasterRCNN
from ..poolers import RoIPooler, assign_fpn_levels
from ..rpn import clip_boxes

__all__ = ["DetectorGraph", "INPUT_NAMES", "OUTPUT_NAMES", "output_names"]

INPUT_NAMES = ("images", "image_sizes")
OUTPUT_NAMES = ("boxes", "scores", "labels", "batch_index")


def output_names(model: FasterRCNN) -> tuple[str, ...]:
    """The graph's outputs: ``OUTPUT_NAMES``, and ``masks`` for a model with a mask head."""
    return OUTPUT_NAMES + (("masks",) if model.roi_heads.mask_head is not None else ())


def _top_count(available: Tensor | int, k: int) -> Tensor | int:
    """``min(available, k)``, kept symbolic when ``available`` is a traced size."""
    if isinstance(available, Tensor):
        return torch.clamp(available, max=k)
    return min(available, k)


def nms_in_groups(boxes: Tensor, scores: Tensor, groups: Tensor, iou_threshold: float,
                  max_side: Tensor) -> Tensor:
    """NMS within each group (boxes (M, 4) inside ``[0, max_side]``); indices by score."""
    offsets = groups.to(boxes.dtype) * (max_side + 1)  # groups never overlap
    return nms(boxes + offsets[:, None], scores, iou_threshold)


def topk_per_image(keep: Tensor, image_ids: Tensor, topk: int, num_images: Tensor | int
                   ) -> Tensor:
    """The first ``topk`` of ``keep`` (indices in decreasing score order) per image, ordered
    by image, then score: as ``detection.rpn.batched_nms_topk`` without a per-image split."""
    img = image_ids[keep]
    images = torch.arange(num_images, device=keep.device)
    onehot = (img[:, None] == images[None, :]).to(torch.int64)  # (M, N)
    rank = (onehot.cumsum(0) * onehot).sum(1) - 1  # rank within its image, by score
    selected = rank < topk
    keep, img, rank, onehot = keep[selected], img[selected], rank[selected], onehot[selected]
    counts = onehot.sum(0)
    starts = counts.cumsum(0) - counts
    position = starts[img] + rank  # where each kept box goes in image-major order
    return torch.zeros_like(keep).scatter(0, position, keep)


def grid_anchors(cell: Tensor, feature: Tensor, padded_hw: tuple) -> Tensor:
    """Anchors (Hi*Wi*A, 4) of one level: ``AnchorGenerator._grid_anchors`` on symbolic sizes
    (stride ``padded // map size``, integer division, as torchvision)."""
    grid_h, grid_w = feature.shape[-2], feature.shape[-1]
    stride_h, stride_w = padded_hw[0] // grid_h, padded_hw[1] // grid_w
    shifts_x = torch.arange(grid_w, device=feature.device) * stride_w
    shifts_y = torch.arange(grid_h, device=feature.device) * stride_h
    shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
    shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
    shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1).to(cell.dtype)
    # (Hi*Wi, 1, 4) + (1, A, 4) -> (Hi*Wi*A, 4)
    return (shifts[:, None, :] + cell.to(feature.device)[None, :, :]).reshape(-1, 4)


class DetectorGraph(nn.Module):
    """``forward(images, image_sizes) -> (boxes, scores, labels, batch_index)``; see above."""

    def __init__(self, model: FasterRCNN) -> None:
        super().__init__()
        self.model = model
        self.eval()  # inference only: the model's training branches are never traced

    def forward(self, images: Tensor, image_sizes: Tensor) -> tuple[Tensor, ...]:
        batch = self.normalize(images, image_sizes)
        features = self.model.backbone(batch)
        proposals, proposal_images = self.propose(features, image_sizes, batch.shape[-2:])
        detections = self.detect(features, proposals, proposal_images, image_sizes)
        if self.model.roi_heads.mask_head is None:
            return detections
        boxes, _, labels, image_ids = detections
        return (*detections, self.segment(features, boxes, labels, image_ids))

    def normalize(self, images: Tensor, image_sizes: Tensor) -> Tensor:
        """``(x - mean) / std`` inside each image, 0 in its padding: ``model.preprocess``."""
        m = self.model
        x = (images.to(m.pixel_mean.dtype) - m.pixel_mean) / m.pixel_std
        rows = torch.arange(x.shape[-2], device=x.device)
        cols = torch.arange(x.shape[-1], device=x.device)
        inside = ((rows[None, :, None] < image_sizes[:, 0, None, None])
                  & (cols[None, None, :] < image_sizes[:, 1, None, None]))  # (N, H, W)
        return torch.where(inside[:, None], x, torch.zeros_like(x))

    @torch.no_grad()
    def propose(self, features: dict[str, Tensor], image_sizes: Tensor, padded_hw: tuple
                ) -> tuple[Tensor, Tensor]:
        """Proposals (P, 4) and their image (P,): ``RPN.find_proposals`` over flat tensors."""
        rpn = self.model.rpn
        maps = [features[f] for f in rpn.in_features]
        logits, deltas = rpn.head(maps)
        n = maps[0].shape[0]
        boxes, scores, levels = [], [], []
        for level, (cell, fmap, lg, dl) in enumerate(
                zip(rpn.anchor_generator.cell_anchors, maps, logits, deltas)):
            anchors = grid_anchors(cell, fmap, padded_hw)
            lg = lg.permute(0, 2, 3, 1).reshape(n, -1)  # (N, A, Hi, Wi) -> (N, Hi*Wi*A)
            # (N, A*4, Hi, Wi) -> (N, A, 4, Hi, Wi) -> (N, Hi, Wi, A, 4) -> (N, Hi*Wi*A, 4)
            dl = dl.reshape(n, -1, 4, dl.shape[-2], dl.shape[-1]).permute(0, 3, 4, 1, 2)
            dl = dl.reshape(n, -1, 4)
            k = _top_count(lg.shape[1], rpn.pre_nms_topk[False])
            top_logits, idx = lg.float().topk(k, dim=1)  # (N, k)
            top_deltas = dl.gather(1, idx[:, :, None].expand(-1, -1, 4))  # (N, k, 4)
            decoded = rpn.box_coder.decode(top_deltas.reshape(-1, 4), anchors[idx.reshape(-1)])
            boxes.append(decoded.reshape(n, -1, 4))
            scores.append(top_logits)
            levels.append(torch.full_like(idx, level))
        sizes = image_sizes.to(torch.float32)
        boxes_t = clip_boxes(torch.cat(boxes, 1), sizes[:, 0:1], sizes[:, 1:2])  # (N, T, 4)
        scores_t = torch.cat(scores, 1).sigmoid()  # (N, T)
        image_ids = torch.arange(n, device=scores_t.device)[:, None].expand_as(scores_t)
        groups = image_ids * len(maps) + torch.cat(levels, 1)
        # (N, T, ...) -> (N*T, ...)
        boxes_t, scores_t = boxes_t.reshape(-1, 4), scores_t.reshape(-1)
        image_ids, groups = image_ids.reshape(-1), groups.reshape(-1)
        wh = boxes_t[:, 2:] - boxes_t[:, :2]
        valid = ((wh[:, 0] >= rpn.min_box_size) & (wh[:, 1] >= rpn.min_box_size)
                 & (scores_t >= rpn.score_thresh))
        valid = torch.nonzero(valid).squeeze(1)
        boxes_t, scores_t = boxes_t[valid], scores_t[valid]
        image_ids, groups = image_ids[valid], groups[valid]
        keep = nms_in_groups(boxes_t, scores_t, groups, rpn.nms_thresh, sizes.max())
        keep = topk_per_image(keep, image_ids, rpn.post_nms_topk[False], n)
        return boxes_t[keep], image_ids[keep]

    def pool(self, features: dict[str, Tensor], boxes: Tensor, image_ids: Tensor
             ) -> tuple[Tensor, Tensor, Tensor]:
        """Pooled features (P, C, S, S) of the RoIs, with the RoIs and images reordered as the
        rows (grouped by FPN level with several levels; unchanged with one)."""
        heads = self.model.roi_heads
        pooler = heads.pooler
        maps = [features[f] for f in heads.in_features]
        if len(maps) == 1:
            return self._pool(maps[0], boxes, image_ids, pooler.scales[0]), boxes, image_ids
        levels = assign_fpn_levels(boxes, min_level=pooler.min_level, max_level=pooler.max_level)
        order = torch.cat([torch.nonzero(levels == lv).squeeze(1) for lv in range(len(maps))])
        boxes, image_ids, levels = boxes[order], image_ids[order], levels[order]
        pooled = [self._pool(fmap, boxes[levels == lv], image_ids[levels == lv], scale)
                  for lv, (fmap, scale) in enumerate(zip(maps, pooler.scales))]
        return torch.cat(pooled), boxes, image_ids

    def _pool(self, feature: Tensor, boxes: Tensor, image_ids: Tensor, scale: float,
              pooler: RoIPooler | None = None) -> Tensor:
        pooler = pooler or self.model.roi_heads.pooler
        rois = torch.cat([image_ids[:, None].to(boxes.dtype), boxes], dim=1)  # (R, 5)
        if pooler.pooler_type == "ROIPool":
            return roi_pool(feature, rois, pooler.output_size, scale)
        return roi_align(feature, rois, pooler.output_size, scale, pooler.sampling_ratio,
                         aligned=pooler.pooler_type == "ROIAlignV2")  # V2: Detectron2's

    def pool_in_order(self, pooler: RoIPooler, features: dict[str, Tensor], boxes: Tensor,
                      image_ids: Tensor) -> Tensor:
        """Pooled features (D, C, S, S) of ``boxes`` (D, 4) in their own order (the levels'
        rows put back with the inverse of the level order)."""
        maps = [features[f] for f in self.model.roi_heads.in_features]
        if len(maps) == 1:
            return self._pool(maps[0], boxes, image_ids, pooler.scales[0], pooler)
        levels = assign_fpn_levels(boxes, min_level=pooler.min_level, max_level=pooler.max_level)
        order = torch.cat([torch.nonzero(levels == lv).squeeze(1) for lv in range(len(maps))])
        pooled = torch.cat([self._pool(fmap, boxes[levels == lv], image_ids[levels == lv],
                                       scale, pooler)
                            for lv, (fmap, scale) in enumerate(zip(maps, pooler.scales))])
        position = torch.zeros_like(order).scatter(0, order, torch.arange(
            order.shape[0], device=order.device))  # row of detection d in `pooled`
        return pooled[position]

    @torch.no_grad()
    def segment(self, features: dict[str, Tensor], boxes: Tensor, labels: Tensor,
                image_ids: Tensor) -> Tensor:
        """Masks (D, 1, M, M) of the detections: ``RoIHeads.predict_masks`` over flat
        tensors."""
        heads = self.model.roi_heads
        if heads.mask_pooler is None:  # C4: res5 on the detections' pooled res4 maps
            x = heads.box_head.features(self.pool_in_order(heads.pooler, features, boxes,
                                                           image_ids))
        else:
            x = self.pool_in_order(heads.mask_pooler, features, boxes, image_ids)
        return heads.mask_head.probabilities(heads.mask_head(x), labels)

    @torch.no_grad()
    def detect(self, features: dict[str, Tensor], proposals: Tensor, proposal_images: Tensor,
               image_sizes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Detections: ``RoIHeads.predict`` then ``RoIHeads.postprocess`` over flat tensors."""
        heads = self.model.roi_heads
        pooled, proposals, proposal_images = self.pool(features, proposals, proposal_images)
        pred_class_logits, pred_deltas = heads.box_predictor(heads.box_head(pooled))
        num_classes = pred_class_logits.shape[1]  # K + 1
        scores = F.softmax(pred_class_logits.float(), dim=-1)[:, 1:]  # (P, K)
        # candidates in (RoI, class) row-major order, as the model takes them
        flat = torch.nonzero(scores.reshape(-1) > heads.score_thresh).squeeze(1)  # (C,)
        roi_idx, labels = flat // (num_classes - 1), flat % (num_classes - 1) + 1
        scores = scores.reshape(-1)[flat]
        # (P, (K+1)*4) -> (P*(K+1), 4), each candidate's own class deltas -> (C, 4)
        deltas = pred_deltas.reshape(-1, 4)[roi_idx * num_classes + labels]
        boxes = heads.box_coder.decode(deltas, proposals[roi_idx])
        image_ids = proposal_images[roi_idx]
        sizes = image_sizes.to(torch.float32)
        boxes = clip_boxes(boxes, sizes[image_ids, 0], sizes[image_ids, 1])
        wh = boxes[:, 2:] - boxes[:, :2]
        valid = torch.nonzero((wh[:, 0] >= heads.min_box_size)
                              & (wh[:, 1] >= heads.min_box_size)).squeeze(1)
        boxes, scores, labels, image_ids = (boxes[valid], scores[valid], labels[valid],
                                            image_ids[valid])
        keep = nms_in_groups(boxes, scores, image_ids * num_classes + labels, heads.nms_thresh,
                             sizes.max())
        keep = topk_per_image(keep, image_ids, heads.detections_per_img, image_sizes.shape[0])
        return boxes[keep], scores[keep], labels[keep], image_ids[keep]
