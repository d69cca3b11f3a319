#!/usr/bin/env python
"""Pretrain a backbone as an image classifier (the paper's ImageNet / CIFAR-10 experiments).

    python tools/pretrain.py --config configs/pretrain/shapes_resnet18.yaml
    python tools/pretrain.py --config configs/pretrain/cifar10_resnet20.yaml \\
        --set data.train=datasets/cifar-10-python.tar.gz
    torchrun --nproc_per_node 8 tools/pretrain.py --config configs/pretrain/imagenet_resnet50.yaml
    python tools/pretrain.py --config ... --resume      # continue from <output_dir>/last.pth
    python tools/pretrain.py --config ... --benchmark   # loader images/s vs the step it feeds

Writes into ``output_dir``: config.yaml, metrics.jsonl (train lines with ``loss_cls`` and the
batch's ``top1_err``; eval lines with ``top1_err``, ``top5_err``), last.pth, best.pth, eval.json
and ``backbone.pth``: the backbone's weights for ``model.backbone.weights`` of a detection config
(or ``build_backbone(name, weights=...)``).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from detection.pretrain.config import load_pretrain_config  # noqa: E402
from detection.pretrain.setup import build_pretrainer, export, final_test  # noqa: E402
from detection.cli import ArgumentParser, add_run_arguments, open_run, tool_main  # noqa: E402
from detection.config import dump_config  # noqa: E402
from detection.engine import distributed as du  # noqa: E402
from detection.engine.runlog import LOGGER_NAME, write_eval_json  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__.split("\n")[0])
    add_run_arguments(p)
    p.add_argument("--benchmark", action="store_true",
                   help="measure the training loader's images/s against the training step's "
                        "(detection/pretrain/benchmark.py) instead of training")
    return p.parse_args(argv)


@tool_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = list(args.set) + ([f"output_dir={args.output}"] if args.output else [])
    cfg = load_pretrain_config(args.config, overrides)
    if args.print_config:
        print(dump_config(cfg), end="")
        return 0
    device = du.resolve_device(cfg.device)
    if args.benchmark:
        from detection.pretrain.benchmark import benchmark_pretraining, format_benchmark

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


if __name__ == "__main__":
    sys.exit(main())
