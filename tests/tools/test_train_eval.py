"""tools/train.py and tools/eval.py end to end (subprocesses) on the tiny synthetic set."""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detection.config import load_config
from tool_loader import load_tool

REPO = Path(__file__).resolve().parents[2]
EVAL_KEYS = {"mAP", "mAP50", "mAP75", "mAP_s", "mAP_m", "mAP_l", "AR100", "per_category",
             "backbone", "config", "weights", "iteration"}
LOSSES = ("loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box")


def _run(args: list[str], *, nproc: int = 1, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, *args] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={nproc}", *args]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _model_state(path: Path) -> dict:
    return torch.load(path, weights_only=True)["model"]


@pytest.fixture(scope="module")
def trained(synthetic_coco, tmp_path_factory, tiny_config):
    folder = tmp_path_factory.mktemp("train")
    config = tiny_config(folder, synthetic_coco)
    proc = _run(["tools/train.py", "--config", str(config)])
    return config, folder / "out", proc


def test_train_writes_every_output_file(trained):
    config, out, proc = trained
    assert "mAP@.5 = " in proc.stdout and "mAP@[.5,.95] = " in proc.stdout
    assert {"best.pth", "config.yaml", "eval.json", "last.pth", "metrics.jsonl", "vis"} <= {
        p.name for p in out.iterdir()}
    resolved = load_config(out / "config.yaml")
    assert resolved.model.num_classes == 5  # from the annotations
    assert resolved == load_config(config, ["model.num_classes=5"])

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["type"] == "train"]
    evals = [r for r in records if r["type"] == "eval"]
    assert [r["iteration"] for r in train] == [1, 2, 3, 4]
    assert [r["iteration"] for r in evals] == [2, 4]
    for r in train:
        assert {"lr", "loss", "time", "data_time", "memory_mb", "eta_s", *LOSSES} <= set(r)
        assert r["loss"] == pytest.approx(sum(r[k] for k in LOSSES), rel=1e-5)

    result = json.loads((out / "eval.json").read_text())
    assert EVAL_KEYS <= set(result)
    assert result["backbone"] == "resnet18" and result["iteration"] == 4
    assert result["config"] == str(config) and result["weights"].endswith("last.pth")
    assert sorted(result["per_category"]) == ["circle", "cross", "square", "star", "triangle"]
    assert result["mAP"] == evals[-1]["mAP"]
    # the numbers are pycocotools' own on the results the run wrote (an independent COCOeval)
    coco_gt = COCO(str(load_config(config).data.test.annotations))
    coco_eval = COCOeval(coco_gt, coco_gt.loadRes(str(out / "coco_results.json")), "bbox")
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval.evaluate(), coco_eval.accumulate(), coco_eval.summarize()
    assert result["mAP"] == pytest.approx(100 * coco_eval.stats[0], abs=1e-9)
    assert result["mAP50"] == pytest.approx(100 * coco_eval.stats[1], abs=1e-9)

    last = torch.load(out / "last.pth", weights_only=True)
    assert {"model", "config", "classes", "iteration", "optimizer", "scheduler", "scaler",
            "rng"} <= set(last)
    assert last["iteration"] == 4 and [c["id"] for c in last["classes"]] == [1, 3, 7, 12, 20]
    best = torch.load(out / "best.pth", weights_only=True)
    best_map = max(r["mAP"] for r in evals)
    assert best["hooks"]["best"]["value"] == best_map
    assert best["iteration"] == next(r["iteration"] for r in evals if r["mAP"] == best_map)
    vis = sorted((out / "vis").iterdir())
    assert len(vis) == 2 and all(p.suffix == ".jpg" and p.stat().st_size > 0 for p in vis)


def test_eval_tool_reproduces_the_final_evaluation(trained, tmp_path):
    config, out, _ = trained
    proc = _run(["tools/eval.py", "--config", str(config), "--weights", str(out / "last.pth"),
                 "--output", str(tmp_path)])
    assert "mAP@.5 = " in proc.stdout and "category" in proc.stdout  # the evaluator's table
    assert "inference 8/8  " in proc.stdout and "; evaluator: " in proc.stdout  # progress
    result = json.loads((tmp_path / "eval.json").read_text())
    expected = json.loads((out / "eval.json").read_text())
    assert EVAL_KEYS <= set(result)
    for key in ("mAP", "mAP50", "mAP75", "AR100", "per_category", "backbone", "iteration"):
        assert result[key] == expected[key], key
    assert result["weights"] == str(out / "last.pth")


def test_eval_tool_under_torchrun_gives_the_same_numbers(trained, tmp_path):
    config, out, _ = trained
    _run(["tools/eval.py", "--config", str(config), "--weights", str(out / "last.pth"),
          "--output", str(tmp_path)], nproc=2)
    result = json.loads((tmp_path / "eval.json").read_text())
    expected = json.loads((out / "eval.json").read_text())
    assert (result["mAP"], result["mAP50"]) == (expected["mAP"], expected["mAP50"])


