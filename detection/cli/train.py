#!/usr/bin/env python
"""Train a detector from a YAML config; evaluate it, write eval.json and drawn detections.

    python tools/train.py --config configs/quickstart.yaml
    python tools/train.py --config configs/coco/faster_rcnn_R_50_FPN_1x.yaml --set seed=1
    torchrun --nproc_per_node 8 tools/train.py --config configs/coco/faster_rcnn_R_50_FPN_1x.yaml
    python tools/train.py --config ... --resume       # continue from <output_dir>/last.pth
    python tools/train.py --config ... --force        # start over in a used output folder

Writes into ``output_dir``: config.yaml, metrics.jsonl, log.txt (everything printed), last.pth,
best.pth, eval.json, coco_results.json, vis/. A folder that holds a previous run is refused unless
``--resume`` (continue it) or ``--force`` (start over) is given.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no PyPI version check (2 s offline)

from detection.cli import ArgumentParser, add_run_arguments, open_run, tool_main  # noqa: E402
from detection.config import dump_config, load_config  # noqa: E402
from detection.engine import distributed as du  # noqa: E402
from detection.engine.runlog import LOGGER_NAME, write_eval_json  # noqa: E402
from detection.setup import build_trainer, dataset_source  # noqa: E402
from detection.evaluation.inference import save_visualizations  # noqa: E402
from detection.evaluation import format_table, headline  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__.split("\n")[0])
    add_run_arguments(p)
    return p.parse_args(argv)


@tool_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = list(args.set) + ([f"output_dir={args.output}"] if args.output else [])
    cfg = load_config(args.config, overrides)
    if args.print_config:
        print(dump_config(cfg), end="")
        return 0
    device = du.init_distributed(du.resolve_device(cfg.device))
    try:
        open_run(cfg.output_dir, resume=args.resume, force=args.force)
        train(cfg, device=device, resume=args.resume, config_path=args.config)
    finally:
        du.destroy_distributed()
    return 0


def train(cfg, *, device, resume: bool, config_path: str) -> None:
    trainer, cfg = build_trainer(cfg, device=device, resume=resume)
    logging.getLogger(LOGGER_NAME).info(
        "training %s on %s, %d process(es), output in %s", cfg.model.backbone.name, device,
        du.get_world_size(), cfg.output_dir)
    results = trainer.train()
    if du.is_main_process():
        report(trainer, cfg, results, config_path=config_path)


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
