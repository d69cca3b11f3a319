"""What every ``resdet`` subcommand shares: one error style, the shared options, the run
folder's ``log.txt``.

A subcommand (``detection/cli/<name>.py``, also run by ``tools/<name>.py``) is ``argparse`` plus
library calls. Wrapped in :func:`tool_main`, its ``main(argv) -> int`` reports every **user
error** (a path, a config value, the data, the
weights) as one line on stderr and exit status 2, with no traceback::

    error: data.train.images: folder not found: datasets/coco/train2017

Anything else is a bug in this code: its traceback is printed and the exit status is 1. A run
stopped by a scheduler's signal after saving (``Preempted``) exits with status 75
(``EX_TEMPFAIL``: resume it; ``detection/engine/preemption.py``).
``RESDET_TRACEBACK=1`` in the environment shows the traceback of user errors too. Output copied
to a run's ``log.txt`` (:func:`tee_output`) includes these last lines.

User errors are the exceptions library code raises for bad input: ``ValueError`` (with its
subclasses ``ConfigError`` and ``DatasetError``), ``OSError`` (files: ``FileNotFoundError``,
``FileExistsError``, ...), ``WeightsError`` and ``CheckpointError`` (weights that cannot be
read or do not fit), ``pickle.UnpicklingError`` (a ``.pkl`` or CIFAR batch that is damaged or
holds code), ``NonFiniteLossError`` (a diverged run) and ``UserError`` (what a tool finds
itself). So library code signals a
user's mistake by raising one of these with a message naming the file, key or id at fault;
nothing else is needed for the tool to print it well.

    from detection.cli import ArgumentParser, tool_main

    def build_parser(prog: str | None = None) -> ArgumentParser:
        return ArgumentParser(prog=prog, description=__doc__)

    @tool_main
    def main(argv: list[str] | None = None, prog: str | None = None) -> int:
        args = build_parser(prog).parse_args(argv)
        ...
        return 0

**Shared options.** The same concept has the same flag, default and help in every subcommand:
:data:`OPTIONS` holds them and :func:`add_option` adds one (``tests/detection/cli/test_parsers.py``
walks every parser and holds them equal).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import io
import os
import pickle
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, Optional, TextIO, Union

from backbones.weights import WeightsError

from ..engine.checkpoint import CheckpointError
from ..engine.preemption import Preempted
from ..engine.trainer import NonFiniteLossError
from ..errors import EXIT_BUG, EXIT_USER_ERROR, MissingExtraError, UserError

__all__ = [
    "ArgumentParser", "MissingExtraError", "OPTIONS", "USER_ERRORS", "UserError", "add_option",
    "add_run_arguments", "open_run", "format_error", "run_config", "tee_output", "tool_main"]

#: Exceptions a tool reports as ``error: <message>`` with exit status 2 (see the module doc).
USER_ERRORS: tuple[type[BaseException], ...] = (
    UserError, ValueError, OSError, WeightsError, CheckpointError, pickle.UnpicklingError,
    NonFiniteLossError)


def format_error(error: BaseException) -> str:
    """``error: <message>`` on one line (a multi-line message is joined with spaces)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "error: " + (" ".join(lines) or type(error).__name__)


def tool_main(main: Callable[..., int]) -> Callable[..., int]:
    """Decorate a tool's ``main``: user errors become one ``error:`` line and exit status 2,
    bugs a traceback and exit status 1; the output copies of :func:`tee_output` end with it."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except Preempted as e:  # stopped on a scheduler's signal, last.pth written (logged)
            return e.exit_status
        except USER_ERRORS as e:
            sys.stdout.flush()
            if os.environ.get("RESDET_TRACEBACK"):
                traceback.print_exc()
            print(format_error(e), file=sys.stderr)
            return EXIT_USER_ERROR
        except Exception:  # a bug: the traceback, also into log.txt
            sys.stdout.flush()
            traceback.print_exc()
            return EXIT_BUG
        finally:
            while _TEES:
                _TEES.pop()()

    return wrapper


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose usage errors are one ``error:`` line (exit status 2)
    like every other user error, pointing at ``--help`` instead of printing the usage; the
    description (a subcommand's module docstring) is printed whole, as written."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        print(f"error: {self.prog}: {message} (see --help)", file=sys.stderr)
        self.exit(EXIT_USER_ERROR)


class _Tee(io.TextIOBase):
    """Writes to a console stream and to the log file."""

    def __init__(self, stream: TextIO, log: TextIO) -> None:
        self.stream, self.log = stream, log

    def write(self, text: str) -> int:
        self.stream.write(text)
        if not self.log.closed:
            self._to_log(self.log.write, text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()
        if not self.log.closed:
            self._to_log(self.log.flush)

    def _to_log(self, method: Callable, *args) -> None:
        """A log file that cannot be written (a full disk) stops being written; the console
        still shows everything, the tool's own error line included."""
        try:
            method(*args)
        except OSError:
            with contextlib.suppress(OSError):
                self.log.close()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", "utf-8")


_TEES: list[Callable[[], None]] = []


