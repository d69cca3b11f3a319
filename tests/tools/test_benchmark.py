"""tools/benchmark.py and detection.benchmark: every task, side by side with torchvision."""
import json
import time
from pathlib import Path

import pytest
import torch

from detection.benchmark import make_like_trained, summarize, synthetic_batch, time_alternating
from detection.build import build_model
from detection.config import load_config
from detection.engine.runlog import peak_rss_mb
from tool_loader import load_tool

TINY_FPN = """
model:
  backbone: {{name: resnet18, weights: null}}
  num_classes: 3
  rpn: {{pre_nms_topk_test: 100, post_nms_topk_test: 30, pre_nms_topk_train: 100,
         post_nms_topk_train: 50, batch_size_per_image: 32}}
  roi_heads: {{fc_dim: 64, batch_size_per_image: 32}}
data:
  synthetic: {{enabled: true, root: {root}, num_train: 6, num_val: 1, image_size: 64}}
  num_workers: 0
  input: {{min_size_test: 64, max_size_test: 96, min_size_train: [64], max_size_train: 96}}
"""
FIELDS = {"median_ms", "p90_ms", "min_ms", "cpu_median_ms", "images_per_s", "gflops_per_image",
          "achieved_gflops_per_s", "peak_memory_mb", "params_m"}

benchmark = load_tool("benchmark")
SOAK_TINY = """
model:
  backbone: {{name: resnet18, weights: null, norm: BN, freeze_at: 0}}
  fpn: {{out_channels: 32}}
  rpn: {{pre_nms_topk_test: 100, post_nms_topk_test: 30, pre_nms_topk_train: 100,
         post_nms_topk_train: 50, batch_size_per_image: 32}}
  roi_heads: {{fc_dim: 64, batch_size_per_image: 32, detections_per_img: 10}}
data:
  synthetic: {{enabled: true, root: {root}, num_train: 6, num_val: 2, image_size: 64}}
  input: {{min_size_test: 64, max_size_test: 96, min_size_train: [64], max_size_train: 96}}
solver: {{max_iter: 100, steps: [80], warmup_iters: 10, ims_per_batch: 2, base_lr: 0.01}}
device: cpu
"""


def test_every_task_against_torchvision(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_FPN.format(root=tmp_path / "shapes"))
    out = tmp_path / "bench.json"
    code = benchmark.main(["--config", str(config), "--batch", "1", "--iters", "3",
                           "--warmup", "0", "--size", "48", "--threads", "1",
                           "--compare-torchvision", "--output", str(out)])
    assert code == 0
    table = capsys.readouterr().out
    assert "ours/torchvision" in table and "training step" in table and "data loader" in table
    result = json.loads(out.read_text())
    assert result["input_hw"] == [48, 64] and result["batch"] == 1 and result["threads"] == 1
    assert result["tasks"] == ["model", "train", "data"]
    for task in ("model", "train"):
        models, ratio = result["results"][task]["models"], result["results"][task]["ratio"]
        for name in ("ours", "torchvision"):
            assert set(models[name]) == FIELDS
            assert models[name]["peak_memory_mb"] is None  # per-model memory is for CUDA
            assert models[name]["median_ms"] > 0 and models[name]["images_per_s"] > 0
        # the same network: equal parameter counts and FLOPs (counted independently)
        assert ratio["params_m"] == 1.0
        assert ratio["gflops_per_image"] == pytest.approx(1.0, abs=0.02)
        ours, tv = models["ours"], models["torchvision"]
        assert ratio["median_ms"] == pytest.approx(ours["median_ms"] / tv["median_ms"])
        assert ours["images_per_s"] == pytest.approx(1000 / ours["median_ms"])
    train, infer = result["results"]["train"]["models"], result["results"]["model"]["models"]
    assert train["ours"]["gflops_per_image"] > 2 * infer["ours"]["gflops_per_image"]
    data = result["results"]["data"]
    assert data["images_per_s"] > 0 and data["num_workers"] == 0 and data["batches"] == 3
    assert data["source"] == "data.train" and data["min_size_train"] == [64]


