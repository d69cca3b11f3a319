"""Our bf16 path before and after ``Precision.prepare``, beside torchvision (docs/speed.md).

One process, alternating calls: torchvision's float32 ``FasterRCNN``; our model under bf16
autocast as it is built (what inference ran before ``prepare`` folded the norms, stored bf16
weights and fused the ResNet blocks' convolutions); and our prepared model (what ``Predictor``
and ``resdet eval`` run). R-50-FPN with torchvision's hyperparameters, like-trained random
weights (``detection.benchmark.build_models``), one 512 x 683 image.

    python docs/measurements/side_by_side.py --threads 2 --calls 7

Prints one JSON object: medians (ms) and each path's images/s over torchvision's.
"""
import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from detection.benchmark import build_models  # noqa: E402
from detection.config import load_config  # noqa: E402
from detection.precision import resolve_precision  # noqa: E402

PATHS = ("torchvision_float32", "ours_bf16_unprepared", "ours_bf16_prepared")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--calls", type=int, default=7, help="timed calls of each path")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(str(ROOT / "configs/coco/faster_rcnn_R_50_FPN_torchvision.yaml"),
                      ["model.backbone.weights=null"])
    models = build_models(cfg, compare_torchvision=True, height=512, width=683,
                          device=torch.device("cpu"), weights=None)
    bf16 = resolve_precision("bf16", "cpu")
    ours, torchvision = models["ours"].eval(), models["torchvision"].eval()
    prepared = bf16.prepare(copy.deepcopy(ours))
    image = torch.randint(0, 255, (3, 512, 683), dtype=torch.uint8)

    def call(path: str) -> None:
        with torch.inference_mode():
            if path == "torchvision_float32":
                torchvision([image.float() / 255])
                return
            with bf16.autocast():
                (ours if path == "ours_bf16_unprepared" else prepared)([image])

    for path in PATHS:  # warm-up
        call(path)
    times: dict[str, list[float]] = {path: [] for path in PATHS}
    for _ in range(args.calls):
        for path in PATHS:
            start = time.perf_counter()
            call(path)
            times[path].append(time.perf_counter() - start)
    median = {path: 1000 * statistics.median(t) for path, t in times.items()}
    print(json.dumps({
        "threads": args.threads, "median_ms": {k: round(v, 1) for k, v in median.items()},
        "images_per_s_over_torchvision": {
            k: round(median["torchvision_float32"] / v, 3) for k, v in median.items()}},
        indent=1))


if __name__ == "__main__":
    main()