def tee_output(path: Union[str, os.PathLike], *, append: bool = False) -> Callable[[], None]:
    """Copy everything this process prints (stdout and stderr, the ``detection`` logger
    included) into ``path`` from now on: a run's ``log.txt``.

    Returns a function that restores the streams and closes the file; a :func:`tool_main`
    tool calls it when ``main`` returns, after printing its error if there is one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    log = open(path, "a" if append else "w", encoding="utf-8", buffering=1)
    saved: tuple[TextIO, TextIO] = (sys.stdout, sys.stderr)
    sys.stdout, sys.stderr = _Tee(sys.stdout, log), _Tee(sys.stderr, log)  # type: ignore

    def restore() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = saved
        log.close()

    _TEES.append(restore)
    return restore


#: The options several subcommands take: flag -> ``add_argument`` keywords, the same
#: everywhere (help text included). ``--output`` is not here: each help says whether it is a
#: folder or a file, and what goes there.
OPTIONS: dict[str, dict] = {
    "--config": dict(metavar="FILE_OR_NAME",
                     help="a YAML config file, or a shipped config by name, with or without "
                          ".yaml (e.g. quickstart, coco/faster_rcnn_R_50_FPN_1x; `resdet "
                          "configs` lists them)"),
    "--set": dict(nargs="+", default=[], metavar="KEY=VALUE", action="extend",
                  help="override config keys, e.g. solver.max_iter=1000 seed=1"),
    "--print-config": dict(action="store_true", help="print the resolved config and exit"),
    "--device": dict(default="auto",
                     help="auto (a GPU when there is one, else the CPU), cpu, cuda or cuda:N "
                          "(default: auto)"),
    "--weights": dict(metavar="CKPT",
                      help="a checkpoint of resdet train (last.pth, best.pth) or of resdet "
                           "convert torchvision"),
    # reading a finished run (analyze, report): its test set, and how detections are counted
    "--annotations": dict(metavar="JSON", help="COCO json of the test images, for every run "
                                               "(default: each run's config)"),
    "--images": dict(metavar="DIR", help="folder of the test images, for every run (default: "
                                         "each run's config)"),
    "--score-thr": dict(type=float, default=0.5,
                        help="detections scoring below this are left out of the confusion "
                             "matrix (and of the report's images at first) (default: 0.5)"),
    "--evaluator": dict(choices=("faster", "pycocotools"), default="faster",
                        help="COCO evaluation code: faster (faster-coco-eval) or pycocotools; "
                             "equal numbers (default: faster)"),
    # what runs the model, and in which arithmetic (detection/predictor.py, detection/precision.py)
    "--backend": dict(choices=("torch", "onnxruntime", "openvino"), default="torch",
                      help="what runs the model: torch (a checkpoint), onnxruntime (an .onnx "
                           "file of resdet export) or openvino (.xml or .onnx) (default: torch)"),
    "--amp": dict(choices=("auto", "off", "bf16"), default=None,
                  help="inference arithmetic: auto (bf16 autocast on a CPU with native bf16, "
                       "else float32), bf16, or off (float32) (default: the config's test.amp, "
                       "auto)"),
    "--threads": dict(type=int, metavar="N",
                      help="CPU threads of the model: torch, ONNX Runtime or OpenVINO "
                           "(default: their own choice, one per core)"),
}


def add_option(parser: argparse.ArgumentParser, flag: str, **changes) -> argparse.Action:
    """Add the shared option ``flag`` (:data:`OPTIONS`); ``changes`` may only make it required
    (``required=True``), so that its flag, default and help stay the same everywhere."""
    if set(changes) - {"required"}:
        raise TypeError(f"{flag}: only required= may change, got {sorted(changes)}")
    return parser.add_argument(flag, **OPTIONS[flag], **changes)


def add_config_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    """``--config``, ``--set`` and ``--print-config``: every subcommand that reads a config."""
    add_option(parser, "--config", required=required)
    add_option(parser, "--set")
    add_option(parser, "--print-config")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config``, ``--set``, ``--output``, ``--resume`` | ``--force`` and ``--print-config``:
    the options of every subcommand that trains into a run folder (train, pretrain)."""
    add_config_options(parser, required=True)
    parser.add_argument("--output", metavar="DIR",
                        help="the run's output folder (default: the config's output_dir)")
    runs = parser.add_mutually_exclusive_group()
    runs.add_argument("--resume", action="store_true",
                      help="continue from <output_dir>/last.pth")
    runs.add_argument("--force", action="store_true",
                      help="start over in an output folder that holds a previous run (its run "
                           "files are deleted)")


def open_run(output_dir: Union[str, os.PathLike], *, resume: bool, force: bool) -> None:
    """Start a run in ``output_dir`` (after ``init_distributed``): refuse a folder holding a
    previous run unless ``resume`` / ``force`` (``prepare_output_dir``), copy all output to
    ``log.txt`` (main process) and set up the ``detection`` logger."""
    from ..engine import distributed as du
    from ..engine.runlog import setup_logger
    from ..engine.run import prepare_output_dir

    deleted = prepare_output_dir(output_dir, resume=resume, force=force,
                                 delete=du.is_main_process())
    du.synchronize()
    if du.is_main_process():  # log.txt: everything printed, up to the last error line
        tee_output(Path(output_dir) / "log.txt", append=resume)
    logger = setup_logger(du.get_rank())
    if deleted:
        logger.info("--force: deleted the previous run's %s in %s", ", ".join(deleted),
                    output_dir)


def run_config(config: Optional[str], weights: Optional[str], overrides: list[str]):
    """The config a command on a checkpoint runs with: ``config`` (a file or a shipped name)
    with ``overrides``, or without it the config stored in ``weights`` (with ``overrides``)."""
    from ..config import checkpoint_config, load_config
    from ..engine.checkpoint import load_checkpoint

    if config:
        return load_config(config, overrides)
    if not Path(weights).is_file():
        raise FileNotFoundError(f"weights file not found: {weights}")
    return checkpoint_config(load_checkpoint(weights), weights, overrides)
