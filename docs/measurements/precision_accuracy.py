"""Accuracy of every reduced-precision path against our float32, on a trained checkpoint's test
set (docs/speed.md, "Accuracy"): PyTorch bf16 autocast, OpenVINO with the f32 and bf16 precision
hints, and OpenVINO INT8 (NNCF, calibrated on N training images). Per path: mAP@[.5,.95] and
mAP@.5 of data.test, and the share of float32 detections scoring above 0.3 that it reproduces
(same label, IoU > 0.9, score within 0.05).

    python docs/measurements/precision_accuracy.py --weights output/quickstart/best.pth \\
        --work /tmp/acc [--calib 300] [--threads 2] [--set data.test.annotations=...]

Prints one JSON object (also written to <work>/accuracy.json).
"""
import argparse
import copy
import dataclasses
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from detection.config import apply_overrides, config_from_dict, config_to_dict  # noqa: E402
from detection.export.exporter import export_onnx  # noqa: E402
from detection.export.openvino import OpenVINODetector, export_openvino  # noqa: E402
from detection.evaluation import Relabelled  # noqa: E402
from detection.export.quantize import (calibration_inputs, evaluate_graph,  # noqa: E402
                                       quantize_openvino)
from detection.export.runtime import REDUCED_PRECISION_MATCH, compare_detections  # noqa: E402
from detection.precision import resolve_precision  # noqa: E402
from detection.predictor import load_trained_model  # noqa: E402
from detection.setup import build_evaluator, build_split_for_test, build_test_loader  # noqa: E402


class TorchPath:
    """Our model in eval mode under ``amp`` (``off`` / ``bf16``), called like a GraphDetector."""

    training = False

    def __init__(self, model, classes, amp: str):
        self.precision = resolve_precision(amp, "cpu")
        # as Predictor and eval run it: FrozenBN folded, bf16 weights, one-call convolutions
        self.model, self.classes = self.precision.prepare(copy.deepcopy(model)), classes

    def __call__(self, images, original_sizes=None):
        with torch.inference_mode(), self.precision.autocast():
            out = self.model(images, original_sizes=original_sizes)
        return [{k: v.float() if v.is_floating_point() else v for k, v in d.items()}
                for d in out]


PATHS = ("torch float32", "torch bf16", "openvino f32", "openvino bf16", "openvino int8")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--weights", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--calib", type=int, default=300)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--set", nargs="*", default=[])
    p.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS,
                   help="the paths to measure (torch float32, the reference, always)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cfg, model, classes = load_trained_model(None, args.weights)
    cfg = config_from_dict(apply_overrides(config_to_dict(cfg), args.set))
    cfg = dataclasses.replace(cfg, output_dir=str(work / "eval"))
    onnx, xml, int8 = work / "model.onnx", work / "model.xml", work / "int8.xml"
    wanted = {"torch float32", *args.paths}
    if wanted & {"openvino f32", "openvino bf16", "openvino int8"}:
        export_onnx(model, onnx, cfg=cfg, classes=classes)
        export_openvino(onnx, xml)
    if "openvino int8" in wanted:
        quantize_openvino(onnx, int8, inputs=calibration_inputs(
            build_split_for_test(cfg, "train"), args.calib,
            size_divisibility=model.size_divisibility))
    test = build_split_for_test(cfg, "test")
    evaluator = build_evaluator(cfg, test.classes)
    if classes != test.classes:
        evaluator = Relabelled(evaluator, model_classes=classes, data_classes=test.classes)
    make = {"torch float32": lambda: TorchPath(model, classes, "off"),
            "torch bf16": lambda: TorchPath(model, classes, "bf16"),
            "openvino f32": lambda: OpenVINODetector(xml, threads=args.threads, amp="off"),
            "openvino bf16": lambda: OpenVINODetector(xml, threads=args.threads, amp="bf16"),
            "openvino int8": lambda: OpenVINODetector(int8, threads=args.threads, amp="auto")}
    paths = {name: make[name]() for name in PATHS if name in wanted}
    results, outputs = {}, {}
    for name, detector in paths.items():
        results[name], outputs[name] = evaluate_graph(detector, build_test_loader(cfg, test),
                                                      evaluator)
    ref = results["torch float32"]
    table = {}
    for name in paths:
        match = compare_detections(outputs["torch float32"], outputs[name],
                                   **REDUCED_PRECISION_MATCH)
        table[name] = {"mAP": results[name]["mAP"], "mAP50": results[name]["mAP50"],
                       "mAP_change": results[name]["mAP"] - ref["mAP"],
                       "matched": match["matched"], "detections_above_0.3": match["detections"]}
    report = {"weights": args.weights, "test": cfg.data.test.annotations,
              "calib": args.calib, "threads": args.threads, "paths": table}
    (work / "accuracy.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
