"""ONNX Runtime against PyTorch on the same weights: every variant, sizes and batch sizes."""
import numpy as np
import pytest
import torch

from detection.export.runtime import OnnxDetector, compare_detections, pad_batch

#: (h, w) of the images: three sizes up to the config's max size (160), batch 1 and 3
SIZES = [(64, 96), (120, 100), (128, 160)]


def _images(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for h, w in SIZES]


@pytest.mark.parametrize("variant", ["fpn", "fpn_v2", "c4", "vgg"])
def test_onnxruntime_detections_equal_pytorch(variant, exported, one_thread):
    ex = exported(variant)
    detector = OnnxDetector(ex.onnx, threads=1)
    images = _images(seed=2)
    for batch in [[im] for im in images] + [images]:
        with torch.inference_mode():
            ref = ex.model(batch)
        out = detector(batch)
        stats = compare_detections(ref, out)
        assert stats["matched"] >= 0.95 and stats["max_count_diff"] <= 2, (variant, stats)
        # weights that give many detections of many classes, not a handful near the threshold
        assert stats["detections"] >= 20 * len(batch), (variant, stats)
        assert all(len(set(r["labels"].tolist())) >= 5 for r in ref)
        for r, o in zip(ref, out):
            assert o["boxes"].dtype == torch.float32 and o["labels"].dtype == torch.int64


@pytest.mark.parametrize("variant", ["fpn_mask", "c4_mask"])
def test_onnxruntime_masks_equal_pytorch(variant, exported, one_thread):
    """A Mask R-CNN's file: the same detections (same rule as above) and, on every matched
    detection, the same mask at RoI resolution (IoU > 0.99 thresholded at 0.5)."""
    ex = exported(variant)
    detector = OnnxDetector(ex.onnx, threads=1)
    assert detector.output_names[-1] == "masks"
    images = _images(seed=3)
    size = 28 if variant == "fpn_mask" else 8  # C4 here: res5 on 8x8 pooled maps, 4x4 -> 8x8
    for batch in ([images[0]], images) if variant == "fpn_mask" else (images,):
        with torch.inference_mode():
            ref = ex.model(batch)
        out = detector(batch)
        stats = compare_detections(ref, out)
        assert stats["matched"] >= 0.95 and stats["max_count_diff"] <= 2, (variant, stats)
        assert stats["detections"] >= 20 * len(batch), (variant, stats)
        assert stats["mask_matched"] == 1.0 and stats["mask_iou_min"] > 0.99, stats
        for r, o in zip(ref, out):
            assert o["masks"].shape == (len(o["boxes"]), 1, size, size)
            on = (r["masks"] > 0.5).float().mean()
            assert 0.1 < float(on) < 0.9  # masks with shape, not all on or off
    high = OnnxDetector(ex.onnx, threads=1, score_thresh=0.5)(images[:1])[0]
    assert 0 < len(high["boxes"]) < len(out[0]["boxes"])  # the masks filtered with the boxes
    assert high["masks"].shape == (len(high["boxes"]), 1, size, size)


def test_no_detection_gives_no_mask(exported, tmp_path, one_thread):
    """An image without detections (a score threshold no RoI passes, inside the graph)."""
    from detection.export.exporter import export_onnx

    ex = exported("fpn_mask")
    ex.model.roi_heads.score_thresh = 1.0
    try:
        export_onnx(ex.model, tmp_path / "none.onnx", cfg=ex.cfg, classes=ex.classes)
    finally:
        ex.model.roi_heads.score_thresh = ex.cfg.model.roi_heads.score_thresh
    (out,) = OnnxDetector(tmp_path / "none.onnx", threads=1)(_images(seed=3)[:1])
    assert out["boxes"].shape == (0, 4) and out["masks"].shape == (0, 1, 28, 28)


def test_original_sizes_and_a_higher_score_threshold_are_exact(exported, one_thread):
    ex = exported("fpn")
    images = _images(seed=3)
    originals = [(2 * h, 3 * w) for h, w in SIZES]
    heads = ex.model.roi_heads
    saved, heads.score_thresh = heads.score_thresh, 0.3
    try:
        with torch.inference_mode():
            ref = ex.model(images, original_sizes=originals)
    finally:
        heads.score_thresh = saved
    out = OnnxDetector(ex.onnx, threads=1, score_thresh=0.3)(images, original_sizes=originals)
    stats = compare_detections(ref, out)
    assert stats["matched"] >= 0.95 and stats["max_count_diff"] <= 2 and stats["detections"] > 30
    assert all(bool((o["scores"] >= 0.3).all()) for o in out)
    assert max(float(o["boxes"][:, 2].max()) for o in out) > max(w for _, w in SIZES)  # rescaled


def test_score_threshold_below_the_exported_one_is_refused(exported):
    ex = exported("fpn")
    with pytest.raises(ValueError, match="below the 0.05 that .*model.onnx was exported with"):
        OnnxDetector(ex.onnx, score_thresh=0.01)
    with pytest.raises(FileNotFoundError, match="ONNX file not found"):
        OnnxDetector(ex.onnx.parent / "missing.onnx")
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(ValueError, match="device 'cuda:0': ONNX Runtime here has only"):
            OnnxDetector(ex.onnx, device="cuda:0")


def test_pad_batch_zero_pads_to_the_size_divisibility():
    a = np.full((3, 5, 7), 9, np.uint8)
    b = np.full((3, 33, 2), 4, np.uint8)
    batch, sizes = pad_batch([a, b], 32)
    assert batch.shape == (2, 3, 64, 32) and batch.dtype == np.uint8
    np.testing.assert_array_equal(sizes, [[5, 7], [33, 2]])
    assert batch[0, :, :5, :7].min() == 9 and batch[0].sum() == 9 * 3 * 5 * 7
    assert batch[1, :, :33, :2].min() == 4 and batch[1].sum() == 4 * 3 * 33 * 2
    with pytest.raises(ValueError, match=r"image 1 must be a uint8 \(3, H, W\) array"):
        pad_batch([a, b.astype(np.float32)], 32)


def test_compare_detections_by_hand():
    ref = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 40, 40], [0, 0, 5, 5]]),
            "scores": torch.tensor([0.9, 0.8, 0.7]), "labels": torch.tensor([1, 2, 1])}]
    other = [{"boxes": torch.tensor([[0.0, 0, 10, 10.01], [20, 20, 40, 40], [0, 0, 5, 5],
                                     [1, 1, 2, 2]]),
              "scores": torch.tensor([0.9005, 0.8, 0.7, 0.1]),
              "labels": torch.tensor([1, 3, 1, 1])}]
    # box 0: IoU 0.999, score off by 5e-4 -> match; box 1: other label; box 2: equal
    stats = compare_detections(ref, other)
    assert stats == {"matched": pytest.approx(2 / 3), "max_count_diff": 1, "detections": 3}
    assert compare_detections(ref, other, score_tol=1e-4)["matched"] == pytest.approx(1 / 3)
