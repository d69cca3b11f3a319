#!/usr/bin/env python
"""Evaluate a checkpoint on the config's test set (COCO or VOC mAP); write eval.json and the
results.

    python tools/eval.py --weights output/quickstart/best.pth      # the config in the checkpoint
    python tools/eval.py --config configs/quickstart.yaml --weights output/quickstart/last.pth
    torchrun --nproc_per_node 8 tools/eval.py --config configs/coco/faster_rcnn_R_50_FPN_1x.yaml \\
        --weights output/coco/faster_rcnn_R_50_FPN_1x/best.pth --output output/eval_r50

Without ``--config`` the config stored in the checkpoint is used (``--set`` still applies).
Output: ``eval.json`` and ``coco_results.json`` in ``--output``; by default in a folder beside
the weights named after them and the test set, ``<weights folder>/eval_<weights>_<test json>/``
(``output/quickstart/eval_best_val/``), so the training run's own ``eval.json`` is never
overwritten.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no PyPI version check (2 s offline)

from detection.build import build_model  # noqa: E402
from detection.cli import ArgumentParser, tool_main  # noqa: E402
from detection.config import Config, checkpoint_config, load_config  # noqa: E402
from detection.engine import distributed as du  # noqa: E402
from detection.engine.checkpoint import load_checkpoint, load_model_weights  # noqa: E402
from detection.engine.runlog import setup_logger, write_eval_json  # noqa: E402
from detection.evaluation import Relabelled, headline  # noqa: E402
from detection.evaluation.inference import inference_on_dataset  # noqa: E402
from detection.setup import (build_evaluator, build_test_dataset,  # noqa: E402
                             build_test_loader, dataset_source, prepare_data, voc_splits)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", help="YAML config file (default: the one in the checkpoint)")
    p.add_argument("--weights", required=True, help="checkpoint (last.pth, best.pth, ...)")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", action="extend",
                   help="override config keys, e.g. data.test.annotations=...")
    p.add_argument("--output", help="folder for eval.json and coco_results.json (default: "
                                    "<weights folder>/eval_<weights>_<test json>)")
    return p.parse_args(argv)


def default_output(weights: str, cfg: Config) -> Path:
    """``<weights folder>/eval_<weights file stem>_<test set>``: the test json's stem, or for VOC
    the roots and splits (``VOC2007-test``)."""
    w, t = Path(weights), cfg.data.test
    if cfg.data.format == "voc":
        test = "+".join(f"{Path(root).name}-{split}"
                        for root, split in zip(t.roots, voc_splits(t)))
    else:
        test = Path(t.annotations).stem
    return w.parent / f"eval_{w.stem}_{test}"


def _model(cfg: Config, weights: str, ckpt: dict, classes: list[dict]):
    model = build_model(cfg, num_classes=len(classes))
    load_model_weights(model, weights, ckpt)
    return model


@tool_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ckpt = load_checkpoint(args.weights)  # the weights first: before any dataset is read
    cfg = (load_config(args.config, args.set) if args.config
           else checkpoint_config(ckpt, args.weights, args.set))
    m = cfg.model  # the checkpoint holds every weight: no ImageNet file needed
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(
        m, backbone=dataclasses.replace(m.backbone, weights=None)))
    device = du.init_distributed(du.resolve_device(cfg.device))
    logger = setup_logger(du.get_rank())
    try:
        cfg = prepare_data(cfg)
        output = Path(args.output) if args.output else default_output(args.weights, cfg)
        cfg = dataclasses.replace(cfg, output_dir=str(output))
        classes = ckpt.get("classes")
        model = _model(cfg, args.weights, ckpt, classes) if classes else None
        dataset = build_test_dataset(cfg)
        if model is None:  # a bare state_dict: the dataset's classes
            classes = dataset.classes
            model = _model(cfg, args.weights, ckpt, classes)
        evaluator = build_evaluator(cfg, dataset.classes, verbose=du.is_main_process())
        if classes != dataset.classes:
            evaluator = Relabelled(evaluator, model_classes=classes, data_classes=dataset.classes)
        logger.info("evaluating %s (iteration %s) on %s, %d image(s), %d process(es)",
                    args.weights, ckpt.get("iteration"), dataset_source(cfg, train=False),
                    len(dataset), du.get_world_size())
        results, _ = inference_on_dataset(
            model.to(device), build_test_loader(cfg, dataset), evaluator, device=device,
            amp=cfg.solver.amp, amp_dtype=cfg.solver.amp_dtype)
        if du.is_main_process():
            path = output / "eval.json"
            write_eval_json(path, results, backbone=cfg.model.backbone.name,
                            config=args.config or f"{args.weights} (stored config)",
                            weights=args.weights, iteration=ckpt.get("iteration"))
            print(f"{headline(results)}   (written to {path})")
    finally:
        du.destroy_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
