"""Progress lines, and MetricsWriter's TensorBoard scalars read back from the event files."""
from __future__ import annotations

import logging
import re
import sys

import pytest

from detection.engine.runlog import LOGGER_NAME, MetricsWriter, Progress


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)

    def messages(self, level=logging.INFO):
        return [r.getMessage() for r in self.records if r.levelno == level]


@pytest.fixture
def log_lines():
    """The ``detection`` logger's records (it may not propagate to pytest's caplog)."""
    logger = logging.getLogger(LOGGER_NAME)
    handler, level = _Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_progress_lines_with_eta(log_lines):
    progress = Progress("inference", 4, period_s=0)
    for _ in range(4):
        progress.step(data_time=0.5)
    lines = log_lines.messages()
    assert [line.split()[1] for line in lines] == ["1/4", "2/4", "3/4", "4/4"]
    pattern = r"inference \d/4  \d+\.\d{3} s/it  data 0\.500 s  eta \d:\d\d:\d\d  elapsed " \
              r"\d:\d\d:\d\d"
    assert all(re.fullmatch(pattern, line) for line in lines), lines
    assert lines[-1].split("eta ")[1].startswith("0:00:00")  # nothing left
    assert progress.done == 4 and progress.elapsed >= 0


def test_progress_throttles_and_stays_quiet_off_rank_0(log_lines):
    progress = Progress("inference", 50, period_s=3600)
    for _ in range(50):
        progress.step()
    assert [line.split()[1] for line in log_lines.messages()] == ["50/50"]  # only the last
    unknown = Progress("inference", None, period_s=0)
    unknown.step()
    assert log_lines.messages()[-1].startswith("inference 1/?") \
        and "eta" not in log_lines.messages()[-1]
    quiet = Progress("inference", 3, period_s=0, enabled=False)
    for _ in range(3):
        quiet.step()
    assert len(log_lines.messages()) == 2


def _scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_scalars_read_back(tmp_path, log_lines):
    pytest.importorskip("tensorboard")
    train = [{"type": "train", "iteration": i, "lr": 0.01 * i, "loss": 1.0 / i,
              "loss_cls": 0.6 / i, "loss_box": 0.4 / i, "time": 0.25, "data_time": 0.01}
             for i in (1, 2)]
    evaluation = {"type": "eval", "iteration": 2, "mAP": 41.5, "mAP50": 62.25,
                  "mAP_l": float("nan"), "per_category": {"cat": 30.0, "dog": float("nan")}}
    with MetricsWriter(tmp_path) as writer:
        for record in (*train, evaluation):
            writer.write(record)
    scalars = _scalars(tmp_path / "tensorboard")
    for key in ("lr", "loss", "loss_cls", "loss_box", "time", "data_time"):
        assert scalars[f"train/{key}"] == [(r["iteration"], pytest.approx(r[key], rel=1e-6))
                                           for r in train], key
    assert scalars["eval/mAP"] == [(2, 41.5)] and scalars["eval/mAP50"] == [(2, 62.25)]
    assert scalars["eval/per_category/cat"] == [(2, 30.0)]
    assert "eval/mAP_l" not in scalars and "eval/per_category/dog" not in scalars  # NaN
    assert not log_lines.messages(logging.WARNING)


def test_missing_tensorboard_warns_once_naming_the_extra(tmp_path, monkeypatch, log_lines):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import -> ImportError
    with MetricsWriter(tmp_path) as writer:
        for i in range(3):
            writer.write({"type": "train", "iteration": i, "loss": 1.0})
    warnings = log_lines.messages(logging.WARNING)
    assert len(warnings) == 1 and 'pip install -e ".[tensorboard]"' in warnings[0]
    assert "tensorboard: false" in warnings[0]
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3  # the run goes on
    assert not (tmp_path / "tensorboard").exists()
    MetricsWriter(tmp_path / "off", tensorboard=False).close()  # not requested: no warning
    assert len(log_lines.messages(logging.WARNING)) == 1
