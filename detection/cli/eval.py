"""Evaluate a checkpoint on the config's test set (COCO or VOC mAP); write eval.json and the
detections.

    resdet eval --weights output/quickstart/best.pth      # the config stored in the checkpoint
    resdet eval --config quickstart --weights output/quickstart/last.pth
    torchrun --nproc_per_node 8 -m detection.cli eval --config coco/faster_rcnn_R_50_FPN_1x \\
        --weights output/coco/faster_rcnn_R_50_FPN_1x/best.pth --output output/eval_r50

Without --config the config stored in the checkpoint is used (--set still applies). Output:
eval.json and coco_results.json in the --output folder; by default in a folder beside the
weights named after them and the test set, <weights folder>/eval_<weights>_<test json>/
(output/quickstart/eval_best_val/), so the training run's own eval.json is never overwritten.
--amp (default: the config's test.amp, auto) picks float32 or bf16 autocast (bf16 where the CPU
has native bf16); --backend onnxruntime / openvino evaluates an exported .onnx / .xml file
instead (its own config; --set still applies).
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from ..build import build_model
from ..config import (Config, apply_overrides, checkpoint_config, config_from_dict,
                      config_to_dict, dump_config, load_config)
from ..engine import distributed as du
from ..engine.checkpoint import load_checkpoint, load_model_weights
from ..engine.runlog import setup_logger, write_eval_json
from ..evaluation import Relabelled, headline
from ..evaluation.inference import inference_on_dataset
from ..precision import inference_precision
from ..predictor import load_exported
from ..setup import (build_evaluator, build_test_dataset, build_test_loader, dataset_source,
                     prepare_data, voc_splits)
from .common import ArgumentParser, add_config_options, add_option, tool_main


def build_parser(prog: str | None = None) -> ArgumentParser:
    p = ArgumentParser(prog=prog, description=__doc__)
    add_option(p, "--weights", required=True)
    add_config_options(p, required=False)
    add_option(p, "--device")
    add_option(p, "--backend")
    add_option(p, "--amp")
    add_option(p, "--threads")
    p.add_argument("--output", metavar="DIR",
                   help="folder for eval.json and coco_results.json (default: <weights "
                        "folder>/eval_<weights>_<test json>)")
    return p


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    return build_parser(prog).parse_args(argv)


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
def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.backend != "torch":
        return _eval_exported(args)
    ckpt = load_checkpoint(args.weights)  # the weights first: before any dataset is read
    cfg = (load_config(args.config, args.set) if args.config
           else checkpoint_config(ckpt, args.weights, args.set))
    if args.amp:
        cfg = dataclasses.replace(cfg, test=dataclasses.replace(cfg.test, amp=args.amp))
    m = cfg.model  # the checkpoint holds every weight: no ImageNet file needed
    cfg = dataclasses.replace(cfg, device=args.device, model=dataclasses.replace(
        m, backbone=dataclasses.replace(m.backbone, weights=None)))
    if args.print_config:
        print(dump_config(cfg), end="")
        return 0
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
    if args.print_config:
        print(dump_config(cfg), end="")
        return 0
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
