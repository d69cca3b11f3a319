"""detection/cli/common.py: one error style for every subcommand, and the run's log.txt."""

from __future__ import annotations

import errno
import io
import logging
import sys

import pytest

from detection.cli import ArgumentParser, UserError, format_error, tee_output, tool_main
from detection.config import ConfigError
from detection.data.base import DatasetError
from detection.engine.checkpoint import CheckpointError
from detection.engine.runlog import setup_logger


def _tool(error: BaseException | None):
    @tool_main
    def main(argv=None) -> int:
        print("working")
        if error is not None:
            raise error
        return 0
    return main


@pytest.mark.parametrize("error", [
    ConfigError("config file not found: a.yaml"), DatasetError("x.json: bad"),
    FileNotFoundError("no eval.json at run/eval.json"), CheckpointError("cannot read c.pth"),
    UserError("needs matplotlib")])
def test_user_errors_are_one_error_line_and_exit_status_2(error, capsys):
    assert _tool(error)() == 2
    out, err = capsys.readouterr()
    assert out == "working\n" and err == f"error: {error}\n"


def test_a_bug_keeps_its_traceback_and_exit_status_1(capsys):
    assert _tool(KeyError("boxes"))() == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):") and "KeyError: 'boxes'" in err


def test_traceback_of_user_errors_on_request(capsys, monkeypatch):
    monkeypatch.setenv("RESDET_TRACEBACK", "1")
    assert _tool(ValueError("bad value"))() == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.endswith("error: bad value\n")


def test_multi_line_messages_are_joined():
    error = RuntimeError("Error(s) in loading state_dict:\n\tMissing key(s): a.\n\n  Unexpected: b")
    assert format_error(error) == ("error: Error(s) in loading state_dict: Missing key(s): a. "
                                   "Unexpected: b")


def test_argument_errors_are_one_line(capsys):
    parser = ArgumentParser(prog="train.py")
    parser.add_argument("--config", required=True)
    with pytest.raises(SystemExit) as info:
        parser.parse_args([])
    assert info.value.code == 2
    assert capsys.readouterr().err == ("error: train.py: the following arguments are required: "
                                       "--config (see --help)\n")


def test_log_txt_holds_everything_printed_up_to_the_error(tmp_path, capsys):
    logger = setup_logger()

    @tool_main
    def main() -> int:
        tee_output(tmp_path / "run" / "log.txt")
        print("to stdout")
        print("to stderr", file=sys.stderr)
        logger.info("from the logger")
        logging.getLogger("detection.data.coco").warning("from a module logger")
        raise DatasetError("data.train.images: folder not found: nowhere")

    assert main() == 2
    log = (tmp_path / "run" / "log.txt").read_text().splitlines()
    assert log[:2] == ["to stdout", "to stderr"]
    assert log[2].endswith("] from the logger") and log[3].endswith("] from a module logger")
    assert log[4:] == ["error: data.train.images: folder not found: nowhere"]
    print("after")  # the streams are restored: nothing more goes to the file
    assert len((tmp_path / "run" / "log.txt").read_text().splitlines()) == 5
    assert capsys.readouterr().out.endswith("after\n")


def test_a_log_txt_on_a_full_disk_stops_being_copied_and_the_console_goes_on(tmp_path,
                                                                            capsys):
    class FullFile(io.StringIO):  # what a file on a full disk does on write and flush
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

        flush = write

    logger = setup_logger()

    @tool_main
    def main() -> int:
        tee_output(tmp_path / "log.txt")
        sys.stdout.log = sys.stderr.log = FullFile()
        print("to stdout")
        logger.info("from the logger")
        raise OSError("cannot write out/last.pth: no space left on device")

    assert main() == 2
    out, err = capsys.readouterr()
    assert out.startswith("to stdout\n") and out.endswith("] from the logger\n")
    assert err == "error: cannot write out/last.pth: no space left on device\n"  # no traceback
