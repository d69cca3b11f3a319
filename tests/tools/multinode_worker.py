"""tools/train.py's training path, launched by tools/slurm_train.sh in tests/tools/
test_slurm_train.py: ``build_trainer`` from ``--config``, train (evaluating at the end), then
every process's final weights and launch environment gathered into ``<output_dir>/ranks.pt``."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from detection.config import load_config  # noqa: E402
from detection.engine import distributed as du  # noqa: E402
from detection.engine.checkpoint import unwrap_model  # noqa: E402
from detection.setup import build_trainer  # noqa: E402

LAUNCH_KEYS = ("RANK", "GROUP_RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "WORLD_SIZE",
               "SLURM_NODEID")


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    cfg = load_config(argv[argv.index("--config") + 1])
    device = du.init_distributed(torch.device("cpu"))
    try:
        trainer, cfg = build_trainer(cfg, device=device)
        result = trainer.train()
        state = unwrap_model(trainer.model).state_dict()  # parameters and buffers
        weights = torch.cat([v.flatten() for v in state.values() if v.is_floating_point()])
        ranks = du.all_gather_object({"weights": weights, "result": result,
                                      **{k: os.environ.get(k) for k in LAUNCH_KEYS}})
        if du.is_main_process():
            torch.save(ranks, Path(cfg.output_dir) / "ranks.pt")
    finally:
        du.destroy_distributed()


if __name__ == "__main__":
    main(sys.argv[1:])
