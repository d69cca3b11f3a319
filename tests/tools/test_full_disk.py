"""A disk that fills while a run or a tool writes: one ``error:`` line, exit status 2, the
previous files intact, no temporary file left (issue 28)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import yaml

from detection.engine.checkpoint import load_checkpoint
from tool_loader import load_tool

REPO = Path(__file__).resolve().parents[2]


def _config(folder: Path, data, tiny_config, output_dir: Path) -> Path:
    """The tiny run, 2 iterations, a checkpoint after each, no test set (no evaluation:
    last.pth is the only checkpoint)."""
    path = tiny_config(folder, data, output_dir=str(output_dir),
                       solver={"max_iter": 2, "checkpoint_period": 1})
    cfg = yaml.safe_load(path.read_text())
    cfg["data"]["test"] = {"images": "", "annotations": ""}
    path.write_text(yaml.safe_dump(cfg))
    return path


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


def test_training_on_a_real_full_tmpfs(synthetic_coco, tiny_config, tmp_path, tmpfs):
    """A 130 MiB tmpfs holds one checkpoint of the tiny R-18-FPN (91 MB with its momentum)
    but not a second beside it: the run stops at iteration 2 naming the numbers."""
    disk = tmp_path / "disk"
    config = _config(tmp_path, synthetic_coco, tiny_config, disk / "out")
    keep = tmp_path / "kept"
    command = (f"{sys.executable} tools/train.py --config {config}; echo $? > {tmp_path}/rc; "
               f"ls -A {disk}/out > {tmp_path}/files; cp {disk}/out/last.pth {keep}")
    proc = tmpfs(disk, "130m", command, cwd=REPO,
                 env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "rc").read_text().strip() == "2", proc.stdout + proc.stderr
    errors = _error_lines(proc.stderr)
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith(f"error: cannot write {disk}/out/last.pth: no space left on "
                                "device (it needs about ")
    assert errors[0].endswith(f"are free in {disk}/out); the previous {disk}/out/last.pth "
                              "(iteration 1) is kept: free some space, then continue the run "
                              "with --resume")
    assert "Traceback" not in proc.stdout + proc.stderr
    files = (tmp_path / "files").read_text().split()
    assert {"config.yaml", "last.pth", "log.txt", "metrics.jsonl"} <= set(files)
    assert not [name for name in files if name.startswith(".")]  # no temporary file
    assert load_checkpoint(keep)["iteration"] == 1


def test_training_on_a_simulated_full_disk(synthetic_coco, tiny_config, tmp_path, small_disk,
                                           capsys, detection_log):
    """The same in this process, the disk simulated by a patched writer; then the run resumes
    once there is space again."""
    train = load_tool("train")
    disk = small_disk(tmp_path / "disk", capacity=150 * 10**6)
    config = _config(tmp_path, synthetic_coco, tiny_config, disk.folder / "out")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert train.main(["--config", str(config)]) == 2
        err = capsys.readouterr().err
        assert _error_lines(err) == [err.strip()]
        assert err.startswith(f"error: cannot write {disk.folder}/out/last.pth: no space left "
                              "on device (it needs about ")
        assert "(iteration 1) is kept" in err and "--resume" in err
        files = [p.name for p in (disk.folder / "out").iterdir()]
        assert {"config.yaml", "last.pth", "log.txt", "metrics.jsonl"} <= set(files)
        assert not [name for name in files if name.startswith(".")]
        assert load_checkpoint(disk.folder / "out" / "last.pth")["iteration"] == 1
        disk.capacity = 400 * 10**6  # space freed
        assert train.main(["--config", str(config), "--resume"]) == 0
    finally:
        torch.set_num_threads(threads)
    assert load_checkpoint(disk.folder / "out" / "last.pth")["iteration"] == 2


def test_eval_on_a_full_disk(tiny_runs, tmp_path, small_disk, capsys):
    weights = str(tiny_runs[0] / "last.pth")
    assert load_tool("eval").main(["--weights", weights, "--output", str(tmp_path / "ok")]) == 0
    needed = len((tmp_path / "ok" / "coco_results.json").read_bytes())  # what eval writes
    capsys.readouterr()
    disk = small_disk(tmp_path / "disk", capacity=0)
    code = load_tool("eval").main(["--weights", weights, "--output", str(disk.folder / "eval")])
    assert code == 2
    err = capsys.readouterr().err
    assert _error_lines(err) == [
        f"error: cannot write {disk.folder}/eval/coco_results.json: no space left on device "
        f"(it needs {needed:,} bytes = {needed / 1024:.1f} KiB; 0 bytes are free in "
        f"{disk.folder}/eval)"]
    assert list((disk.folder / "eval").iterdir()) == []
