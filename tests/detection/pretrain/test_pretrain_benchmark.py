"""The loader-vs-step measurement of tools/pretrain.py --benchmark on a CIFAR-10 archive."""
import pytest
import torch

from detection.pretrain.benchmark import benchmark_pretraining, format_benchmark
from detection.pretrain.config import load_pretrain_config


def test_loader_and_step_rates(tmp_path, write_cifar10, one_thread):
    archive, _ = write_cifar10(tmp_path, "py", per_batch=8)
    cfg = load_pretrain_config(None, [
        "model.backbone.name=cifar_resnet20", "data.format=cifar10", f"data.train={archive}",
        "data.num_workers=0", "data.input.scale=[]", "data.input.crop=32", "data.input.pad=4",
        "solver.ims_per_batch=8"])
    r = benchmark_pretraining(cfg, device=torch.device("cpu"), batches=3, steps=1)
    assert r["input"] == [3, 32, 32] and r["batch"] == 8 and r["backbone"] == "cifar_resnet20"
    assert r["loader_images_per_s"] > 0 and r["step_images_per_s"] > 0 and r["sample_ms"] > 0
    assert r["ratio"] == pytest.approx(r["loader_images_per_s"] / r["step_images_per_s"])
    assert "loader / step = " in format_benchmark(r)
