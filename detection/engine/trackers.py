"""Trackers as hooks: TensorBoard, MLflow and Weights & Biases see what ``metrics.jsonl`` holds.

Each tracker is a :class:`~.hooks.HookBase` that also receives every record the run's
:class:`~.runlog.MetricsWriter` writes (``attach(writer)``: it becomes one of the writer's
``sinks``), so the tracker's metrics are the log's numbers by construction, under the tags
TensorBoard shows (``train/loss_cls``, ``eval/mAP``, ``eval/per_category/<name>``,
``data/train/images``; :func:`~.runlog.scalar_tags`) with the iteration as the step. Its run
starts with the first record; params (MLflow) or config (W&B) are the resolved config; at the
end MLflow uploads the run folder as artifacts. Only the process that writes the log (the first)
logs. The tracker's run id is the hook's state, so a resumed training continues the same
tracker run (points logged after the checkpoint by the interrupted run stay there: neither
tracker deletes points).

Each package is an optional extra, imported only when enabled: without it, one warning names
the extra (``pip install -e ".[mlflow]"``) and the run goes on without the tracker.
TensorBoard (``tensorboard: true``, the default) writes its event files to
``<output_dir>/tensorboard`` and keeps no state: a resumed run appends to them.
"""
from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

from .hooks import HookBase
from .runlog import LOGGER_NAME, MetricsWriter, scalar_tags

__all__ = ["MLflowTracker", "TensorBoardTracker", "WandbTracker", "build_trackers",
           "flat_params"]

logger = logging.getLogger(LOGGER_NAME)


def missing_extra(package: str, key: str) -> str:
    """The one warning of a tracker whose package is missing (``key``: its config switch)."""
    switch = key if key == "tensorboard" else f"{key}.enabled"
    return (f"{switch}: true, but the {package} package is not installed; the run is not "
            f"logged to {package}. Install the extra: pip install -e \".[{package}]\" (or set "
            f"{switch}: false)")


