"""Every tool: a missing file is one ``error: ...`` line on stderr and exit status 2."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tool_loader import ROOT, load_tool


def _cases(tmp: Path) -> dict[str, tuple[list[str], str]]:
    """tool -> (arguments naming a missing file, what the error line must say)."""
    missing = tmp / "missing"
    return {
        "train": (["--config", f"{missing}.yaml"], f"config file not found: {missing}.yaml"),
        "eval": (["--weights", f"{missing}.pth"], f"checkpoint not found: {missing}.pth"),
        "infer": (["--weights", f"{missing}.pth", "--input", str(tmp), "--output",
                   str(tmp / "out")], f"weights file not found: {missing}.pth"),
        "benchmark": (["--config", f"{missing}.yaml"], f"config file not found: {missing}.yaml"),
        "compare": ([str(missing)], f"no eval.json at {missing}"),
        "plot_logs": ([str(missing)], f"no metrics.jsonl at {missing}"),
        "convert_torchvision": ([f"{missing}.pth", str(tmp / "out.pth")],
                                f"torchvision checkpoint not found: {missing}.pth"),
        "convert_dataset": (["coco2yolo", "--annotations", f"{missing}.json", "--labels",
                             str(tmp / "labels"), "--names", str(tmp / "names.txt")],
                            f"annotation file not found: {missing}.json"),
        "analyze": ([str(missing)], f"run folder not found: {missing}"),
        "report": ([str(missing), "--output", str(tmp / "r.html")],
                   f"run folder not found: {missing}"),
        "convert_pretrained": ([f"{missing}.pkl", str(tmp / "o.pth")],
                               f"MSRA weights file not found: {missing}.pkl"),
        "export": (["--weights", f"{missing}.pth", "--output", str(tmp / "m.onnx")],
                   f"weights file not found: {missing}.pth"),
        "pretrain": (["--config", f"{missing}.yaml"], f"config file not found: {missing}.yaml"),
        "make_synthetic": (["--root", str(tmp / "taken")], f"{tmp / 'taken'} holds other data"),
    }


@pytest.mark.parametrize("name", list(_cases(Path("/x"))))
def test_a_missing_file_is_one_error_line_and_exit_status_2(name, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "photo.jpg").write_bytes(b"x")
    args, message = _cases(tmp_path)[name]
    assert load_tool(name).main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err


def test_the_exit_status_and_stderr_of_a_real_process():
    """As a user runs it: no traceback, exit status 2 (the example of issue 9)."""
    proc = subprocess.run([sys.executable, "tools/convert_torchvision.py", "nope.pth", "o.pth"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: torchvision checkpoint not found: nope.pth (")
    assert proc.stderr.count("\n") == 1 and "download.pytorch.org" in proc.stderr
