#!/usr/bin/env python
"""Evaluate a checkpoint on the config's test set (COCO or VOC mAP), write ``<output>/eval.json``.

    python tools/eval.py --config configs/quickstart.yaml --weights output/quickstart/last.pth
    torchrun --nproc_per_node 8 tools/eval.py --config configs/coco/faster_rcnn_R_50_FPN_1x.yaml \
        --weights output/coco/faster_rcnn_R_50_FPN_1x/best.pth --output output/eval_r50
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no PyPI version check (2 s offline)

from detection.build import build_model  # noqa: E402
from detection.engine.setup import (build_evaluator, build_test_dataset,  # noqa: E402
                                    build_test_loader, dataset_source, prepare_data)
from detection.config import ConfigError, load_config  # noqa: E402
from detection.engine import distributed as du  # noqa: E402
from detection.engine.checkpoint import load_checkpoint, load_model_weights  # noqa: E402
from detection.engine.logging import setup_logger, write_eval_json  # noqa: E402
from detection.engine.trainer import inference_on_dataset  # noqa: E402
from detection.evaluation import Relabelled, headline  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, help="YAML config file")
    p.add_argument("--weights", required=True, help="checkpoint (last.pth, best.pth, ...)")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", action="extend",
                   help="override config keys, e.g. data.test.annotations=...")
    p.add_argument("--output", help="folder for eval.json (default: the config's output_dir)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = list(args.set) + ([f"output_dir={args.output}"] if args.output else [])
    try:
        cfg = load_config(args.config, overrides)
        device = du.resolve_device(cfg.device)
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    device = du.init_distributed(device)
    logger = setup_logger(du.get_rank())
    try:
        cfg = prepare_data(cfg)
        dataset = build_test_dataset(cfg)
        ckpt = load_checkpoint(args.weights)
        classes = ckpt.get("classes") or dataset.classes  # a bare state_dict: the dataset's
        model = build_model(cfg, num_classes=len(classes))
        load_model_weights(model, args.weights, ckpt)
        evaluator = build_evaluator(cfg, dataset.classes, verbose=du.is_main_process())
        if classes != dataset.classes:
            evaluator = Relabelled(evaluator, model_classes=classes, data_classes=dataset.classes)
        logger.info("evaluating %s (iteration %s) on %s, %d image(s), %d process(es)",
                    args.weights, ckpt.get("iteration"), dataset_source(cfg, train=False),
                    len(dataset), du.get_world_size())
        results, _ = inference_on_dataset(
            model.to(device), build_test_loader(cfg, dataset),
            evaluator, device=device,
            amp=cfg.solver.amp, amp_dtype=cfg.solver.amp_dtype)
        if du.is_main_process():
            path = Path(cfg.output_dir) / "eval.json"
            write_eval_json(path, results, backbone=cfg.model.backbone.name, config=args.config,
                            weights=args.weights, iteration=ckpt.get("iteration"))
            print(f"{headline(results)}   (written to {path})")
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        logger.error("error: %s", e)
        return 1
    finally:
        du.destroy_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