def flat_params(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A config tree as ``{"solver.base_lr": "0.02", ...}`` (nested mappings flattened)."""
    out: dict[str, str] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            out.update(flat_params(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)
    return out


def _end_status() -> str:
    """How the run ended, from the exception being handled (``after_train`` runs in a
    ``finally``): finished, killed (interrupted, pre-empted) or failed."""
    error = sys.exc_info()[1]
    if error is None:
        return "FINISHED"
    return "KILLED" if isinstance(error, (KeyboardInterrupt, SystemExit)) or \
        type(error).__name__ == "Preempted" else "FAILED"


class _Tracker(HookBase):
    """What both trackers share: started by the first record, state = the run id."""

    def __init__(self, *, config: Mapping[str, Any], output_dir: str | Path,
                 run_name: Optional[str]):
        self.config, self.output_dir = dict(config), Path(output_dir)
        self.run_name = run_name or self.output_dir.resolve().name
        self.run_id: Optional[str] = None
        self.started = False

    def attach(self, writer: Optional[MetricsWriter]) -> None:
        """Receive every record ``writer`` writes (none when ``writer`` is ``None``)."""
        if writer is not None:
            writer.sinks.append(self.write)

    def write(self, record: Mapping[str, Any]) -> None:
        if not self.started:
            self._start(resumed=self.run_id is not None)
            self.started = True
        tags = scalar_tags(record)
        if tags:
            self._log(tags, int(record.get("iteration", 0)))

    def after_train(self) -> None:
        if self.started:
            self._finish(_end_status())
            self.started = False

    def state_dict(self) -> Optional[dict]:
        return {"run_id": self.run_id} if self.run_id else None

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.run_id = state.get("run_id")

    def _start(self, *, resumed: bool) -> None:
        raise NotImplementedError

    def _log(self, tags: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def _finish(self, status: str) -> None:
        raise NotImplementedError


class TensorBoardTracker(_Tracker):
    """The log's numbers as TensorBoard scalars in ``<output_dir>/tensorboard``."""

    name = "tensorboard"

    def __init__(self, *, output_dir: str | Path):
        super().__init__(config={}, output_dir=output_dir, run_name=None)
        from torch.utils.tensorboard import SummaryWriter

        self._writer_class, self.writer = SummaryWriter, None

    def _start(self, *, resumed: bool) -> None:
        self.writer = self._writer_class(log_dir=str(self.output_dir / "tensorboard"),
                                         flush_secs=10)

    def _log(self, tags: dict[str, float], step: int) -> None:
        for tag, value in tags.items():
            self.writer.add_scalar(tag, value, step)

    def _finish(self, status: str) -> None:
        self.writer.close()

    def state_dict(self) -> None:
        return None


class MLflowTracker(_Tracker):
    """The run in MLflow: ``tracking_uri`` (``None``: ``$MLFLOW_TRACKING_URI``, else MLflow's
    default, a SQLite file ``mlflow.db`` in the current folder), experiment ``experiment``;
    params = the resolved config, metrics = the log's numbers, and the run folder uploaded as
    artifacts at the end (``artifacts``)."""

    _KEY = re.compile(r"[^\w\-. /]")  # the characters MLflow refuses in a metric name

    def __init__(self, *, config: Mapping[str, Any], output_dir: str | Path,
                 tracking_uri: Optional[str] = None, experiment: str = "resdet",
                 run_name: Optional[str] = None, artifacts: bool = True):
        super().__init__(config=config, output_dir=output_dir, run_name=run_name)
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.experiment, self.artifacts = experiment, artifacts

    def _start(self, *, resumed: bool) -> None:
        if resumed:  # the same run, its params as first logged (MLflow cannot change them)
            self.client.update_run(self.run_id, status="RUNNING")
            logger.info("MLflow: continuing run %s", self.run_id)
            return
        exp = self.client.get_experiment_by_name(self.experiment)
        exp_id = exp.experiment_id if exp else self.client.create_experiment(self.experiment)
        run = self.client.create_run(exp_id, run_name=self.run_name,
                                     tags={"output_dir": str(self.output_dir.resolve())})
        self.run_id = run.info.run_id
        from mlflow.entities import Param

        params = [Param(k, v) for k, v in flat_params(self.config).items()]
        for i in range(0, len(params), 100):  # MLflow takes 100 params a call
            self.client.log_batch(self.run_id, params=params[i:i + 100])
        logger.info("MLflow: run %s in experiment %r at %s", self.run_id, self.experiment,
                    self.client.tracking_uri)

    def _log(self, tags: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(self._KEY.sub("_", k), float(v), now, step) for k, v in tags.items()]
        for i in range(0, len(metrics), 1000):  # MLflow takes 1000 metrics a call
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    def _finish(self, status: str) -> None:
        if self.artifacts and status == "FINISHED":
            self.client.log_artifacts(self.run_id, str(self.output_dir))
        self.client.set_terminated(self.run_id, status=status)


class WandbTracker(_Tracker):
    """The run in Weights & Biases: project ``project`` (``entity``), ``mode`` offline (files
    under ``<output_dir>/wandb``, no account; ``wandb sync`` uploads them later) or online;
    config = the resolved config, history = the log's numbers."""

    def __init__(self, *, config: Mapping[str, Any], output_dir: str | Path,
                 project: str = "resdet", entity: Optional[str] = None, mode: str = "offline",
                 run_name: Optional[str] = None):
        super().__init__(config=config, output_dir=output_dir, run_name=run_name)
        import wandb

        self.wandb, self.project, self.entity, self.mode = wandb, project, entity, mode
        self.run = None

    def _start(self, *, resumed: bool) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.run = self.wandb.init(
            project=self.project, entity=self.entity, name=self.run_name, mode=self.mode,
            dir=str(self.output_dir), config=self.config, id=self.run_id,
            resume="allow" if resumed else None,
            settings=self.wandb.Settings(console="off", silent=True))
        self.run_id = self.run.id

    def _log(self, tags: dict[str, float], step: int) -> None:
        self.run.log(tags, step=step)

    def _finish(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "FINISHED" else 1)
        self.run = None


def build_trackers(trackers: Any, *, config: Mapping[str, Any], output_dir: str | Path,
                   tensorboard: bool = False) -> list[_Tracker]:
    """TensorBoard (``tensorboard``) and the trackers ``trackers`` (a config's ``trackers``
    section) enables; a missing package is one warning naming its extra, and that tracker is
    left out."""
    out: list[_Tracker] = []
    m, w = trackers.mlflow, trackers.wandb
    for enabled, package, build in (
            (tensorboard, "tensorboard", lambda: TensorBoardTracker(output_dir=output_dir)),
            (m.enabled, "mlflow", lambda: MLflowTracker(
                config=config, output_dir=output_dir, tracking_uri=m.tracking_uri,
                experiment=m.experiment, run_name=m.run_name, artifacts=m.artifacts)),
            (w.enabled, "wandb", lambda: WandbTracker(
                config=config, output_dir=output_dir, project=w.project, entity=w.entity,
                mode=w.mode, run_name=w.run_name))):
        if not enabled:
            continue
        try:
            out.append(build())
        except ImportError:
            logger.warning(missing_extra(package, package if package == "tensorboard"
                                         else f"trackers.{package}"))
    return out
