"""Two tiny real training runs, shared by the tests of the tools that read finished runs."""
from __future__ import annotations

import logging

import pytest
import torch

from detection.engine.runlog import LOGGER_NAME
from tool_loader import load_tool


@pytest.fixture(scope="session")
def tiny_runs(synthetic_coco, tmp_path_factory, tiny_config):
    """``[run_a, run_b]`` output folders of tools/train.py, trained in this process (no
    interpreter start-up): R-18-FPN, 4 iterations (evaluated at 2 and 4, with the validation
    loss) and 2 iterations with another seed and box head width."""
    train = load_tool("train")
    logger = logging.getLogger(LOGGER_NAME)
    saved = (list(logger.handlers), logger.level, logger.propagate, torch.get_num_threads())
    torch.set_num_threads(1)
    runs = []
    try:
        for name, changes in (("r18_a", {"test": {"val_loss": True}}), ("r18_b", {
                "seed": 1, "solver": {"max_iter": 2}, "test": {"eval_period": 0, "vis_images": 0},
                "model": {"roi_heads": {"fc_dim": 96}}})):
            folder = tmp_path_factory.mktemp(name)
            changes = {**changes, "output_dir": str(folder / name)}
            config = tiny_config(folder, synthetic_coco, **changes)
            assert train.main(["--config", str(config)]) == 0
            runs.append(folder / name)
    finally:
        logger.handlers[:] = saved[0]
        logger.setLevel(saved[1])
        logger.propagate = saved[2]
        torch.set_num_threads(saved[3])
    return runs


@pytest.fixture(scope="session")
def tiny_mask_run(synthetic_coco, tmp_path_factory, tiny_config):
    """The output folder of a tiny Mask R-CNN run of tools/train.py (R-18-FPN with a 1-conv
    mask head of 8 channels, 4 iterations on the synthetic shapes' polygons, evaluated at the
    end), trained in this process."""
    train = load_tool("train")
    logger = logging.getLogger(LOGGER_NAME)
    saved = (list(logger.handlers), logger.level, logger.propagate, torch.get_num_threads())
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("mask_run")
    try:
        config = tiny_config(folder, synthetic_coco, output_dir=str(folder / "mask"),
                             model={"mask_head": {"enabled": True, "num_convs": 1,
                                                  "conv_dim": 8}},
                             test={"eval_period": 0, "vis_images": 2})
        assert train.main(["--config", str(config)]) == 0
    finally:
        logger.handlers[:] = saved[0]
        logger.setLevel(saved[1])
        logger.propagate = saved[2]
        torch.set_num_threads(saved[3])
    return folder / "mask"
