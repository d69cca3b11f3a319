"""``resdet``: the one command, its subcommands, and ``--version``.

    resdet train --config quickstart
    resdet eval --weights output/quickstart/best.pth
    resdet infer --weights output/quickstart/best.pth --input photo.jpg --output out/
    resdet configs
    resdet <subcommand> --help

:data:`COMMANDS` is the one table of subcommands: a name (two words for a group, ``convert
torchvision``) and the module of ``detection.cli`` whose ``main(argv, prog)`` runs it. The
one-line summaries ``resdet --help`` prints are the first lines of those modules' docstrings,
read from their source (nothing heavy is imported to print the list).
"""
from __future__ import annotations

import ast
import difflib
import importlib
import os
import sys
from pathlib import Path
from typing import Optional

from ..errors import EXIT_USER_ERROR

__all__ = ["COMMANDS", "GROUPS", "command_module", "main", "summary", "version"]

#: subcommand -> module under ``detection.cli``; a two-word name belongs to a group
COMMANDS: dict[str, str] = {
    "train": "train",
    "eval": "eval",
    "infer": "infer",
    "export": "export",
    "benchmark": "benchmark",
    "analyze": "analyze",
    "report": "report",
    "compare": "compare",
    "plot-logs": "plot_logs",
    "pretrain": "pretrain",
    "configs": "configs",
    "convert torchvision": "convert_torchvision",
    "convert msra": "convert_msra",
    "convert dataset": "convert_dataset",
    "data check": "data_check",
    "data browse": "data_browse",
    "data synthetic": "data_synthetic",
}
#: groups and what they hold, as ``resdet --help`` shows them
GROUPS: dict[str, str] = {
    "convert": "convert weights (torchvision, MSRA) or annotations (VOC, YOLO, COCO)",
    "data": "look at a dataset before training: check, browse, or generate one",
}


def version() -> str:
    """The installed distribution's version (a checkout without an install: setup.cfg's)."""
    from importlib import metadata

    try:
        return metadata.version("resdet")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def command_module(name: str):
    """The module of subcommand ``name`` (imported now)."""
    return importlib.import_module(f"detection.cli.{COMMANDS[name]}")


def summary(name: str) -> str:
    """The first line of the subcommand's module docstring, read without importing it."""
    source = Path(__file__).with_name(f"{COMMANDS[name]}.py").read_text(encoding="utf-8")
    doc = ast.get_docstring(ast.parse(source)) or ""
    return doc.split("\n", 1)[0].rstrip(".")


def _usage(group: Optional[str] = None) -> str:
    names = [n for n in COMMANDS if (n.split()[0] == group if group else True)]
    lines = [f"usage: resdet {group + ' ' if group else ''}<subcommand> [options]", ""]
    if group is None:
        lines[1:1] = ["       resdet --version", ""]
        lines.append("Faster R-CNN with ResNet and VGG-16 backbones: train, evaluate, deploy.")
        lines.append("")
    lines.append("subcommands:")
    shown: set[str] = set()
    for name in names:
        head = name.split()[0]
        if group is None and " " in name:
            if head not in shown:
                shown.add(head)
                subs = ",".join(n.split()[1] for n in COMMANDS if n.split()[0] == head)
                lines.append(f"  {head + ' {' + subs + '}':<34} {GROUPS[head]}")
            continue
        lines.append(f"  {name.split()[-1] if group else name:<34} {summary(name)}")
    lines += ["", f"`resdet {group + ' ' if group else ''}<subcommand> --help` describes one."]
    return "\n".join(lines)


def _unknown(word: str, choices: list[str], where: str) -> int:
    close = difflib.get_close_matches(word, choices, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    print(f"error: {where}: unknown subcommand '{word}'{hint} (see --help)", file=sys.stderr)
    return EXIT_USER_ERROR


def main(argv: Optional[list[str]] = None) -> int:
    """``resdet ARGS``: run the subcommand named by the first word(s) of ``argv``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no PyPI version check (2 s offline)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else EXIT_USER_ERROR
    if argv[0] == "--version":
        print(f"resdet {version()}")
        return 0
    heads = sorted({n.split()[0] for n in COMMANDS})
    head = argv[0]
    if head not in heads:
        return _unknown(head, heads, "resdet")
    if head in GROUPS:
        if len(argv) < 2 or argv[1] in ("-h", "--help"):
            print(_usage(head))
            return 0 if len(argv) > 1 else EXIT_USER_ERROR
        subs = [n.split()[1] for n in COMMANDS if n.split()[0] == head]
        if argv[1] not in subs:
            return _unknown(argv[1], subs, f"resdet {head}")
        name, rest = f"{head} {argv[1]}", argv[2:]
    else:
        name, rest = head, argv[1:]
    return command_module(name).main(rest, prog=f"resdet {name}")