def test_eval_tool_maps_a_checkpoints_other_classes_to_the_datasets(trained, tmp_path):
    """A checkpoint with a 6th class (category id 99, unknown to the dataset): its detections
    are dropped, the others are mapped by category id; the numbers stay those of last.pth."""
    config, out, _ = trained
    ckpt = torch.load(out / "last.pth", weights_only=True)
    state = ckpt["model"]
    cls_w = next(k for k in state if k.endswith("cls_score.weight"))
    box_w = cls_w.replace("cls_score", "bbox_pred")
    for key, rows, fill in ((cls_w, 1, 0.0), (cls_w.replace("weight", "bias"), 1, -1000.0),
                            (box_w, 4, 0.0), (box_w.replace("weight", "bias"), 4, 0.0)):
        extra = torch.full((rows, *state[key].shape[1:]), fill)
        state[key] = torch.cat([state[key], extra])  # the never-scoring class 6
    ckpt["classes"] = ckpt["classes"] + [{"id": 99, "name": "ghost"}]
    torch.save(ckpt, tmp_path / "six.pth")
    _run(["tools/eval.py", "--config", str(config), "--weights", str(tmp_path / "six.pth"),
          "--output", str(tmp_path)])
    result = json.loads((tmp_path / "eval.json").read_text())
    expected = json.loads((out / "eval.json").read_text())
    assert (result["mAP"], result["mAP50"]) == (expected["mAP"], expected["mAP50"])
    assert "ghost" not in result["per_category"]


def test_resumed_run_ends_with_bitwise_the_same_weights(trained, tmp_path):
    """2 iterations, stop, resume to 4 == the 4 iterations of ``trained`` in one go, although
    that run also evaluated (RNG-neutral) and loaded its data in the main process while this one
    uses a worker; with random flips and multi-scale resizing on."""
    config, full_out, _ = trained
    common = ["--config", str(config), "--output", str(tmp_path), "--set", "test.eval_period=0",
              "test.vis_images=0", "data.num_workers=1"]
    _run(["tools/train.py", *common, "solver.max_iter=2"])
    assert torch.load(tmp_path / "last.pth", weights_only=True)["iteration"] == 2
    _run(["tools/train.py", *common, "--resume"])
    full, resumed = _model_state(full_out / "last.pth"), _model_state(tmp_path / "last.pth")
    assert full.keys() == resumed.keys()
    assert all(torch.equal(full[k], resumed[k]) for k in full), [
        k for k in full if not torch.equal(full[k], resumed[k])]
    loss = lambda out: [r["loss"] for r in map(json.loads, (  # noqa: E731
        out / "metrics.jsonl").read_text().splitlines()) if r["type"] == "train"]
    assert loss(full_out) == loss(tmp_path)


def test_sigterm_saves_the_current_iteration_and_the_resume_is_bitwise(trained, tmp_path):
    """SIGTERM to every process of the run (as SLURM signals a job; the loader worker too) once
    training runs: the step under way finishes, last.pth holds it, exit status 75; resumed,
    the run ends with the weights of ``trained`` (4 iterations in one go) bit for bit."""
    config, full_out, _ = trained
    common = ["--config", str(config), "--output", str(tmp_path), "--set", "test.eval_period=0",
              "test.vis_images=0", "data.num_workers=1", "solver.checkpoint_period=100"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "tools/train.py", *common, "solver.max_iter=100"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.is_file() and '"type": "train"' in metrics.read_text()):
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()[0]
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 75, out
    k = [r["iteration"] for r in map(json.loads, metrics.read_text().splitlines())
         if r["type"] == "train"][-1]
    assert k < 4 and torch.load(tmp_path / "last.pth", weights_only=True)["iteration"] == k
    assert (f"SIGTERM: stopped after iteration {k} of 100, {tmp_path / 'last.pth'} holds it; "
            "continue the run with --resume (exit status 75)") in out
    assert "Traceback" not in out and "error" not in out.lower()
    _run(["tools/train.py", *common, "--resume"])
    full, resumed = _model_state(full_out / "last.pth"), _model_state(tmp_path / "last.pth")
    assert all(torch.equal(full[k], resumed[k]) for k in full)


