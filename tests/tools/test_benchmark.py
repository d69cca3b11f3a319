import json

import pytest
import torch

from detection.benchmarking import MODEL_FIELDS, _stats, synthetic_batch, time_alternating
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


benchmark = load_tool("benchmark")


def test_cpu_benchmark_against_torchvision_writes_every_field(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_FPN.format(root=tmp_path / "shapes"))
    out = tmp_path / "bench.json"
    code = benchmark.main(["--config", str(config), "--batch", "1", "--iters", "2",
                           "--warmup", "0", "--size", "48", "--compare-torchvision",
                           "--output", str(out)])
    assert code == 0
    table = capsys.readouterr().out
    assert "ours/torchvision" in table and "inference ms (median)" in table
    result = json.loads(out.read_text())
    assert {"config", "device", "device_name", "torch", "torchvision", "threads", "amp",
            "amp_dtype", "batch", "iters", "warmup", "input_hw", "num_classes", "memory",
            "process_peak_rss_mb", "models", "ratios", "data_loader"} <= set(result)
    assert result["input_hw"] == [48, 64] and result["batch"] == 1
    assert result["process_peak_rss_mb"] > 100
    for name in ("ours", "torchvision"):
        fields = result["models"][name]
        assert set(fields) == set(MODEL_FIELDS)
        for key, value in fields.items():
            if "memory" in key:
                assert value is None  # per-model memory is a CUDA measurement
            else:
                assert isinstance(value, float) and value > 0, (name, key, value)
        assert fields["inference_ms_p90"] >= fields["inference_ms_median"]
        assert fields["train_gflops_per_image"] > 2 * fields["inference_gflops_per_image"]
    # the same network: equal parameter counts and equal FLOPs (counted independently)
    ratios = result["ratios"]
    assert ratios["params_m"] == 1.0
    assert ratios["inference_gflops_per_image"] == pytest.approx(1.0, abs=1e-3)
    assert ratios["train_gflops_per_image"] == pytest.approx(1.0, abs=0.02)
    ours, tv = result["models"]["ours"], result["models"]["torchvision"]
    assert ratios["inference_ms_median"] == pytest.approx(
        ours["inference_ms_median"] / tv["inference_ms_median"])
    data = result["data_loader"]
    assert data["images_per_s"] > 0 and data["num_workers"] == 0 and data["batches"] == 2
    assert data["source"] == "data.train"


def test_bad_options_are_clear_errors(tmp_path, capsys):
    config = tmp_path / "c4.yaml"
    config.write_text("model: {backbone: {name: resnet18, weights: null}, fpn: {enabled: false},"
                      " rpn: {in_features: [res4]}, roi_heads: {box_head: c4_res5,"
                      " in_features: [res4]}, num_classes: 2}\n")
    assert benchmark.main(["--config", str(config), "--compare-torchvision"]) == 2
    assert "--compare-torchvision needs an R-xx-FPN config" in capsys.readouterr().err
    assert benchmark.main(["--config", str(config), "--amp"]) == 2
    assert "--amp is for CUDA" in capsys.readouterr().err


def test_time_alternating_order_and_stats():
    calls = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    out = time_alternating(fns, iters=3, warmup=1, device=torch.device("cpu"))
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert len(out["a"]["times"]) == 3 and out["a"]["peak_mb"] is None
    median, p90 = _stats([0.004, 0.001, 0.002, 0.003, 0.010])
    assert median == pytest.approx(3.0) and p90 == pytest.approx(10.0)


def test_synthetic_batch_targets_are_valid_boxes():
    images, targets = synthetic_batch(batch=2, height=40, width=60, num_classes=4,
                                      device=torch.device("cpu"))
    assert [tuple(im.shape) for im in images] == [(3, 40, 60)] * 2
    for t in targets:
        b = t["boxes"]
        assert (b[:, 2:] - b[:, :2] >= 15.99).all()
        assert (b[:, [0, 2]] <= 59).all() and (b[:, [1, 3]] <= 39).all() and (b >= 0).all()
        assert ((t["labels"] >= 1) & (t["labels"] <= 4)).all()
