#!/usr/bin/env python
"""Train a detector from a YAML config; evaluate it, write eval.json and drawn detections.

    python tools/train.py --config configs/quickstart.yaml
    python tools/train.py --config configs/coco/faster_rcnn_R_50_FPN_1x.yaml --set seed=1
    torchrun --nproc_per_node 8 tools/train.py --config configs/coco/faster_rcnn_R_50_FPN_1x.yaml
    python tools/train.py --config ... --resume       # continue from <output_dir>/last.pth

Writes into ``output_dir``: config.yaml, metrics.jsonl, last.pth, best.pth, eval.json, vis/.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no PyPI version check (2 s offline)

from backbones.weights import WeightsError  # noqa: E402
from detection.engine.setup import build_trainer, dataset_source  # noqa: E402
from detection.config import ConfigError, dump_config, load_config  # noqa: E402
from detection.engine import distributed as du  # noqa: E402
from detection.engine.logging import LOGGER_NAME, setup_logger, write_eval_json  # noqa: E402
from detection.engine.trainer import NonFiniteLossError, save_visualizations  # noqa: E402
from detection.evaluation import format_table, headline  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, help="YAML config file")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", action="extend",
                   help="override config keys, e.g. solver.max_iter=1000 seed=1")
    p.add_argument("--output", help="output folder (overrides output_dir)")
    p.add_argument("--resume", action="store_true", help="continue from <output_dir>/last.pth")
    p.add_argument("--print-config", action="store_true", help="print the resolved config, exit")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = list(args.set) + ([f"output_dir={args.output}"] if args.output else [])
    try:
        cfg = load_config(args.config, overrides)
        if args.print_config:
            print(dump_config(cfg), end="")
            return 0
        device = du.resolve_device(cfg.device)
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    device = du.init_distributed(device)
    logger = setup_logger(du.get_rank())
    try:
        return train(cfg, device=device, resume=args.resume, config_path=args.config)
    finally:
        du.destroy_distributed()


def train(cfg, *, device, resume: bool, config_path: str) -> int:
    logger = logging.getLogger(LOGGER_NAME)
    try:
        trainer, cfg = build_trainer(cfg, device=device, resume=resume)
    except (ValueError, FileNotFoundError, FileExistsError, WeightsError) as e:
        logger.error("error: %s", e)  # bad data, weights or config values: no traceback
        return 1
    logger.info("training %s on %s, %d process(es), output in %s", cfg.model.backbone.name,
                device, du.get_world_size(), cfg.output_dir)
    try:
        results = trainer.train()
    except NonFiniteLossError as e:
        logger.error("%s", e)
        return 1
    if du.is_main_process():
        report(trainer, cfg, results, config_path=config_path)
    return 0


def report(trainer, cfg, results: dict, *, config_path: str) -> None:
    """eval.json, vis/ and the final lines on the console (main process)."""
    out = Path(cfg.output_dir)
    if results is None:  # no data.test
        print(f"trained {trainer.iteration} iterations without evaluation (no data.test); "
              f"weights in {os.path.abspath(out / 'last.pth')}")
        return
    write_eval_json(out / "eval.json", results, backbone=cfg.model.backbone.name,
                    config=config_path, weights=str(out / "last.pth"),
                    iteration=trainer.iteration)
    save_visualizations(trainer.evaluate_fn.kept, out / "vis",
                        classes=trainer.extra_state["classes"],
                        score_thresh=cfg.test.vis_score_thresh)
    print(format_table(results))
    print(f"{headline(results)}   ({dataset_source(cfg, train=False)}, iteration "
          f"{trainer.iteration}, output in {os.path.abspath(out)})")


if __name__ == "__main__":
    sys.exit(main())