def test_print_config_and_config_errors(tmp_path, capsys):
    train = load_tool("train")
    assert train.main(["--config", "configs/quickstart.yaml", "--print-config",
                       "--set", "solver.max_iter=7", "--output", str(tmp_path / "o")]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["solver"]["max_iter"] == 7 and printed["output_dir"] == str(tmp_path / "o")
    assert train.main(["--config", "configs/quickstart.yaml", "--set", "solver.max_itr=7"]) == 2
    err = capsys.readouterr().err
    assert "override 'solver.max_itr=7'" in err and "'solver.max_iter'" in err
    assert not (tmp_path / "o").exists()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_used_output_folder_is_refused_and_force_starts_over(trained, tmp_path, capsys):
    config, out, _ = trained
    run = tmp_path / "run"
    shutil.copytree(out, run)
    (run / "notes.txt").write_text("mine")
    before = _digest(run / "last.pth")
    train = load_tool("train")
    assert train.main(["--config", str(config), "--output", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {run} already holds a run (last.pth, metrics.jsonl)")
    assert "--resume" in err and "--force" in err and err.count("\n") == 1
    assert _digest(run / "last.pth") == before
    assert train.main(["--config", str(config), "--output", str(run), "--force", "--set",
                       "solver.max_iter=1", "test.eval_period=0", "test.vis_images=0"]) == 0
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records if r["type"] == "train"] == [1]
    assert not any((run / "vis").iterdir()) and (run / "notes.txt").read_text() == "mine"
    assert torch.load(run / "last.pth", weights_only=True)["iteration"] == 1
    log = (run / "log.txt").read_text()  # everything printed: the logger and the final table
    assert "--force: deleted the previous run's last.pth, best.pth, metrics.jsonl" in log
    assert "training from iteration 0 to 1" in log and "mAP@.5 = " in log


def test_log_txt_holds_everything_the_run_printed(trained):
    _, out, proc = trained
    log = (out / "log.txt").read_text().splitlines()
    printed = proc.stdout.splitlines()
    assert [line for line in log if line in set(printed)] == printed and len(printed) > 10
    assert set(proc.stderr.splitlines()) <= set(log)


def test_eval_writes_beside_the_weights_with_the_config_of_the_checkpoint(trained, capsys):
    """No --config, no --output: the checkpoint's config, results in
    <run>/eval_last_val/, the run's own eval.json untouched."""
    _, out, _ = trained
    before = _digest(out / "eval.json")
    assert load_tool("eval").main(["--weights", str(out / "last.pth")]) == 0
    assert f"written to {out / 'eval_last_val' / 'eval.json'}" in capsys.readouterr().out
    result = json.loads((out / "eval_last_val" / "eval.json").read_text())
    expected = json.loads((out / "eval.json").read_text())
    assert (result["mAP"], result["mAP50"]) == (expected["mAP"], expected["mAP50"])
    assert result["config"] == f"{out / 'last.pth'} (stored config)"
    assert (out / "eval_last_val" / "coco_results.json").is_file()
    assert _digest(out / "eval.json") == before
def test_train_logs_progress_and_writes_tensorboard_scalars(trained):
    """The run's TensorBoard events hold every number of its metrics.jsonl: each loss term,
    lr, time/iter, and each evaluation's mAP, mAP50 and per-category AP."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, out, proc = trained
    assert "inference 8/8  " in proc.stdout and "  eta 0:00:00  elapsed " in proc.stdout
    assert proc.stdout.count("; evaluator: ") == 2  # the evaluator's own time, per evaluation
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    scalars = {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    checked = 0
    for r in records:
        for key, value in r.items():
            items = value.items() if isinstance(value, dict) else [(None, value)]
            for name, v in items:
                if key in ("type", "iteration") or not isinstance(v, (int, float)):
                    continue
                kind = r["type"] + (f"/{r['split']}" if "split" in r else "")
                tag = f"{kind}/{key}" + ("" if name is None else f"/{name}")
                assert scalars[tag][r["iteration"]] == pytest.approx(v, rel=1e-6, abs=1e-9), tag
                checked += 1
    assert {f"train/{k}" for k in (*LOSSES, "loss", "lr", "time")} <= set(scalars)
    assert {"eval/mAP", "eval/mAP50", "eval/per_category/circle"} <= set(scalars)
    assert checked >= 4 * 9 + 2 * (7 + 5)


def test_a_mask_run_writes_box_and_mask_ap_and_eval_reproduces_both(tiny_mask_run, tmp_path):
    """Mask R-CNN through the same tools: loss_mask logged, eval.json with box and mask AP
    (segm_*), coco_results.json with an RLE mask per detection, masks drawn in vis/, and
    tools/eval.py gives the same numbers from last.pth."""
    from pycocotools import mask as mask_utils

    run = tiny_mask_run
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all("loss_mask" in r for r in records if r["type"] == "train")
    result = json.loads((run / "eval.json").read_text())
    assert EVAL_KEYS <= set(result)
    segm = {f"segm_{k}" for k in ("mAP", "mAP50", "mAP75", "mAP_s", "mAP_m", "mAP_l", "AR100",
                                  "per_category")}
    assert segm <= set(result) and set(result["segm_per_category"]) == set(result["per_category"])
    results = json.loads((run / "coco_results.json").read_text())
    test = json.loads(Path(load_config(run / "config.yaml").data.test.annotations).read_text())
    sizes = {im["id"]: [im["height"], im["width"]] for im in test["images"]}
    assert results and all(r["segmentation"]["size"] == sizes[r["image_id"]] for r in results)
    area = mask_utils.area([{**r["segmentation"], "counts": r["segmentation"]["counts"].encode()}
                            for r in results])
    assert (area > 0).any()
    assert len(list((run / "vis").glob("*.jpg"))) == 2
    eval_tool = load_tool("eval")
    assert eval_tool.main(["--weights", str(run / "last.pth"), "--output", str(tmp_path)]) == 0
    again = json.loads((tmp_path / "eval.json").read_text())
    for key in ("mAP", "mAP50", "segm_mAP", "segm_mAP50", "segm_per_category"):
        assert again[key] == result[key], key
