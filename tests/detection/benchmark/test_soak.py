"""detection/benchmark/soak.py: the memory readings, and the soak task of resdet benchmark."""
from __future__ import annotations

import os
import time

import numpy as np

from detection.benchmark.soak import child_pids, growth, process_memory

def test_a_forked_childs_private_memory_grows_as_the_parent_writes_what_they_shared():
    """What ``uss`` and ``pss`` mean, on a fork of this process holding 64 MiB it shares."""
    shared = np.ones(64 * 2**20 // 8)
    pid = os.fork()
    if pid == 0:  # the child only waits
        time.sleep(10)
        os._exit(0)
    try:
        assert child_pids(os.getpid()) == [pid]
        time.sleep(0.2)
        before = process_memory(pid)
        shared += 1  # the parent writes: each page it shared becomes the child's alone
        after = process_memory(pid)
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    assert after["rss"] == before["rss"]  # top sees no change
    assert 63 < after["uss"] - before["uss"] < 65.5
    assert 31 < after["pss"] - before["pss"] < 33.5  # was split in two, now the child's


def test_this_process_rss_agrees_with_proc_status():
    with open("/proc/self/status") as f:
        vm_rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
    mem = process_memory(os.getpid())
    assert abs(mem["rss"] - vm_rss) < 4 and 0 < mem["uss"] <= mem["pss"] <= mem["rss"]
    assert process_memory(2**22 + 12345) is None  # no such process


def test_growth_sums_the_workers():
    record = lambda step, a, b: {"phase": "train", "step": step,  # noqa: E731
                                 "main": {"rss": a, "pss": a, "uss": a},
                                 "workers": [{"rss": b, "pss": b, "uss": b}] * 2}
    g = growth([record(100, 10.0, 1.0), record(200, 12.5, 3.0)], ("train",))
    assert g["main_rss"] == [10.0, 12.5] and g["workers_uss"] == [2.0, 6.0]
    assert (g["first_step"], g["last_step"], g["workers"]) == (100, 200, [2, 2])
