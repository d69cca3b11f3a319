"""The floors of docs/ARCHITECTURE.md, read from the source: which package may import which.

Every module is parsed (not imported), so a floor is held even for an import inside a function,
and a failure names the file, the line and the import.
"""
import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """``(line, absolute module name)`` of every import in ``path`` (relative ones resolved)."""
    name = _module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
    return found


def violations(folder: str, allowed) -> list[str]:
    """``file:line imports X`` for every import of ``backbones``/``detection`` under ``folder``
    that ``allowed(importing_module, imported_module)`` refuses."""
    bad = []
    for path in sorted((REPO / folder).rglob("*.py")):
        me = _module_name(path)
        for line, target in imports(path):
            if target.split(".")[0] in ("backbones", "detection") and not allowed(me, target):
                bad.append(f"{path.relative_to(REPO)}:{line} imports {target}")
    return bad


def test_the_parser_resolves_relative_imports(tmp_path):
    """The check itself: ``from ..engine import x`` in detection/pretrain/setup.py is
    detection.engine, and a broken floor is reported."""
    path = REPO / "detection" / "pretrain" / "setup.py"
    targets = {t for _, t in imports(path)}
    assert "detection.engine" in targets and "detection.pretrain.config" in targets
    assert violations("detection/pretrain", lambda me, t: not t.startswith("detection.engine"))


def test_backbones_import_nothing_of_detection():
    """``backbones/`` is the floor ``detection`` builds on (torch and numpy only)."""
    assert violations("backbones", lambda me, t: t.startswith("backbones")) == []


def test_the_engine_imports_nothing_outside_itself():
    """``detection/engine/`` is task-neutral: handed a model, loaders and an evaluator, it
    imports none of them (nor the config schema, nor the backbones)."""
    assert violations("detection/engine",
                      lambda me, t: t == "detection.engine" or
                      t.startswith("detection.engine.")) == []


@pytest.mark.parametrize("package", ["detection.data", "detection.evaluation"])
def test_data_and_evaluation_never_import_a_run_or_a_tool(package):
    """Data and evaluation sit below the run assembly (``detection.setup``, ``pretrain``) and the
    command line (``detection.cli``)."""
    above = ("detection.setup", "detection.pretrain", "detection.cli")
    assert violations(package.replace(".", "/"),
                      lambda me, t: not t.startswith(above)) == []


MODEL_FILES = ["anchors", "box_coder", "box_heads", "faster_rcnn", "fpn", "mask_head", "masks",
               "matcher", "poolers", "roi_heads", "roi_sampling", "rpn"]


@pytest.mark.parametrize("name", MODEL_FILES)
def test_model_files_import_only_backbones_and_each_other(name):
    """The model never imports the data, the evaluation, the engine or the config."""
    path = REPO / "detection" / f"{name}.py"
    model = {f"detection.{m}" for m in MODEL_FILES}
    bad = [f"{line}: {t}" for line, t in imports(path)
           if t.split(".")[0] in ("backbones", "detection")
           and not (t.startswith("backbones") or t in model)]
    assert bad == []


def test_nothing_below_the_command_line_imports_it():
    """``detection.cli`` (the ``resdet`` subcommands) is the top floor of the package: no
    library module imports it, so everything it does is callable without it."""
    def allowed(me, t):
        return me.startswith("detection.cli") or not t.startswith("detection.cli")
    assert violations("detection", allowed) == []
    assert violations("backbones", allowed) == []


def test_the_tools_are_thin_wrappers_of_the_command_line():
    """``tools/*.py`` import only ``detection.cli`` and define nothing: no tool logic lives only
    there (each runs the ``main`` of a ``resdet`` subcommand)."""
    scripts = sorted((REPO / "tools").glob("*.py"))
    assert len(scripts) >= 14
    for path in scripts:
        targets = [t for _, t in imports(path) if t.split(".")[0] in ("backbones", "detection")]
        assert targets and all(t.startswith("detection.cli") for t in targets), path.name
        tree = ast.parse(path.read_text(encoding="utf-8"))
        defined = [n for n in ast.walk(tree)
                   if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))]
        assert defined == [], path.name
