"""Box heads and predictor: shapes, the res5 + average pool head, torchvision's delta layout."""
import pytest
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


def test_vgg_fc_head_is_vgg16s_fc6_fc7():
    torch.manual_seed(0)
    backbone = build_backbone("vgg16", weights=None)
    head = VGGFCHead(fc=backbone.split_head())
    assert head.out_channels == 4096 and backbone.classifier is None
    x = torch.randn(3, 512, 7, 7)
    fc6, fc7 = [m for m in head.modules() if isinstance(m, nn.Linear)]
    assert (fc6.in_features, fc6.out_features, fc7.out_features) == (512 * 7 * 7, 4096, 4096)
    with torch.no_grad():
        expected = torch.relu(fc7(torch.relu(fc6(x.flatten(1)))))  # (R, 512, 7, 7) -> (R, 4096)
        torch.testing.assert_close(head.eval()(x), expected)
        head.train()  # dropout after fc6 and fc7 in training, as VGG-16 was trained
        assert not torch.equal(head(x), expected)
    with pytest.raises(ValueError, match="out_channels"):
        VGGFCHead(fc=nn.Linear(4, 4))


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
