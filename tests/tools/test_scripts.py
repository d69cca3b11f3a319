"""tools/*.py: each runs the ``main`` of a ``resdet`` subcommand (detection/cli/)."""
import pytest

from detection.cli.main import COMMANDS
from tool_loader import RENAMED, load_script, load_tool


@pytest.mark.parametrize("tool", ["train", "eval", "infer", "export", "benchmark", "analyze",
                                  "report", "pretrain", "compare", "plot_logs",
                                  "convert_dataset", "convert_pretrained",
                                  "convert_torchvision", "make_synthetic"])
def test_each_tools_script_runs_the_subcommands_main(tool):
    module = load_tool(tool)
    assert load_script(tool).main is module.main
    assert RENAMED.get(tool, tool) in COMMANDS.values()