def test_onnxruntime_side_by_side(tmp_path, capsys):
    pytest.importorskip("onnxruntime", reason="ONNX export needs the export extra (onnx, "
                        'onnxruntime): pip install -e ".[export]"')
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_FPN.format(root=tmp_path / "shapes"))
    onnx_file, out = tmp_path / "bench.onnx", tmp_path / "bench.json"
    code = benchmark.main(["--config", str(config), "--task", "model", "--batch", "2",
                           "--iters", "2", "--warmup", "0", "--size", "64", "--threads", "1",
                           "--onnx", str(onnx_file), "--output", str(out)])
    assert code == 0 and onnx_file.is_file()  # random weights: exported by the benchmark
    assert "onnxruntime (float32) matches" in capsys.readouterr().out
    result = json.loads(out.read_text())["results"]["model"]
    assert set(result["models"]) == {"ours", "onnxruntime"}
    o, ort = (result["agreement"]["onnxruntime"],
              result["models"]["onnxruntime"])
    assert result["speedup"] is None  # no torchvision to compare with
    assert o["matched"] >= 0.95 and o["detections"] > 20 and o["precision"] == "float32"
    assert ort["gflops_per_image"] is None and ort["params_m"] is None
    # the file with other weights is refused instead of timed
    other = tmp_path / "other.pth"
    model = build_model(load_config(str(config)), num_classes=3)
    torch.save({"model": model.state_dict()}, other)
    assert benchmark.main(["--config", str(config), "--task", "model", "--size", "64",
                           "--weights", str(other), "--onnx", str(onnx_file)]) == 2
    assert "matches only" in capsys.readouterr().err
    assert benchmark.main(["--config", str(config), "--task", "train", "--onnx", "x.onnx"]) == 2
    assert "--onnx / --backend onnxruntime,openvino time" in capsys.readouterr().err


