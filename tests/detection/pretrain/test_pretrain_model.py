"""The classifier (backbone + pool + fc) and its exported weights: build_backbone loads them with
equal features, torchvision's own ResNet / VGG-16 take the same file, a few steps over-fit."""

import pytest
import torch
import torchvision

from backbones import build_backbone
from detection.pretrain.config import PretrainConfig
from detection.pretrain.model import (ImageClassifier, backbone_state_dict,
                                      export_backbone)
from detection.pretrain.setup import build_classifier

MEAN, STD = [120.0, 110.0, 100.0], [60.0, 55.0, 50.0]


def _classifier(name: str, num_classes: int = 7, **options) -> ImageClassifier:
    torch.manual_seed(0)
    backbone = build_backbone(name, norm="BN", freeze_at=0, **options)
    model = ImageClassifier(backbone=backbone, num_classes=num_classes, pixel_mean=MEAN,
                            pixel_std=STD)
    with torch.no_grad():  # statistics like a trained model's, so loading them is checked
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.bias.normal_(0, 0.1)
    return model.eval()


@pytest.mark.parametrize("name, size", [("resnet18", 64), ("cifar_plain20", 32),
                                        ("cifar_resnet20", 32)])
def test_exported_backbone_loads_with_equal_features(name, size, tmp_path, one_thread):
    model = _classifier(name)
    export_backbone(model, tmp_path / "backbone.pth", arch=name, iteration=3)
    loaded = build_backbone(name, weights=tmp_path / "backbone.pth", norm="BN").eval()
    images = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8)
    x = (images.float() - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        ours, theirs = model.backbone(x), loaded(x)
        assert all(torch.equal(ours[k], theirs[k]) for k in ours) and len(ours) >= 3
        logits = model(images)
    # the fc is in the file too: pooled features through it give the classifier's logits
    state = torch.load(tmp_path / "backbone.pth", weights_only=True)
    last = ours[model.in_feature].mean(dim=(2, 3))
    assert torch.allclose(last @ state["model"]["fc.weight"].T + state["model"]["fc.bias"],
                          logits, atol=1e-6)
    assert state["arch"] == name and state["iteration"] == 3


def test_resnet_export_is_torchvisions_layout(one_thread):
    model = _classifier("resnet18", num_classes=7)
    reference = torchvision.models.resnet18(num_classes=7).eval()
    reference.load_state_dict(backbone_state_dict(model))  # strict: every key, nothing else
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    x = (images.float() - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model(images), reference(x), atol=1e-5)


def test_vgg16_classifier_exports_torchvisions_layout():
    cfg = PretrainConfig()
    cfg.model.backbone.name = "vgg16"
    with torch.device("meta"):
        model = build_classifier(cfg, num_classes=1000)
        keys = set(backbone_state_dict(model, fc_prefix="classifier.6"))
        expected = set(torchvision.models.vgg16().state_dict())
    assert keys == expected


def test_training_output_and_a_few_steps_overfit(one_thread):
    model = _classifier("cifar_resnet20", num_classes=3).train()
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(25):
        out = model(images, labels)
        optimizer.zero_grad()
        out["loss_cls"].backward()
        optimizer.step()
    assert set(out) == {"loss_cls", "top1_err"} and not out["top1_err"].requires_grad
    assert out["top1_err"].item() in {100 * k / 6 for k in range(7)}
    assert out["loss_cls"].item() < 0.1 and out["top1_err"].item() == 0.0
    with pytest.raises(ValueError, match="needs labels"):
        model(images)
