"""Cost of starting DataLoader workers after the parent used OpenCV: the fix in the loaders
(fork while OpenCV's pool is shut down) vs the 'spawn' and 'forkserver' start methods.
Time from iter(loader) to the first batch; each start in a fresh loader, median of 5.

    python docs/measurements/loader_start.py   # from the repository root

(docs/benchmarks.md, "Data loading")
"""
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from torch.utils.data import DataLoader  # noqa: E402
from detection.config import load_config  # noqa: E402
from detection.data.loader import ForkSafeLoader, collate  # noqa: E402
from detection.setup import prepare_data, build_test_dataset  # noqa: E402


def main():
    cfg = prepare_data(load_config(ROOT / "configs/quickstart.yaml"))
    ds = build_test_dataset(cfg)
    cv2.resize(np.zeros((2000, 2000, 3), np.uint8), (1000, 1000))  # the parent's pool is live
    cv2.GaussianBlur(np.zeros((2000, 2000, 3), np.uint8), (15, 15), 0)
    for name in ("fork (pool shut down)", "spawn", "forkserver"):
        times = []
        for _ in range(5):
            kw = dict(batch_size=2, num_workers=2, collate_fn=collate)
            loader = (ForkSafeLoader(ds, **kw) if name.startswith("fork ") else
                      DataLoader(ds, multiprocessing_context=name, **kw))
            start = time.perf_counter()
            next(iter(loader))
            times.append(time.perf_counter() - start)
        print(f"{name:22s} first batch after {statistics.median(times)*1000:7.0f} ms "
              f"(median of 5: {', '.join(f'{x*1000:.0f}' for x in times)})", flush=True)


if __name__ == "__main__":
    main()
