"""detection.precision: what `auto` picks from the CPU's reported features, every mode, and bf16
detections against float32 (the reduced-precision rule) on a detector with like-trained
weights."""
import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from detection.config import load_config
from detection.export.runtime import REDUCED_PRECISION_MATCH, compare_detections
from detection.precision import (cpu_bf16_support, inference_precision, resolve_precision,
                                 training_precision)


@pytest.fixture
def cpu_features(monkeypatch):
    """``cpu_features(amx, avx512_bf16)``: what torch reports about this CPU, mocked."""
    def set_features(amx: bool, avx512_bf16: bool) -> None:
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    return set_features


def test_auto_is_float32_where_bf16_is_reported_absent(cpu_features):
    cpu_features(amx=False, avx512_bf16=False)
    assert cpu_bf16_support()[0] is False
    p = resolve_precision("auto", "cpu")
    assert p.dtype is None and not p.enabled and "no native bf16" in p.reason
    assert p.describe().startswith("float32 (auto: this CPU has no native bf16")
    assert training_precision("auto", "bf16", "cpu").dtype is None
    # asked for, bf16 still runs (emulated), and the reason says so
    forced = resolve_precision("bf16", "cpu")
    assert forced.dtype == torch.bfloat16 and "emulated" in forced.reason


@pytest.mark.parametrize("amx, avx", [(True, False), (False, True), (True, True)])
def test_auto_is_bf16_with_amx_or_avx512_bf16(cpu_features, amx, avx):
    cpu_features(amx=amx, avx512_bf16=avx)
    if not cpu_bf16_support()[0]:
        pytest.skip("torch here has no oneDNN bf16 kernels")
    p = resolve_precision("auto", "cpu")
    assert p.dtype == torch.bfloat16 and "native bf16" in p.reason
    assert ("AMX" in p.reason) == amx and ("AVX512-BF16" in p.reason) == avx
    assert p.describe().startswith("bf16 autocast, channels-last (auto:")
    with p.autocast():
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16


def test_every_mode_and_the_old_booleans(cpu_features):
    cpu_features(amx=True, avx512_bf16=True)
    assert resolve_precision("off", "cpu").dtype is None
    assert resolve_precision(False, "cpu").dtype is None
    # solver.amp: true stays CUDA autocast to amp_dtype, float32 on a CPU (as before)
    assert training_precision(True, "bf16", "cpu").dtype is None
    assert training_precision(True, "fp16", "cuda").dtype == torch.float16
    assert training_precision("auto", "bf16", "cuda").dtype is None  # auto never changes CUDA
    assert training_precision("bf16", "fp16", "cuda").dtype == torch.bfloat16
    # inference on CUDA follows solver.amp, as evaluation always did
    assert inference_precision("auto", "cuda", solver_amp=True, amp_dtype="fp16").dtype == \
        torch.float16
    assert inference_precision("auto", "cuda", solver_amp=False).dtype is None
    for solver_amp in ("auto", "off"):  # auto (the default) trains in float32 on CUDA
        assert inference_precision("auto", "cuda", solver_amp=solver_amp).dtype is None
    assert inference_precision("auto", "cuda", solver_amp="bf16").dtype == torch.bfloat16
    with pytest.raises(ValueError, match="amp must be one of"):
        resolve_precision("fp8", "cpu")


def test_config_keys_old_and_new():
    assert load_config(None, []).solver.amp == "auto" and load_config(None, []).test.amp == "auto"
    for value, expected in (("true", True), ("false", False), ("bf16", "bf16"),
                            ("auto", "auto"), ("off", False)):  # YAML reads off as false
        cfg = load_config(None, [f"solver.amp={value}", f"test.amp={value}"
                                 if value in ("bf16", "auto", "off") else "test.amp=auto"])
        assert cfg.solver.amp == expected
    assert load_config(None, ["test.amp=off"]).test.amp is False
    assert resolve_precision(load_config(None, ["test.amp=off"]).test.amp, "cpu").dtype is None


def test_bf16_detections_match_float32(exported, one_thread):
    """bf16 autocast against float32 on the same weights: >= 90 % of the detections above 0.3
    matched (same label, IoU > 0.9, score within 0.05)."""
    ex = exported("fpn")
    g = torch.Generator().manual_seed(2)
    images = [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
              for h, w in ((64, 96), (120, 100), (128, 160))]
    with torch.inference_mode():
        ref = ex.model(images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = ex.model(images)
    stats = compare_detections(ref, out, **REDUCED_PRECISION_MATCH)
    assert stats["detections"] >= 60 and stats["matched"] >= 0.9, stats
    for o in out:  # float32 boxes and scores: decoding and softmax stay in float32
        assert o["boxes"].dtype == torch.float32 and o["scores"].dtype == torch.float32


@pytest.mark.parametrize("variant", ["fpn_mask", "c4", "vgg"])
@pytest.mark.parametrize("amp", ["off", "bf16"])
def test_prepared_model_as_predictor_and_eval_run_it(exported, one_thread, variant, amp):
    """``Precision.prepare`` (FrozenBN folded for good; in bf16 also the convolution and linear
    weights stored in bf16, as autocast casts them on every call, so that each ResNet block's
    convolution, residual sum and ReLU run as one oneDNN call): float32 outputs bit for bit
    those of the unprepared model; bf16 ones as close to float32 as unprepared bf16 (the fused
    residual sum is rounded once instead of twice)."""
    import copy
    model = exported(variant).model
    precision = resolve_precision(amp, "cpu")
    plain = copy.deepcopy(model)
    if precision.enabled:
        plain.to(memory_format=torch.channels_last)
    prepared = precision.prepare(copy.deepcopy(model))
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in prepared.modules())
    if precision.enabled:
        convs = [m for m in prepared.modules() if isinstance(m, nn.Conv2d)]
        assert convs and all(m.weight.dtype == torch.bfloat16 for m in convs)
    g = torch.Generator().manual_seed(3)
    images = [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
              for h, w in ((96, 128), (128, 112), (128, 160))]
    with torch.inference_mode():
        reference = model(images)
        with precision.autocast():
            expected, got = plain(images), prepared(images)
    assert sum(len(o["boxes"]) for o in expected) >= 30
    if not precision.enabled:
        for e, o in zip(expected, got):
            assert e.keys() == o.keys()
            for key in e:
                assert torch.equal(e[key], o[key]), (variant, key)
        return
    before = compare_detections(reference, expected, **REDUCED_PRECISION_MATCH)
    after = compare_detections(reference, got, **REDUCED_PRECISION_MATCH)
    assert after["matched"] >= min(0.9, before["matched"] - 0.02), (before, after)
    assert after.get("mask_iou_min", 1.0) > 0.9, after
