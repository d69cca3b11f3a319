"""Progress lines and the metrics log."""
from __future__ import annotations

import logging
import re
import sys

import pytest

from detection.engine.runlog import LOGGER_NAME, Progress


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


def test_free_memory_goes_back_to_the_system():
    """100 MB of 1 kB blocks freed under a block still in use stay resident (the C heap only
    shrinks from its top) until ``release_free_memory``."""
    import os

    from detection.benchmark.soak import process_memory
    from detection.engine.runlog import release_free_memory

    blocks = [bytes(1000) + bytes([i % 256]) for i in range(100_000)]  # malloc'd, not pymalloc
    top = bytes(1000) + b"top"  # allocated last: the heap cannot shrink below it
    resident = process_memory(os.getpid())["rss"]
    del blocks
    assert process_memory(os.getpid())["rss"] > resident - 20
    if not release_free_memory():
        pytest.skip("no malloc_trim in this C library")
    assert process_memory(os.getpid())["rss"] < resident - 80
    assert top.endswith(b"top")
