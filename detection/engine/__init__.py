"""Training engine, task-neutral: the loop, checkpoints, schedules, process groups, run logs and
the run folder. It is handed a model, loaders and an evaluation and imports none of them (nor
anything else of ``detection``): detection and pretraining assemble their runs on it."""
from .checkpoint import (get_rng_state, load_checkpoint, load_model_weights, save_checkpoint,
                         seed_all, set_rng_state, unwrap_model)
from .distributed import (get_rank, get_world_size, init_distributed, is_main_process,
                          resolve_device)
from .run import assemble_trainer, images_per_process, prepare_output_dir, read_resume
from .runlog import MetricsWriter, setup_logger, write_eval_json
from .schedule import WarmupLRScheduler, lr_factor, param_groups
from .trainer import NonFiniteLossError, Trainer

__all__ = [
    "get_rng_state", "load_checkpoint", "load_model_weights", "save_checkpoint", "seed_all",
    "set_rng_state", "unwrap_model", "get_rank", "get_world_size", "init_distributed",
    "is_main_process", "resolve_device", "assemble_trainer", "images_per_process",
    "prepare_output_dir", "read_resume", "MetricsWriter", "setup_logger", "write_eval_json",
    "WarmupLRScheduler", "lr_factor", "param_groups", "NonFiniteLossError", "Trainer",
]
