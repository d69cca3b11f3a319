"""Pre-emption: when the scheduler asks a run to stop, stop after the current step, saved.

Schedulers warn before they kill: SLURM sends SIGTERM on pre-emption or ``scancel`` (then
SIGKILL after the cluster's ``KillWait``, 30 s by default) and, when asked with
``--signal=[B:]USR1@<seconds>``, SIGUSR1 that many seconds before the time limit; Kubernetes
sends SIGTERM to the container's first process, then SIGKILL after the pod's
``terminationGracePeriodSeconds`` (30 s by default); ``torchrun`` forwards SIGTERM (and SIGUSR1
with ``--signals-to-handle``) to its workers and kills them after ``--shutdown-timeout`` seconds
(30 by default).

:class:`PreemptionWatcher` turns SIGTERM and SIGUSR1 into a flag that the training loop polls
once per step. Under ``torch.distributed`` the flag is agreed on by an all-reduce (max) of one
integer per step, so every process stops after the same iteration even when only some of them
got the signal. The trainer then writes ``last.pth`` (atomically, unless the step just wrote
it), logs what it did and raises :class:`Preempted`; the tools exit with status
:data:`EXIT_PREEMPTED`.

**Why 75.** ``EX_TEMPFAIL`` of ``sysexits.h``: "a temporary failure ... the user is invited to
retry". It tells a wrapper or a scheduler "saved, stopped, resume me" apart from 0 (done), 1 (a
bug), 2 (a user error) and 137 / 143 (killed before it could save). SLURM requeues on it where
``RequeueExit=75`` is set (``tools/slurm_train.sh`` requeues itself with ``scontrol requeue``);
a Kubernetes Job retries it without counting a failure with a ``podFailurePolicy`` rule
``{action: Ignore, onExitCodes: {operator: In, values: [75]}}`` (next to the usual
``onPodConditions: [{type: DisruptionTarget}]`` rule for evictions); ``torchrun`` reports any
non-zero worker status as a failed worker group, so a launcher script must look at the signal it
forwarded, as ``tools/slurm_train.sh`` does. See docs/long_runs.md.
"""
from __future__ import annotations

import mmap
import os
import signal
import threading
from types import FrameType
from typing import Any, Optional

import torch

from . import distributed as du

__all__ = ["EXIT_PREEMPTED", "Preempted", "PreemptionWatcher", "STOP_SIGNALS",
           "defer_to_main_process", "main_process_watching"]

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: see the module docstring
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1")
                     if hasattr(signal, name))  # Windows has no SIGUSR1
# one byte shared with every process forked from this one (DataLoader workers): 1 while a
# PreemptionWatcher is active here
_WATCHING = mmap.mmap(-1, 1)


def main_process_watching() -> bool:
    """In a forked worker: whether its main process is watching for stop signals now."""
    return _WATCHING[0] == 1


def defer_to_main_process(signals: tuple[int, ...] = STOP_SIGNALS) -> None:
    """For a forked worker (DataLoader): a stop signal is ignored while the main process
    watches for it (SLURM signals every process of a job; the main process stops after its step
    and then shuts its workers down, while a worker dying first would fail that step), and
    ends the worker as by default otherwise (say ``multiprocessing`` terminating it at exit)."""
    for sig in signals:
        signal.signal(sig, _deferred)


def _deferred(signum: int, frame: Optional[FrameType]) -> None:
    if not main_process_watching():
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


class Preempted(Exception):
    """The run stopped on a scheduler's signal after saving ``last.pth``; the message says at
    which iteration and how to continue."""

    exit_status = EXIT_PREEMPTED


class PreemptionWatcher:
    """Records SIGTERM / SIGUSR1 while active (``with watcher: ...``), restoring the previous
    handlers after; :meth:`stop_requested` (call it on every process, once per step) says
    whether any process got one. Outside the main thread (where Python cannot set handlers) it
    watches nothing."""

    def __init__(self, *, device: torch.device, signals: tuple[int, ...] = STOP_SIGNALS):
        self.device, self.signals = device, signals
        self.received: Optional[int] = None
        self._previous: dict[int, Any] = {}
        self._was_watching = 0

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        # nothing else here: printing from a handler can re-enter a write to the same stream
        if self.received is None:
            self.received = signum

    def __enter__(self) -> "PreemptionWatcher":
        self.received = None
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
            self._was_watching, _WATCHING[0] = _WATCHING[0], 1
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous:
            _WATCHING[0] = self._was_watching
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def stop_requested(self) -> bool:
        """Whether this or any other process got a stop signal (the same answer on all)."""
        return du.any_process(self.received is not None, self.device)

    @property
    def reason(self) -> str:
        """The signal's name, or what made this process stop without one."""
        if self.received is None:
            return "a stop signal to another process"
        return signal.Signals(self.received).name
