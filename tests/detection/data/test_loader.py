"""Loader workers start safely after the parent used OpenCV (detection/data/loader.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2

from detection.data.loader import ForkSafeLoader, _opencv_pool_shut_down

REPO = Path(__file__).resolve().parents[3]

# The parent runs OpenCV on a large image (its thread pool starts), lets the pool's threads go
# to sleep on their condition variable, then starts loader workers. A forked worker that
# inherits that pool blocks for ever in cv2.setNumThreads (its _init_worker): with the old
# plain DataLoader this script never prints "ok".
SCRIPT = textwrap.dedent("""
    import sys, time
    import cv2, numpy as np
    from detection.data.coco import COCODataset
    from detection.data.loader import make_test_loader, make_train_loader
    from detection.data.transforms import build_transforms

    cv2.setNumThreads(2)
    big = np.random.default_rng(0).integers(0, 256, (1000, 1000, 3), dtype=np.uint8)
    cv2.GaussianBlur(cv2.resize(big, (1500, 1500)), (9, 9), 0)
    time.sleep(1.0)
    images, annotations = sys.argv[1:3]
    train = COCODataset(images=images, annotations=annotations, train=True,
                        transforms=build_transforms(train=True, min_size=[64], max_size=96))
    next(iter(make_train_loader(train, batch_size=2, num_workers=1, seed=0)))
    cv2.GaussianBlur(big, (9, 9), 0)  # the parent's pool is back, and works
    test = COCODataset(images=images, annotations=annotations, train=False)
    assert sum(len(b) for b in make_test_loader(test, num_workers=1)) == len(test)
    print("ok", cv2.getNumThreads())
""")


def test_workers_start_after_the_parent_used_opencv(synthetic_coco):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1",
               NO_ALBUMENTATIONS_UPDATE="1")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, synthetic_coco.train_images,
                           synthetic_coco.train_annotations], env=env, capture_output=True,
                          text=True, timeout=300)  # a hang fails here
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-2:] == ["ok", "2"]  # the parent's thread count is restored


def test_the_pool_is_shut_down_only_while_workers_start():
    threads = cv2.getNumThreads()
    with _opencv_pool_shut_down():
        assert cv2.getNumThreads() == 1
    assert cv2.getNumThreads() == threads
    loader = ForkSafeLoader(list(range(4)), batch_size=2, num_workers=0)
    assert [b.tolist() for b in loader] == [[0, 1], [2, 3]]


def test_the_test_loaders_workers_end_with_each_pass(synthetic_coco):
    """A worker forked during training would keep the main process's freed pages alive as long
    as it lives (docs/long_runs.md): the test loader's end with the pass, the training
    loader's stay (an endless stream)."""
    from detection.benchmark.soak import child_pids
    from detection.data.coco import COCODataset
    from detection.data.loader import make_test_loader, make_train_loader
    from detection.data.transforms import build_transforms

    test = COCODataset(images=synthetic_coco.val_images,
                       annotations=synthetic_coco.val_annotations, train=False)
    before = set(child_pids(os.getpid()))
    loader = make_test_loader(test, num_workers=1)
    for _ in range(2):  # one evaluation after another
        assert sum(len(batch) for batch in loader) == len(test)
        assert set(child_pids(os.getpid())) == before
    train = COCODataset(images=synthetic_coco.train_images,
                        annotations=synthetic_coco.train_annotations, train=True,
                        transforms=build_transforms(train=True, min_size=[64], max_size=96))
    stream = iter(make_train_loader(train, batch_size=2, num_workers=1, seed=0))
    next(stream)
    assert len(set(child_pids(os.getpid())) - before) == 1
    del stream
