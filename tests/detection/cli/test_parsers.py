"""Every ``resdet`` subcommand's parser, walked: one flag style (issue 24).

The same concept has the same flag, default and help everywhere (``detection.cli.OPTIONS``);
a flag that means something else in another subcommand is listed in ``PER_COMMAND`` with what
differs. Every option has help, ``--output`` says whether it is a folder or a file, ``--device``
defaults to ``auto``, a subcommand that reads a config also takes ``--set`` and
``--print-config``, and no default is a path of this machine.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from detection.cli import OPTIONS
from detection.cli.main import COMMANDS, command_module

REPO = Path(__file__).resolve().parents[3]
#: flags whose meaning is the subcommand's own (so help and default differ), and why
PER_COMMAND = {
    "--output": "a folder or a file of the subcommand's own",
    "--score-thr": "infer: what is kept and drawn; export: inside the graph; analyze and report "
                   "share theirs (OPTIONS)",
    "--annotations": "infer: image ids for --save-coco; convert dataset: its input",
    "--images": "convert dataset: its input",
    "--batch": "infer: images per forward pass; benchmark: the timed batch",
    "--onnx": "infer: the model to run; benchmark: a model to time beside PyTorch",
    "--classes": "infer: classes to keep; convert dataset: a names file",
    "--labels": "convert dataset: input or output", "--names": "convert dataset: input or output",
    "--root": "convert dataset: a VOC root; data synthetic: where to write",
    "--seed": "data synthetic: the set; data browse: which images",
    "--split": "convert dataset: a VOC split file; data browse: train or test",
    "--backend": "benchmark: a comma-separated list of runtimes timed side by side; infer and "
                 "eval share one (OPTIONS)",
}


def _parsers() -> dict[str, argparse.ArgumentParser]:
    """``{"resdet <name>": parser}`` of every subcommand, groups of subparsers walked."""
    found = {}

    def walk(parser, name):
        found[name] = parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, subparser in action.choices.items():
                    walk(subparser, f"{name} {sub}")
    for name in COMMANDS:
        walk(command_module(name).build_parser(f"resdet {name}"), f"resdet {name}")
    return found


PARSERS = _parsers()


def _options(parser) -> dict[str, argparse.Action]:
    return {a.option_strings[0]: a for a in parser._actions
            if a.option_strings and a.dest != "help"}


def test_every_subcommand_of_the_table_has_a_parser():
    assert len(COMMANDS) == 17 and len(PARSERS) == 20  # + convert dataset's three formats
    assert {"resdet train", "resdet convert torchvision", "resdet data check",
            "resdet data browse", "resdet configs", "resdet plot-logs"} <= set(PARSERS)


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_every_option_has_help_and_no_machine_path_as_default(name):
    machine = [str(REPO), os.getcwd(), str(Path.home())]
    for flag, action in _options(PARSERS[name]).items():
        if action.help == argparse.SUPPRESS:
            assert flag == "--score-thresh" and name == "resdet export"  # the old spelling
            continue
        assert action.help and len(action.help) > 10, (name, flag)
        default = str(action.default)
        assert not any(m in default for m in machine) and not default.startswith("/"), flag
    for action in PARSERS[name]._actions:
        if not action.option_strings and action.dest != "command":
            assert action.help, (name, action.dest)


def test_shared_options_are_equal_everywhere():
    seen: dict[str, list[tuple[str, argparse.Action]]] = {}
    for name, parser in PARSERS.items():
        for flag, action in _options(parser).items():
            seen.setdefault(flag, []).append((name, action))
    shared = {f: uses for f, uses in seen.items() if len(uses) > 1 and f not in PER_COMMAND}
    assert {"--config", "--set", "--print-config", "--device", "--weights"} <= set(shared)
    for flag, uses in shared.items():
        forms = {(tuple(a.option_strings), str(a.default), a.help, a.metavar) for _, a in uses}
        assert len(forms) == 1, (flag, [n for n, _ in uses], forms)
        if flag in OPTIONS:
            (_, default, help_text, _), = forms
            assert help_text == OPTIONS[flag]["help"]
            if "default" in OPTIONS[flag]:
                assert default == str(OPTIONS[flag]["default"])
    # analyze and report read finished runs: their threshold is the shared one
    for name in ("resdet analyze", "resdet report"):
        assert _options(PARSERS[name])["--score-thr"].help == OPTIONS["--score-thr"]["help"]
    # what runs the model: infer and eval share it; precision and threads wherever a model runs
    for name in ("resdet infer", "resdet eval"):
        assert _options(PARSERS[name])["--backend"].help == OPTIONS["--backend"]["help"]
    for name in ("resdet infer", "resdet eval", "resdet benchmark"):
        for flag in ("--amp", "--threads"):
            assert _options(PARSERS[name])[flag].help == OPTIONS[flag]["help"], (name, flag)


def test_one_spelling_of_the_score_threshold_and_the_device():
    for name, parser in PARSERS.items():
        options = _options(parser)
        visible = [f for f, a in options.items() if a.help != argparse.SUPPRESS]
        assert not [f for f in visible if "thresh" in f or "_" in f], name
        if "--device" in options:
            assert options["--device"].default == "auto"
    takes_device = {n for n, p in PARSERS.items() if "--device" in _options(p)}
    assert {"resdet infer", "resdet eval", "resdet benchmark"} <= takes_device
    assert _options(PARSERS["resdet export"])["--score-thresh"].dest == "score_thr"


def test_a_config_comes_with_set_and_print_config():
    reads_config = {n for n, p in PARSERS.items() if "--config" in _options(p)}
    assert {"resdet infer", "resdet export", "resdet eval", "resdet benchmark", "resdet train",
            "resdet data check", "resdet data browse"} <= reads_config
    for name in reads_config:
        assert {"--set", "--print-config"} <= set(_options(PARSERS[name])), name


@pytest.mark.parametrize("name", sorted(n for n, p in PARSERS.items()
                                        if "--output" in _options(p)))
def test_output_says_folder_or_file(name):
    action = _options(PARSERS[name])["--output"]
    kind = {"DIR": "folder", "FILE": "file"}[action.metavar]
    assert kind in action.help, (name, action.help)


def test_help_prints_the_whole_description(capsys):
    """``resdet eval --help`` printed only its first line, cut mid-sentence (issue 24)."""
    import detection.cli.eval as module

    with pytest.raises(SystemExit):
        module.build_parser("resdet eval").parse_args(["--help"])
    out = capsys.readouterr().out
    for line in module.__doc__.strip().splitlines():
        assert line.strip() in out
