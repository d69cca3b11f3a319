"""A tiny but real training config on the synthetic shapes (shared by the tools' tests)."""
from __future__ import annotations

from pathlib import Path

import yaml


def _merge(base: dict, changes: dict) -> dict:
    return {**base, **{k: _merge(base[k], v) if isinstance(v, dict) and isinstance(
        base.get(k), dict) else v for k, v in changes.items()}}


def tiny_config(folder: Path, data, changes: dict | None = None) -> Path:
    """R-18-FPN with 32 channels on 64 px images: a real model, a second per few iterations.
    ``changes``: nested keys merged into the config (e.g. ``{"solver": {"max_iter": 6}}``)."""
    cfg = {
        "model": {"backbone": {"name": "resnet18", "weights": None, "norm": "BN",
                               "freeze_at": 0},
                  "fpn": {"out_channels": 32},
                  "anchor_generator": {"sizes": [[16], [32], [64], [128], [256]],
                                       "aspect_ratios": [[1.0]]},
                  "rpn": {"pre_nms_topk_train": 200, "post_nms_topk_train": 64,
                          "pre_nms_topk_test": 100, "post_nms_topk_test": 32,
                          "batch_size_per_image": 32},
                  "roi_heads": {"fc_dim": 64, "batch_size_per_image": 16,
                                "detections_per_img": 20, "score_thresh": 0.0}},
        "data": {"train": {"images": data.train_images, "annotations": data.train_annotations},
                 "test": {"images": data.val_images, "annotations": data.val_annotations},
                 "input": {"min_size_train": [56, 64], "max_size_train": 96,
                           "min_size_test": 64, "max_size_test": 96, "flip_prob": 0.5},
                 "num_workers": 0},
        "solver": {"max_iter": 4, "base_lr": 0.01, "ims_per_batch": 2, "steps": [3],
                   "warmup_iters": 2, "checkpoint_period": 2},
        "test": {"eval_period": 2, "vis_images": 2, "vis_score_thresh": 0.0},
        "output_dir": str(folder / "out"), "device": "cpu", "log_period": 1,
    }
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(_merge(cfg, changes or {})))
    return path
