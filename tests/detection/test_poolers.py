"""RoI pooler: FPN level assignment by hand, MultiScaleRoIAlign, RoIAlignV2, RoIPool."""
import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign, roi_align, roi_pool

from detection.poolers import RoIPooler, assign_fpn_levels, nchw_float32, threaded_roi_align


def _square(side: float) -> list[float]:
    return [10.0, 10.0, 10.0 + side, 10.0 + side]


def test_level_assignment_by_hand():
    # k = floor(4 + log2(side / 224)), clamped to [2, 5], minus 2:
    # 224 -> 4 -> 2;  223 -> floor(3.994) = 3 -> 1;  112 -> 3 -> 1;  448 -> 5 -> 3;
    # 10 -> floor(-0.49) = -1 -> 2 -> 0;  1000 -> floor(6.16) = 6 -> 5 -> 3;  56 -> 2 -> 0
    sides = [224, 223, 112, 448, 10, 1000, 56]
    boxes = torch.tensor([_square(s) for s in sides])
    assert assign_fpn_levels(boxes, min_level=2, max_level=5).tolist() == [2, 1, 1, 3, 0, 3, 0]


def test_equals_multiscale_roi_align():
    torch.manual_seed(0)
    feats = [torch.randn(2, 4, 64 // s, 96 // s) for s in (4, 8, 16, 32)]
    xy = torch.rand(2, 30, 2) * 60
    boxes = [torch.cat([xy[i], xy[i] + 2 + torch.rand(30, 2) * 300], dim=1) for i in range(2)]
    ours = RoIPooler(output_size=7, strides=[4, 8, 16, 32], sampling_ratio=2)
    tv = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
    expected = tv({str(i): f for i, f in enumerate(feats)}, boxes, [(64, 96), (60, 90)])
    out = ours(feats, boxes)
    assert out.shape == (60, 4, 7, 7)
    assert torch.equal(out, expected)


def test_single_level_roi_pool():
    torch.manual_seed(0)
    feat = torch.randn(1, 3, 10, 12)
    boxes = [torch.tensor([[0.0, 0.0, 64.0, 48.0], [16.0, 32.0, 100.0, 150.0]])]
    pooler = RoIPooler(output_size=7, strides=[16], pooler_type="ROIPool")
    assert torch.equal(pooler([feat], boxes), roi_pool(feat, boxes, 7, 1 / 16))


def test_roi_align_v2_is_aligned_by_hand():
    """On the ramp f[y, x] = x one bilinear sample returns its x coordinate. Box (0, 0, 4, 4)
    with one bin and one sample: ROIAlign samples at x = 2 (pixel i at coordinate i),
    ROIAlignV2 shifts the box by -0.5 px (pixel i's centre at i + 0.5) and samples at 1.5."""
    feat = torch.arange(8.0).repeat(8, 1)[None, None]  # (1, 1, 8, 8), value = column index
    boxes = [torch.tensor([[0.0, 0.0, 4.0, 4.0]])]
    values = {kind: RoIPooler(output_size=1, strides=[1], pooler_type=kind,
                              sampling_ratio=1)([feat], boxes).item()
              for kind in ("ROIAlign", "ROIAlignV2")}
    assert values == {"ROIAlign": 2.0, "ROIAlignV2": 1.5}


def test_gradients_reach_every_level():
    feats = [torch.randn(1, 2, 256 // s, 256 // s, requires_grad=True) for s in (4, 8)]
    # side 20 -> floor(4 + log2(20 / 224)) = 0 -> clamped to p2; side 150 -> floor(3.42) = p3
    boxes = [torch.tensor([[0.0, 0.0, 20.0, 20.0], [50.0, 50.0, 200.0, 200.0]])]
    RoIPooler(output_size=2, strides=[4, 8], sampling_ratio=2)(feats, boxes).sum().backward()
    assert all(f.grad.abs().sum() > 0 for f in feats)


def test_bad_strides():
    with pytest.raises(ValueError, match="powers of two"):
        RoIPooler(output_size=7, strides=[4, 12])


@pytest.mark.parametrize("aligned", [False, True])
def test_threaded_roi_align_equals_one_call(aligned):
    """Three threads of 50 RoIs: torchvision's features bitwise, its gradient up to summation
    order; with one thread (or too few RoIs) it is torchvision's single call."""
    g = torch.Generator().manual_seed(0)
    feature = torch.randn(2, 3, 20, 24, generator=g, dtype=torch.float64).contiguous(
        memory_format=torch.channels_last).requires_grad_(True)
    xy = torch.rand(150, 2, generator=g, dtype=torch.float64) * 60
    boxes = torch.cat([xy, xy + 1 + torch.rand(150, 2, generator=g, dtype=torch.float64) * 40], 1)
    rois = torch.cat([torch.randint(0, 2, (150, 1), generator=g).double(), boxes], 1)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        out = threaded_roi_align(feature, rois, (5, 5), 0.5, 2, aligned=aligned,
                                 min_rois_per_thread=50)
        assert type(out.grad_fn).__name__ == "_ThreadedRoIAlignBackward"
        torch.set_num_threads(1)
        single = threaded_roi_align(feature, rois, (5, 5), 0.5, 2, aligned=aligned)
        assert type(single.grad_fn).__name__ != "_ThreadedRoIAlignBackward"
    finally:
        torch.set_num_threads(threads)
    expected = roi_align(feature, rois, (5, 5), 0.5, 2, aligned)
    assert torch.equal(out, expected) and torch.equal(single, expected)
    grad = torch.randn(expected.shape, generator=g, dtype=torch.float64)
    (got,) = torch.autograd.grad(out, feature, grad)
    (want,) = torch.autograd.grad(expected, feature, grad)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert want.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_channels_last_maps_reach_roi_align_as_they_are(dtype):
    """nchw_float32 of a channels-last map, in row blocks (one short), is
    ``.float().contiguous()`` bit for bit; RoIAlign under bf16 autocast pools those floats, on
    one thread or several, and returns the map's dtype."""
    g = torch.Generator().manual_seed(1)
    cl = torch.channels_last
    feature = torch.randn(2, 5, 9, 7, generator=g).to(dtype).contiguous(memory_format=cl)
    out = nchw_float32(feature, rows=10)  # 63 pixels: blocks of 10, the last of 3
    assert out.is_contiguous() and out.dtype == torch.float32
    assert torch.equal(out, feature.float().contiguous())
    xy = torch.rand(140, 2, generator=g) * 20
    rois = torch.cat([torch.randint(0, 2, (140, 1), generator=g).float(), xy,
                      xy + 1 + torch.rand(140, 2, generator=g) * 10], 1)
    expected = roi_align(feature.float(), rois, (3, 3), 0.5, 2, True)
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                got = threaded_roi_align(feature, rois, (3, 3), 0.5, 2, aligned=True,
                                         min_rois_per_thread=64)
            assert got.dtype == dtype and torch.equal(got, expected.to(dtype)), n
    finally:
        torch.set_num_threads(threads)
