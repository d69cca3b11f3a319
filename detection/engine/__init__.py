"""Training engine: the loop, checkpoints, schedules, process groups and run logs."""
from .checkpoint import (get_rng_state, load_checkpoint, load_model_weights, save_checkpoint,
                         seed_all, set_rng_state, unwrap_model)
from .distributed import (get_rank, get_world_size, init_distributed, is_main_process,
                          resolve_device)
from .logging import MetricsWriter, setup_logger, write_eval_json
from .schedule import WarmupLRScheduler, lr_factor, param_groups
from .trainer import (DatasetInference, NonFiniteLossError, Trainer, inference_on_dataset,
                      save_visualizations)

__all__ = [
    "get_rng_state", "load_checkpoint", "load_model_weights", "save_checkpoint", "seed_all",
    "set_rng_state", "unwrap_model", "get_rank", "get_world_size", "init_distributed",
    "is_main_process", "resolve_device", "MetricsWriter", "setup_logger",
    "write_eval_json", "WarmupLRScheduler", "lr_factor", "param_groups", "NonFiniteLossError",
    "Trainer", "inference_on_dataset", "DatasetInference", "save_visualizations",
]
