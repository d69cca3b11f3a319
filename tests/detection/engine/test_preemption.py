"""engine/preemption.py: stop signals while a run watches for them, and forked workers."""
from __future__ import annotations

import os
import signal
import time

import torch

from detection.engine.preemption import (PreemptionWatcher, defer_to_main_process,
                                         main_process_watching)


def _worker() -> int:
    """A forked process set up as a DataLoader worker is, waiting."""
    pid = os.fork()
    if pid == 0:
        try:
            defer_to_main_process()
            time.sleep(30)
        finally:
            os._exit(0)
    time.sleep(0.3)  # its handlers are in place
    return pid


def _ended_by(pid: int, timeout: float = 5.0):
    """The signal that ended ``pid`` within ``timeout`` s, or None if it still runs."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
        time.sleep(0.05)
    return None


def test_a_worker_outlives_a_stop_signal_only_while_its_main_process_watches():
    """SLURM signals every process of a job: a worker waits for the main process, which
    stops after its step; but multiprocessing's SIGTERM at exit (nobody watching) ends it."""
    pid = _worker()
    assert not main_process_watching()
    os.kill(pid, signal.SIGTERM)
    assert _ended_by(pid) == signal.SIGTERM
    with PreemptionWatcher(device=torch.device("cpu")) as watcher:
        assert main_process_watching()
        pid = _worker()
        try:
            for sig in (signal.SIGTERM, signal.SIGUSR1):
                os.kill(pid, sig)
                assert _ended_by(pid, timeout=0.5) is None  # still there
            os.kill(os.getpid(), signal.SIGUSR1)  # the main process itself: recorded only
            assert watcher.received == signal.SIGUSR1 and watcher.stop_requested()
            assert watcher.reason == "SIGUSR1"
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    assert not main_process_watching()
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # restored
