"""Box heads and predictor: shapes, the res5 + average pool head, torchvision's delta layout."""
import torch
from torch import nn

from backbones import build_backbone
from detection.box_heads import BoxPredictor, Res5Head, TwoFCHead, VGGFCHead


def test_two_fc_head():
    head = TwoFCHead(in_channels=8, resolution=7, fc_dim=32)
    x = torch.randn(5, 8, 7, 7)
    out = head(x)
    assert out.shape == (5, 32) and bool((out >= 0).all())  # ReLU after fc7
    expected = torch.relu(head.fc7(torch.relu(head.fc6(x.reshape(5, -1)))))
    torch.testing.assert_close(out, expected)


def test_res5_head_on_pooled_res4():
    backbone = build_backbone("resnet18", weights=None, out_features=["res4"])
    head = Res5Head(res5=backbone.split_head()).eval()
    x = torch.randn(3, 256, 14, 14)  # ResNet-18 res4 has 256 channels
    with torch.no_grad():
        out = head(x)
        res5 = head.res5(x)
    assert res5.shape == (3, 512, 7, 7)
    assert out.shape == (3, 512) and head.out_channels == 512
    torch.testing.assert_close(out, res5.mean(dim=(2, 3)))


def test_vgg_fc_head():
    fc = nn.Sequential(nn.Flatten(), nn.Linear(512 * 49, 16))
    fc.out_channels = 16
    head = VGGFCHead(fc=fc)
    assert head(torch.randn(2, 512, 7, 7)).shape == (2, 16) and head.out_channels == 16


def test_predictor_shapes_and_init():
    torch.manual_seed(0)
    predictor = BoxPredictor(in_channels=64, num_classes=3)
    logits, deltas = predictor(torch.randn(10, 64))
    assert logits.shape == (10, 4) and deltas.shape == (10, 16)  # (K + 1) * 4, class-major
    # Detectron2's init: small weights (std 0.01 / 0.001), zero biases
    with torch.no_grad():
        assert abs(float(predictor.cls_score.weight.std()) - 0.01) < 0.002
        assert abs(float(predictor.bbox_pred.weight.std()) - 0.001) < 0.0002
    assert predictor.cls_score.bias.abs().sum() == 0 and predictor.bbox_pred.bias.abs().sum() == 0
