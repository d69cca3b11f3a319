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
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from ..build import build_model
from ..config import Config, checkpoint_config, dump_config, load_config
from ..engine import distributed as du
from ..engine.checkpoint import load_checkpoint, load_model_weights
from ..engine.runlog import setup_logger, write_eval_json
from ..evaluation import Relabelled, headline
from ..evaluation.inference import inference_on_dataset
from ..setup import (build_evaluator, build_test_dataset, build_test_loader, dataset_source,
                     prepare_data, voc_splits)
from .common import ArgumentParser, add_config_options, add_option, tool_main


def build_parser(prog: str | None = None) -> ArgumentParser:
    p = ArgumentParser(prog=prog, description=__doc__)
    add_option(p, "--weights", required=True)
    add_config_options(p, required=False)
    add_option(p, "--device")
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
    ckpt = load_checkpoint(args.weights)  # the weights first: before any dataset is read
    cfg = (load_config(args.config, args.set) if args.config
           else checkpoint_config(ckpt, args.weights, args.set))
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