def test_bad_options_are_one_line_errors(tmp_path, capsys):
    config = tmp_path / "c4.yaml"
    config.write_text("model: {backbone: {name: resnet18, weights: null}, "
                      "roi_heads: {box_head: c4_res5}, num_classes: 2}\n")
    assert benchmark.main(["--config", str(config), "--task", "model",
                           "--compare-torchvision"]) == 2
    assert "torchvision's FasterRCNN cannot express this model" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:  # a usage error: argparse's one line, status 2
        benchmark.main(["--config", str(config), "--amp", "fp8"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.startswith("error: ") and "--amp" in err and err.count("\n") == 1


def test_like_trained_weights_make_postprocessing_work():
    """After make_like_trained many (RoI, class) pairs of several classes pass score_thresh
    with unsaturated scores, so post-processing and NMS have real work."""
    cfg = load_config(None, ["model.backbone.weights=null", "model.backbone.name=resnet18",
                             "model.num_classes=80"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    images, _ = synthetic_batch(batch=1, height=128, width=160, num_classes=80,
                                device=torch.device("cpu"))
    with torch.no_grad():
        out = make_like_trained(model, images)(images)[0]
    assert len(out["scores"]) == 100  # detections_per_img
    assert len(out["labels"].unique()) > 10 and float(out["scores"].max()) < 0.99


def test_time_alternating_order_and_summary():
    calls = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    out = time_alternating(fns, iters=3, warmup=1, device=torch.device("cpu"))
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert len(out["a"]["times"]) == 3 and out["a"]["peak_mb"] is None
    stats = summarize([0.004, 0.001, 0.002, 0.003, 0.010])
    assert stats == pytest.approx({"median_ms": 3.0, "p90_ms": 10.0, "min_ms": 1.0})
    assert summarize([0.001 * k for k in range(1, 11)])["p90_ms"] == pytest.approx(9.0)


def test_cpu_time_counts_work_not_waiting():
    """Wall time counts a wait (or a core taken by another job); the CPU time does not."""
    def spin():
        end = time.perf_counter() + 0.04
        while time.perf_counter() < end:
            pass

    out = time_alternating({"sleep": lambda: time.sleep(0.04), "spin": spin}, iters=3,
                           warmup=0, device=torch.device("cpu"))
    assert min(out["sleep"]["times"]) >= 0.04 and min(out["spin"]["times"]) >= 0.04
    assert max(out["sleep"]["cpu_times"]) < 0.01
    assert max(out["spin"]["cpu_times"]) <= max(out["spin"]["times"]) + 0.005


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc")
def test_peak_rss_is_the_kernels_high_water_mark_in_mib():
    status = Path("/proc/self/status").read_text()
    hwm_kib = int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1])
    assert peak_rss_mb() == pytest.approx(hwm_kib / 1024, rel=0.02)


def test_synthetic_batch_targets_are_valid_boxes():
    images, targets = synthetic_batch(batch=2, height=40, width=60, num_classes=4,
                                      device=torch.device("cpu"))
    assert [tuple(im.shape) for im in images] == [(3, 40, 60)] * 2
    for t in targets:
        b = t["boxes"]
        assert (b[:, 2:] - b[:, :2] >= 15.99).all()
        assert (b[:, [0, 2]] <= 59).all() and (b[:, [1, 3]] <= 39).all() and (b >= 0).all()
        assert ((t["labels"] >= 1) & (t["labels"] <= 4)).all()


def test_eval_task_times_both_backends_and_compares_every_number(tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert benchmark.main(["--task", "eval", "--eval-images", "30", "--iters", "2",
                           "--output", str(out)]) == 0
    result = json.loads(out.read_text())["results"]["eval"]
    assert (result["num_images"], result["repeats"], result["numbers_compared"]) == (30, 2, 92)
    assert result["equal"] and result["max_abs_diff"] <= 1e-9
    assert result["ratio"] == pytest.approx(result["pycocotools_s"] / result["faster_s"])
    assert "eval: pycocotools " in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:  # argparse: every other task needs a config
        benchmark.main(["--task", "model"])
    assert exit_info.value.code == 2 and "--config is required" in capsys.readouterr().err


def test_a_mask_rcnn_against_torchvisions(tmp_path, capsys):
    """A Mask R-CNN config: torchvision's MaskRCNN with the same weights beside it, inference
    and a training step on masks (its full-image masks, our compact ones: the same ellipses),
    the same parameters and FLOPs; the masks of the two agree on the benchmark's images."""
    from detection.benchmark import build_models, instance_masks
    from detection.export.runtime import compare_detections
    from detection.masks import paste_masks

    config = tmp_path / "tiny_mask.yaml"
    config.write_text(TINY_FPN.format(root=tmp_path / "shapes").replace(
        "  roi_heads: {fc_dim: 64, batch_size_per_image: 32}",
        "  roi_heads: {fc_dim: 64, batch_size_per_image: 32}\n"
        "  mask_head: {enabled: true, conv_dim: 16}"))
    out = tmp_path / "bench.json"
    assert benchmark.main(["--config", str(config), "--batch", "1", "--iters", "2", "--warmup",
                           "0", "--size", "48", "--threads", "1", "--task", "model", "train",
                           "--compare-torchvision", "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    for task in ("model", "train"):
        ratio = result["results"][task]["ratio"]
        assert ratio["params_m"] == 1.0 and ratio["gflops_per_image"] == pytest.approx(1.0,
                                                                                     abs=0.02)
    models = build_models(load_config(config), compare_torchvision=True, height=48, width=64,
                          device=torch.device("cpu"))
    assert type(models["torchvision"]).__name__ == "MaskRCNN"
    images, targets = synthetic_batch(batch=1, height=48, width=64, num_classes=3,
                                      device=torch.device("cpu"), masks=True)
    ellipses = targets[0]["masks"]
    assert ellipses.shape == (8, 48, 64) and ellipses.dtype == torch.uint8
    assert torch.equal(instance_masks(ellipses).rasterize(48, 64), ellipses.bool())
    with torch.no_grad():
        ours = models["ours"].eval()(images)[0]
        tv = models["torchvision"].eval()([im.float() / 255 for im in images])[0]
    ours["masks"] = paste_masks(ours["masks"], ours["boxes"], (48, 64))
    tv["masks"] = tv["masks"][:, 0] > 0.5
    stats = compare_detections([ours], [tv])
    assert stats["detections"] > 5 and stats["matched"] >= 0.9 and stats["mask_matched"] >= 0.9


def test_the_soak_task_samples_main_and_workers(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(SOAK_TINY.format(root=tmp_path / "shapes"))
    out = tmp_path / "soak.json"
    code = benchmark.main([
        "--config", str(config), "--task", "soak", "--soak-iters", "2", "--soak-images", "3",
        "--soak-period", "2", "--soak-workers", "1", "--soak-dir", str(tmp_path / "soak"),
        "--output", str(out)])
    assert code == 0
    soak = json.loads(out.read_text())["results"]["soak"]
    steps = [(r["phase"], r["step"]) for r in soak["samples"]]
    assert steps == [("train", 2), ("eval", 2), ("evaluated", 3), ("released", 3)]
    for r in soak["samples"][:2]:
        assert r["main"]["rss"] > 100 and len(r["workers"]) == 1  # one loader worker
        assert 0 < r["workers"][0]["uss"] < r["workers"][0]["pss"] < r["workers"][0]["rss"]
    assert soak["samples"][2]["workers"] == []  # the test loader's ended with its pass
    assert soak["samples"][3]["main"]["rss"] <= soak["samples"][2]["main"]["rss"]
    evaluation = soak["growth"]["eval"]
    assert (evaluation["first_step"], evaluation["last_step"]) == (2, 3)
    assert evaluation["main_rss"] == [soak["samples"][1]["main"]["rss"],
                                      soak["samples"][2]["main"]["rss"]]
    assert json.loads((tmp_path / "soak" / "val3" / "synthetic.json").read_text())[
        "num_val"] == 3
    text = capsys.readouterr().out
    assert "soak train 2: main rss " in text and "eval: image 2 -> 3: main rss " in text
