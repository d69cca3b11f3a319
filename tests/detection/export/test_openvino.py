"""OpenVINO: IR export and its metadata, detections against PyTorch float32 (f32 hint: equal;
bf16 hint: the reduced-precision rule), Predictor / tools, and an INT8 export of a tiny model."""
import dataclasses
import json

import pytest
import torch

from detection.export.runtime import REDUCED_PRECISION_MATCH, compare_detections

ov = pytest.importorskip("openvino", reason='the OpenVINO backend needs the openvino extra: '
                                            'pip install -e ".[openvino]"')

from detection.export.openvino import (OpenVINODetector, export_openvino,  # noqa: E402
                                       read_openvino_metadata)

SIZES = [(64, 96), (120, 100), (128, 160)]


def _images(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for h, w in SIZES]


@pytest.fixture(scope="module")
def ir(exported, tmp_path_factory):
    """The FPN variant's ONNX file converted to an IR once."""
    ex = exported("fpn")
    xml = tmp_path_factory.mktemp("ir") / "model.xml"
    export_openvino(ex.onnx, xml)
    return ex, xml


def test_ir_metadata_round_trip(ir):
    ex, xml = ir
    assert xml.is_file() and xml.with_suffix(".bin").is_file()
    meta = read_openvino_metadata(ov.Core().read_model(str(xml)), str(xml))
    from_onnx = read_openvino_metadata(None, str(ex.onnx))
    assert meta["classes"] == ex.classes == from_onnx["classes"]
    assert (meta["min_size"], meta["max_size"], meta["size_divisibility"]) == (128, 160, 32)
    assert meta["score_thresh"] == pytest.approx(ex.cfg.model.roi_heads.score_thresh)
    assert meta["config"] == ex.cfg == from_onnx["config"]
    bare = xml.parent / "bare.xml"
    ov.save_model(ov.convert_model(str(ex.onnx)), str(bare))  # an IR without our metadata
    with pytest.raises(ValueError, match="lacks the metadata"):
        OpenVINODetector(bare)


def test_f32_hint_equals_pytorch_and_bf16_hint_matches(ir, one_thread):
    ex, xml = ir
    images = _images(seed=2)
    with torch.inference_mode():
        ref = ex.model(images)
    f32 = OpenVINODetector(ex.onnx, threads=1, amp="off")  # an .onnx file runs as well
    assert f32.precision == "f32"
    stats = compare_detections(ref, f32(images))
    assert stats["matched"] >= 0.95 and stats["detections"] >= 60, stats
    bf16 = OpenVINODetector(xml, threads=1, amp="bf16")
    assert bf16.precision == "bf16"
    stats = compare_detections(ref, bf16(images), **REDUCED_PRECISION_MATCH)
    assert stats["matched"] >= 0.9 and stats["detections"] >= 60, stats


def test_predictor_runs_openvino(ir, monkeypatch):
    from detection.predictor import Predictor

    ex, xml = ir
    image = _images(seed=4)[2].permute(1, 2, 0).numpy()  # (H, W, 3) RGB
    out = Predictor(weights=xml, backend="openvino", amp="off", threads=1)(image)
    ref = Predictor(weights=ex.weights, amp="off")(image)
    ids = {c["id"] for c in ex.classes}
    assert len(out["boxes"]) > 20 and set(out["labels"].tolist()) <= ids
    assert compare_detections([ref], [out])["matched"] >= 0.95
    with pytest.raises(ValueError, match="an .xml file with 'openvino'"):
        Predictor(weights=xml)
    # auto on a CPU reported without native bf16: the f32 hint
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    predictor = Predictor(weights=xml, backend="openvino", threads=1)
    assert predictor.model.precision == "f32" and "no native bf16" in predictor.precision


def test_int8_export_runs_on_a_tiny_model(exported, synthetic_coco, tmp_path, one_thread):
    pytest.importorskip("nncf", reason='INT8 export needs the openvino extra: '
                                       'pip install -e ".[openvino]"')
    from detection.evaluation import Relabelled
    from detection.export.quantize import (accuracy_change, calibration_inputs,
                                           quantize_openvino, record_accuracy)
    from detection.setup import build_evaluator, build_split_for_test, build_test_loader

    ex = exported("fpn")
    d = synthetic_coco
    data = dataclasses.replace(
        ex.cfg.data, num_workers=0,
        train=dataclasses.replace(ex.cfg.data.train, images=d.train_images,
                                  annotations=d.train_annotations),
        test=dataclasses.replace(ex.cfg.data.test, images=d.val_images,
                                 annotations=d.val_annotations))
    cfg = dataclasses.replace(ex.cfg, data=data)
    xml = tmp_path / "int8.xml"
    inputs = calibration_inputs(build_split_for_test(cfg, "train"), 4, size_divisibility=32)
    quantize_openvino(ex.onnx, xml, inputs=inputs)
    model = ov.Core().read_model(str(xml))
    kinds = {op.get_type_name() for op in model.get_ops()}
    assert "FakeQuantize" in kinds or "FakeConvert" in kinds  # quantized convolutions
    out = OpenVINODetector(xml, threads=1, amp="off")(_images(seed=2))
    assert [sorted(o) for o in out] == [["boxes", "labels", "scores"]] * len(SIZES)
    # the model's classes are not the data's: evaluation relabels by name (none shared: 0 mAP)
    test = build_split_for_test(cfg, "test")
    evaluator = Relabelled(build_evaluator(cfg, test.classes), model_classes=ex.classes,
                           data_classes=test.classes)
    report = accuracy_change(ex.onnx, xml, loader=build_test_loader(cfg, test),
                             evaluator=evaluator, threads=1)
    assert set(report) == {"float32", "int8", "change", "matched", "detections"}
    assert report["change"]["mAP"] == pytest.approx(report["int8"]["mAP"]
                                                    - report["float32"]["mAP"])
    record_accuracy(xml, report, calib=4)
    stored = ov.Core().read_model(str(xml)).get_rt_info(["resdet", "int8"]).value
    assert json.loads(str(stored))["calibration_images"] == 4
    assert OpenVINODetector(xml, threads=1).classes == ex.classes  # metadata kept
