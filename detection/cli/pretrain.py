"""Pretrain a backbone as an image classifier (the paper's ImageNet / CIFAR-10 experiments).

    resdet pretrain --config pretrain/shapes_resnet18
    resdet pretrain --config pretrain/cifar10_resnet20 \\
        --set data.train=datasets/cifar-10-python.tar.gz
    torchrun --nproc_per_node 8 -m detection.cli pretrain --config pretrain/imagenet_resnet50
    resdet pretrain --config ... --resume      # continue from <output_dir>/last.pth
    resdet pretrain --config ... --benchmark   # loader images/s vs the step it feeds

Writes into output_dir: config.yaml, metrics.jsonl (train lines with loss_cls and the batch's
top1_err; eval lines with top1_err, top5_err), last.pth, best.pth, eval.json and backbone.pth:
the backbone's weights for model.backbone.weights of a detection config (or
build_backbone(name, weights=...)).
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from ..config import dump_config
from ..engine import distributed as du
from ..engine.runlog import LOGGER_NAME, write_eval_json
from ..pretrain.config import load_pretrain_config
from ..pretrain.setup import build_pretrainer, export, final_test
from .common import ArgumentParser, add_run_arguments, open_run, tool_main


def build_parser(prog: str | None = None) -> ArgumentParser:
    p = ArgumentParser(prog=prog, description=__doc__)
    add_run_arguments(p)
    p.add_argument("--benchmark", action="store_true",
                   help="measure the training loader's images/s against the training step's "
                        "(detection/pretrain/benchmark.py) instead of training")
    return p


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    return build_parser(prog).parse_args(argv)


@tool_main
def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    overrides = list(args.set) + ([f"output_dir={args.output}"] if args.output else [])
    cfg = load_pretrain_config(args.config, overrides)
    if args.print_config:
        print(dump_config(cfg), end="")
        return 0
    device = du.resolve_device(cfg.device)
    if args.benchmark:
        from ..pretrain.benchmark import benchmark_pretraining, format_benchmark

        print(format_benchmark(benchmark_pretraining(cfg, device=device)))
        return 0
    device = du.init_distributed(device)
    try:
        open_run(cfg.output_dir, resume=args.resume, force=args.force)
        return pretrain(cfg, device=device, resume=args.resume, config_path=args.config)
    finally:
        du.destroy_distributed()


def pretrain(cfg, *, device, resume: bool, config_path: str) -> int:
    logger = logging.getLogger(LOGGER_NAME)
    trainer, cfg = build_pretrainer(cfg, device=device, resume=resume)
    logger.info("pretraining %s on %s (%d classes), %d process(es), output in %s",
                cfg.model.backbone.name, device, cfg.model.num_classes, du.get_world_size(),
                cfg.output_dir)
    trainer.train()
    results = final_test(trainer, cfg)  # every process: 10-crop inference is sharded
    if du.is_main_process():
        out = Path(cfg.output_dir)
        export(trainer, cfg, out / "backbone.pth")
        write_eval_json(out / "eval.json", results, backbone=cfg.model.backbone.name,
                        config=config_path, weights=str(out / "last.pth"),
                        iteration=trainer.iteration)
        errors = "  ".join(f"{k.replace('_err', '')} error {v:.2f} %" for k, v in results.items()
                           if k.endswith("_err") and not k.startswith("center_crop"))
        print(f"{errors}   ({results['crops']}-crop, {int(results['num_images'])} images, "
              f"iteration {trainer.iteration})\n"
              f"backbone weights: {os.path.abspath(out / 'backbone.pth')}")
    return 0

