"""The code a script under tools/ runs: its module of ``detection.cli`` (tools/*.py are thin
wrappers around those; tests/test_floors.py holds that they are nothing more)."""
import importlib
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: tools/<name>.py -> detection/cli/<module>.py where the two names differ
RENAMED = {"convert_pretrained": "convert_msra", "make_synthetic": "data_synthetic"}


def load_tool(name: str):
    """``detection.cli.<module>`` of ``tools/<name>.py`` (its ``main`` is the script's)."""
    return importlib.import_module(f"detection.cli.{RENAMED.get(name, name)}")


def load_script(name: str):
    """``tools/<name>.py`` itself, imported as a module."""
    spec = importlib.util.spec_from_file_location(f"tool_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
