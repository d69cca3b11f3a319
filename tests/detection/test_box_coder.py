"""Box coder: worked examples by hand, the decode clamp, round trips, torchvision's numbers."""
import math

import torch
from torchvision.models.detection._utils import BoxCoder as TVBoxCoder

from detection.box_coder import BoxCoder


def test_encode_worked_example():
    # reference (0, 0, 10, 20): w_a = 10, h_a = 20, centre (5, 10)
    boxes = torch.tensor([[0.0, 0.0, 10.0, 20.0], [0.0, 0.0, 10.0, 20.0]])
    # gt 1 (2, 4, 12, 24): same size, centre (7, 14)
    #   t_x = 10 * (7 - 5) / 10 = 2,  t_y = 10 * (14 - 10) / 20 = 2,  t_w = t_h = 5 * log 1 = 0
    # gt 2 (0, 0, 20, 10): w = 20, h = 10, centre (10, 5)
    #   t_x = 10 * (10 - 5) / 10 = 5,  t_y = 10 * (5 - 10) / 20 = -2.5,
    #   t_w = 5 * log(20 / 10) = 3.4657359,  t_h = 5 * log(10 / 20) = -3.4657359
    gt = torch.tensor([[2.0, 4.0, 12.0, 24.0], [0.0, 0.0, 20.0, 10.0]])
    coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    expected = torch.tensor([[2.0, 2.0, 0.0, 0.0], [5.0, -2.5, 3.4657359, -3.4657359]])
    torch.testing.assert_close(coder.encode(gt, boxes), expected)
    torch.testing.assert_close(coder.decode(expected, boxes), gt)


def test_decode_worked_example_and_clamp():
    coder = BoxCoder()  # weights 1
    anchor = torch.tensor([[0.0, 0.0, 16.0, 8.0]])  # centre (8, 4), 16 x 8
    # (0.5, -1, log 2, 0): centre (8 + 0.5 * 16, 4 - 8) = (16, -4), size 32 x 8
    deltas = torch.tensor([[0.5, -1.0, math.log(2.0), 0.0]])
    torch.testing.assert_close(coder.decode(deltas, anchor), torch.tensor([[0.0, -8.0, 32.0, 0.0]]))
    # t_w = 100 is clamped at log(1000 / 16): width 16 * 62.5 = 1000 around x = 8
    big = torch.tensor([[0.0, 0.0, 100.0, 0.0]])
    torch.testing.assert_close(coder.decode(big, anchor), torch.tensor([[-492.0, 0.0, 508.0, 8.0]]))


def test_class_specific_layout():
    """(M, C*4) deltas decode class by class, columns 4k..4k+3."""
    coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    boxes = torch.tensor([[10.0, 10.0, 30.0, 50.0]])
    deltas = torch.tensor([[0.0, 0.0, 0.0, 0.0, 10.0, 0.0, 0.0, 0.0]])  # class 1 moves x by w
    out = coder.decode(deltas, boxes)
    expected = torch.tensor([[10.0, 10.0, 30.0, 50.0, 30.0, 10.0, 50.0, 50.0]])
    torch.testing.assert_close(out, expected)


def test_round_trip_and_torchvision():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(200, 2, generator=g) * 500
    boxes = torch.cat([xy, xy + 1 + torch.rand(200, 2, generator=g) * 300], dim=1)
    xy = torch.rand(200, 2, generator=g) * 500
    gt = torch.cat([xy, xy + 1 + torch.rand(200, 2, generator=g) * 300], dim=1)
    for weights in [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)]:
        coder, tv = BoxCoder(weights=weights), TVBoxCoder(weights)
        deltas = coder.encode(gt, boxes)
        torch.testing.assert_close(coder.decode(deltas, boxes), gt, atol=1e-3, rtol=1e-5)
        assert torch.equal(deltas, tv.encode_single(gt, boxes))
        noise = torch.randn(200, 12, generator=g) * 2
        assert torch.equal(coder.decode(noise, boxes), tv.decode_single(noise, boxes))
