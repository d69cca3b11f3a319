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
overwritten. ``--amp`` (default: the config's ``test.amp``, ``auto``) picks float32 or bf16
autocast (bf16 where the CPU has native bf16); ``--backend onnxruntime`` / ``openvino`` evaluates
an exported ``.onnx`` / ``.xml`` file instead (its own config; ``--set`` still applies).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no PyPI version check (2 s offline)

from detection.build import build_model  # noqa: E402
from detection.cli import ArgumentParser, tool_main  # noqa: E402
from detection.config import (Config, apply_overrides, config_from_dict,  # noqa: E402
                              config_to_dict, load_config)
from detection.engine import distributed as du  # noqa: E402
from detection.engine.checkpoint import (checkpoint_config, load_checkpoint,  # noqa: E402
                                         load_model_weights)
from detection.engine.logging import setup_logger, write_eval_json  # noqa: E402
from detection.engine.setup import (build_evaluator, build_test_dataset,  # noqa: E402
                                    build_test_loader, dataset_source, prepare_data,
                                    voc_splits)
from detection.engine.trainer import inference_on_dataset  # noqa: E402
from detection.evaluation import Relabelled, headline  # noqa: E402
from detection.precision import AMP_MODES, inference_precision  # noqa: E402
from detection.predictor import BACKENDS, load_exported  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", help="YAML config file (default: the one in the checkpoint)")
    p.add_argument("--weights", required=True, help="checkpoint (last.pth, best.pth, ...); "
                   "with --backend onnxruntime / openvino a file of tools/export.py")
    p.add_argument("--backend", choices=BACKENDS, default="torch",
                   help="torch (default), onnxruntime (.onnx) or openvino (.xml, .onnx)")
    p.add_argument("--amp", choices=AMP_MODES, default=None,
                   help="inference precision (default: the config's test.amp, auto): bf16 on a "
                        "CPU with native bf16, else float32; off: float32")
    p.add_argument("--threads", type=int, help="ONNX Runtime / OpenVINO threads")
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
    if args.backend != "torch":
        return _eval_exported(args)
    ckpt = load_checkpoint(args.weights)  # the weights first: before any dataset is read
    cfg = (load_config(args.config, args.set) if args.config
           else checkpoint_config(ckpt, args.weights, args.set))
    if args.amp:
        cfg = dataclasses.replace(cfg, test=dataclasses.replace(cfg.test, amp=args.amp))
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
        amp = inference_precision(cfg.test.amp, device, solver_amp=cfg.solver.amp,
                                  amp_dtype=cfg.solver.amp_dtype)
        logger.info("inference in %s", amp.describe())
        results, _ = inference_on_dataset(
            amp.prepare(model.to(device)), build_test_loader(cfg, dataset), evaluator,
            device=device, **amp.trainer_args())
        if du.is_main_process():
            path = output / "eval.json"
            write_eval_json(path, results, backbone=cfg.model.backbone.name,
                            config=args.config or f"{args.weights} (stored config)",
                            weights=args.weights, iteration=ckpt.get("iteration"))
            print(f"{headline(results)}   (written to {path})")
    finally:
        du.destroy_distributed()
    return 0


def _eval_exported(args: argparse.Namespace) -> int:
    """``--backend onnxruntime / openvino``: the exported file's config (with ``--set``), one
    process on the CPU."""
    if args.config:
        raise ValueError("--config is for a checkpoint: an exported file carries its own config")
    detector = load_exported(args.backend, args.weights, device="cpu", threads=args.threads,
                             score_thresh=None, amp=args.amp or "auto")
    cfg = config_from_dict(apply_overrides(config_to_dict(detector.cfg), args.set),
                           source=f"{args.weights} (config)")
    logger = setup_logger(0)
    cfg = prepare_data(cfg)
    output = Path(args.output) if args.output else default_output(args.weights, cfg)
    cfg = dataclasses.replace(cfg, output_dir=str(output))
    dataset = build_test_dataset(cfg)
    evaluator = build_evaluator(cfg, dataset.classes, verbose=True)
    if detector.classes != dataset.classes:
        evaluator = Relabelled(evaluator, model_classes=detector.classes,
                               data_classes=dataset.classes)
    logger.info("evaluating %s with %s on %s, %d image(s)", args.weights, detector.describe(),
                dataset_source(cfg, train=False), len(dataset))
    results, _ = inference_on_dataset(detector, build_test_loader(cfg, dataset), evaluator,
                                      device=torch.device("cpu"))
    path = output / "eval.json"
    write_eval_json(path, results, backbone=cfg.model.backbone.name,
                    config=f"{args.weights} (stored config)", weights=args.weights,
                    iteration=None)
    print(f"{headline(results)}   (written to {path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
