"""Train a detector from a config; evaluate it, write eval.json and drawn detections.

    resdet train --config quickstart
    resdet train --config coco/faster_rcnn_R_50_FPN_1x --set seed=1
    torchrun --nproc_per_node 8 -m detection.cli train --config coco/faster_rcnn_R_50_FPN_1x
    resdet train --config ... --resume       # continue from <output_dir>/last.pth
    resdet train --config ... --force        # start over in a used output folder

Writes into ``output_dir``: config.yaml, metrics.jsonl, log.txt (everything printed), last.pth,
best.pth, eval.json, coco_results.json, vis/. A folder that holds a previous run is refused unless
``--resume`` (continue it) or ``--force`` (start over) is given. On SIGTERM or SIGUSR1 (a
scheduler's warning) the run finishes its step, writes last.pth and exits with status 75:
continue it with ``--resume`` (docs/long_runs.md).
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from ..config import dump_config, load_config
from ..engine import distributed as du
from ..engine.runlog import LOGGER_NAME, write_eval_json
from ..evaluation import format_table, headline
from ..evaluation.inference import save_visualizations
from ..setup import build_trainer, dataset_source
from .common import ArgumentParser, add_run_arguments, open_run, tool_main


def build_parser(prog: str | None = None) -> ArgumentParser:
    p = ArgumentParser(prog=prog, description=__doc__)
    add_run_arguments(p)
    return p


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    return build_parser(prog).parse_args(argv)


@tool_main
def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
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

