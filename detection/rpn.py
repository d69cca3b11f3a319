"""Region Proposal Network (Ren et al. 2015): objectness and box deltas for every anchor.

Shape shorthand: ``N`` images, ``L`` levels, ``A`` anchors per location, ``Hi, Wi`` a level's map
size, ``M = sum_i Hi*Wi*A`` anchors per image, ``T`` top-scoring anchors kept per image before NMS.

Naming: ``pred_objectness_logits`` (before sigmoid), ``pred_deltas`` (encoded offsets w.r.t. the
anchors), ``gt_labels`` per anchor (1 object, 0 background, -1 ignored), ``gt_boxes`` the matched
ground-truth box per anchor.

Proposals (training and inference, never differentiated), per image and level:
  1. keep the ``pre_nms_topk`` anchors of highest objectness;
  2. decode their deltas, clip to the image, drop boxes with a side < ``min_box_size`` and those
     with ``sigmoid(logit) < score_thresh``;
  3. NMS at ``nms_thresh`` separately per level; keep the ``post_nms_topk`` best of the image.

Losses over ``batch_size_per_image`` anchors sampled per image (``positive_fraction`` positive)::

    loss_rpn_cls = sum_sampled BCE(logit, gt_label) / num_sampled
    loss_rpn_box = sum_positive smooth_l1(pred_deltas - encode(gt_box, anchor); beta) / num_sampled

as torchvision's ``RegionProposalNetwork`` (the box loss is normalised by all sampled anchors).
``smooth_l1_beta = 0`` is exactly the L1 loss (``F.smooth_l1_loss`` computes ``l1_loss`` then).

With ``ignore_cross_boundary`` (Ren et al. 2015, section 3.3; py-faster-rcnn's
``anchor_target_layer``), anchors not inside the image, ``x1 >= 0, y1 >= 0, x2 <= w, y2 <= h``,
take no part in training: they are matched to no ground truth, cannot be a box's best anchor, and
are labelled -1 (ignored). Proposals still come from every anchor.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.ops import batched_nms, box_iou

from backbones.layers import Conv2d

from .anchors import AnchorGenerator
from .box_coder import BoxCoder
from .matcher import Matcher
from .roi_sampling import BalancedSampler

__all__ = ["RPNHead", "RPN", "batched_nms_topk"]


class RPNHead(nn.Module):
    """Shared 3x3 conv + ReLU, then 1x1 convs for ``A`` logits and ``A * 4`` deltas per level."""

    def __init__(self, *, in_channels: int, num_anchors: int) -> None:
        super().__init__()
        self.conv = Conv2d(in_channels, in_channels, kernel_size=3, padding=1)
        self.cls_logits = nn.Conv2d(in_channels, num_anchors, kernel_size=1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, kernel_size=1)
        for conv in (self.conv, self.cls_logits, self.bbox_pred):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, features: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """L x (N, C, Hi, Wi) -> logits L x (N, A, Hi, Wi), deltas L x (N, A*4, Hi, Wi)."""
        logits, deltas = [], []
        for x in features:
            t = F.relu(self.conv(x), inplace=True)
            logits.append(self.cls_logits(t))
            deltas.append(self.bbox_pred(t))
        return logits, deltas


def batched_nms_topk(
    boxes: Tensor, scores: Tensor, groups: Tensor, image_ids: Tensor, *, nms_thresh: float,
    topk: int, num_images: int,
) -> list[Tensor]:
    """NMS within each group over the whole batch, then the ``topk`` best of each image.

    ``groups`` must not be shared between images. Returns, per image, indices into ``boxes``
    in decreasing score order.
    """
    keep = batched_nms(boxes, scores, groups, nms_thresh)  # decreasing score
    img = image_ids[keep]
    img, order = torch.sort(img, stable=True)  # group by image, score order kept inside
    keep = keep[order]
    counts = torch.bincount(img, minlength=num_images)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(keep.numel(), device=keep.device) - starts[img]
    keep = keep[rank < topk]
    return list(keep.split(counts.clamp(max=topk).tolist()))


def clip_boxes(boxes: Tensor, heights: Tensor, widths: Tensor) -> Tensor:
    """Clip boxes (..., 4) to ``[0, w] x [0, h]``; ``heights``/``widths`` broadcast to (...)."""
    x = boxes[..., 0::2].clamp(min=0).minimum(widths[..., None])
    y = boxes[..., 1::2].clamp(min=0).minimum(heights[..., None])
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


class RPN(nn.Module):
    """Anchors + head + proposal selection + losses; ``forward`` -> (proposals, losses)."""

    def __init__(
        self, *, in_features: Sequence[str], head: RPNHead, anchor_generator: AnchorGenerator,
        box_coder: BoxCoder, matcher: Matcher, sampler: BalancedSampler,
        pre_nms_topk_train: int, pre_nms_topk_test: int, post_nms_topk_train: int,
        post_nms_topk_test: int, nms_thresh: float, min_box_size: float = 1e-3,
        score_thresh: float = 0.0, smooth_l1_beta: float = 1.0 / 9.0,
        ignore_cross_boundary: bool = False,
    ) -> None:
        super().__init__()
        if len(in_features) != len(anchor_generator.cell_anchors):
            raise ValueError(
                f"RPN has {len(in_features)} in_features {list(in_features)} but the anchor "
                f"generator has {len(anchor_generator.cell_anchors)} levels"
            )
        self.in_features = list(in_features)
        self.head = head
        self.anchor_generator = anchor_generator
        self.box_coder = box_coder
        self.matcher = matcher
        self.sampler = sampler
        self.pre_nms_topk = {True: pre_nms_topk_train, False: pre_nms_topk_test}
        self.post_nms_topk = {True: post_nms_topk_train, False: post_nms_topk_test}
        self.nms_thresh = nms_thresh
        self.min_box_size = min_box_size
        self.score_thresh = score_thresh
        self.smooth_l1_beta = smooth_l1_beta
        self.ignore_cross_boundary = ignore_cross_boundary

    def forward(
        self, features: dict[str, Tensor], image_sizes: Sequence[tuple[int, int]],
        padded_size: tuple[int, int], gt_boxes: Sequence[Tensor] | None = None,
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        """Proposals N x (Pi, 4) in input pixels, and the losses when training."""
        maps = [features[f] for f in self.in_features]
        logits, deltas = self.head(maps)
        # float32 anchors (float64 with float64 maps) even when the maps are bf16/fp16 (AMP)
        dtype = torch.promote_types(maps[0].dtype, torch.float32)
        anchors = self.anchor_generator(
            [m.shape[-2:] for m in maps], padded_size, device=maps[0].device, dtype=dtype
        )
        n = maps[0].shape[0]
        # (N, A, Hi, Wi) -> (N, Hi*Wi*A)
        pred_objectness_logits = [x.permute(0, 2, 3, 1).flatten(1) for x in logits]
        # (N, A*4, Hi, Wi) -> (N, A, 4, Hi, Wi) -> (N, Hi, Wi, A, 4) -> (N, Hi*Wi*A, 4)
        pred_deltas = [
            x.view(n, -1, 4, x.shape[-2], x.shape[-1]).permute(0, 3, 4, 1, 2).flatten(1, 3)
            for x in deltas
        ]
        proposals = self.find_proposals(anchors, pred_objectness_logits, pred_deltas, image_sizes)
        if not self.training:
            return proposals, {}
        if gt_boxes is None:
            raise ValueError("the RPN needs gt_boxes in training mode")
        all_anchors = torch.cat(anchors)
        gt_labels, matched_gt_boxes = self.label_anchors(all_anchors, gt_boxes, image_sizes)
        losses = self.losses(
            all_anchors, torch.cat(pred_objectness_logits, 1), torch.cat(pred_deltas, 1),
            gt_labels, matched_gt_boxes,
        )
        return proposals, losses

    @torch.no_grad()
    def find_proposals(
        self, anchors: list[Tensor], pred_objectness_logits: list[Tensor],
        pred_deltas: list[Tensor], image_sizes: Sequence[tuple[int, int]],
    ) -> list[Tensor]:
        """Top-k per level, decode, clip, filter, per-level NMS, top-k per image (batched)."""
        n = pred_objectness_logits[0].shape[0]
        device = anchors[0].device
        batch_idx = torch.arange(n, device=device)[:, None]
        boxes, logits, levels = [], [], []
        for level, (anc, lg, dl) in enumerate(zip(anchors, pred_objectness_logits, pred_deltas)):
            k = min(self.pre_nms_topk[self.training], lg.shape[1])
            top_logits, idx = lg.to(anc.dtype).topk(k, dim=1)  # (N, k)
            # (N, k, 4) -> (N*k, 4) for decoding, back to (N, k, 4)
            top_boxes = self.box_coder.decode(dl[batch_idx, idx].reshape(-1, 4), anc[idx.flatten()])
            boxes.append(top_boxes.view(n, k, 4))
            logits.append(top_logits)
            levels.append(torch.full((k,), level, dtype=torch.int64, device=device))
        boxes_t = torch.cat(boxes, dim=1)  # (N, T, 4)
        scores = torch.cat(logits, dim=1).sigmoid()  # (N, T)
        sizes = torch.as_tensor(image_sizes, dtype=boxes_t.dtype, device=device)  # (N, 2)
        boxes_t = clip_boxes(boxes_t, sizes[:, 0:1], sizes[:, 1:2])

        num_levels = len(anchors)
        image_ids = batch_idx.expand_as(scores).reshape(-1)  # (N, T) -> (N*T,)
        groups = (batch_idx * num_levels + torch.cat(levels)[None, :]).reshape(-1)
        boxes_t, scores = boxes_t.reshape(-1, 4), scores.reshape(-1)  # (N*T, 4), (N*T,)
        wh = boxes_t[:, 2:] - boxes_t[:, :2]
        keep = (wh >= self.min_box_size).all(dim=1) & (scores >= self.score_thresh)
        keep = torch.nonzero(keep).squeeze(1)
        boxes_t, scores = boxes_t[keep], scores[keep]
        groups, image_ids = groups[keep], image_ids[keep]
        per_image = batched_nms_topk(
            boxes_t, scores, groups, image_ids, nms_thresh=self.nms_thresh,
            topk=self.post_nms_topk[self.training], num_images=n,
        )
        return [boxes_t[i] for i in per_image]

    @torch.no_grad()
    def label_anchors(
        self, anchors: Tensor, gt_boxes: Sequence[Tensor],
        image_sizes: Sequence[tuple[int, int]] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """gt_labels (N, M) in {1, 0, -1} and the matched gt box per anchor (N, M, 4).

        ``image_sizes`` (h, w) are needed with ``ignore_cross_boundary``.
        """
        if self.ignore_cross_boundary and image_sizes is None:
            raise ValueError("ignore_cross_boundary needs the image_sizes")
        labels, matched = [], []
        for i, gt in enumerate(gt_boxes):
            outside = ~self._inside(anchors, image_sizes[i]) if self.ignore_cross_boundary \
                else None
            if gt.numel() == 0:  # background image: every anchor is negative
                label = anchors.new_zeros(anchors.shape[0], dtype=torch.int64)
                match_gt = torch.zeros_like(anchors)
            else:
                iou = box_iou(gt, anchors)  # (G, M)
                if outside is not None:
                    iou[:, outside] = -1.0  # below every threshold and every gt's best IoU
                match = self.matcher(iou)  # (M,)
                label = (match >= 0).to(torch.int64)
                label[match == Matcher.BETWEEN_THRESHOLDS] = -1
                match_gt = gt[match.clamp(min=0)]
            if outside is not None:
                label[outside] = -1
            labels.append(label)
            matched.append(match_gt)
        return torch.stack(labels), torch.stack(matched)

    @staticmethod
    def _inside(anchors: Tensor, size: tuple[int, int]) -> Tensor:
        """(M,) bool: the anchor lies within the (h, w) image (py-faster-rcnn's allowed border 0;
        its inclusive ``x2 < w`` is ``x2 <= w`` in our continuous coordinates)."""
        h, w = size
        return ((anchors[:, 0] >= 0) & (anchors[:, 1] >= 0) & (anchors[:, 2] <= w)
                & (anchors[:, 3] <= h))

    def losses(
        self, anchors: Tensor, pred_objectness_logits: Tensor, pred_deltas: Tensor,
        gt_labels: Tensor, matched_gt_boxes: Tensor,
    ) -> dict[str, Tensor]:
        """``loss_rpn_cls`` and ``loss_rpn_box`` from (N, M) logits and (N, M, 4) deltas."""
        pos, neg = self.sampler(gt_labels)  # (N, M) each
        sampled = pos | neg
        num_sampled = max(int(sampled.sum()), 1)
        loss_cls = F.binary_cross_entropy_with_logits(
            pred_objectness_logits[sampled], pos[sampled].to(pred_objectness_logits.dtype),
            reduction="sum",
        ) / num_sampled
        pos_img, pos_anchor = torch.nonzero(pos, as_tuple=True)
        with torch.no_grad():
            target_deltas = self.box_coder.encode(
                matched_gt_boxes[pos_img, pos_anchor], anchors[pos_anchor]
            )
        loss_box = F.smooth_l1_loss(
            pred_deltas[pos_img, pos_anchor], target_deltas, beta=self.smooth_l1_beta,
            reduction="sum",
        ) / num_sampled
        return {"loss_rpn_cls": loss_cls, "loss_rpn_box": loss_box}
