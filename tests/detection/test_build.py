"""build_model: variants chosen by one config key; inconsistent combinations fail with the key."""
import pytest
import torch

from detection import FasterRCNN, build_model
from detection.box_heads import Res5Head, TwoFCHead, VGGFCHead
from detection.config import dump_config, load_config
from detection.fpn import FPN

BASE = ["model.backbone.weights=null", "model.num_classes=4"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _build(*overrides):
    return build_model(load_config(None, BASE + list(overrides)))


def test_default_is_r50_fpn():
    model = _build()
    assert isinstance(model, FasterRCNN) and isinstance(model.backbone, FPN)
    assert model.backbone.out_features == ["p2", "p3", "p4", "p5", "p6"]
    assert model.backbone.strides == {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}
    assert isinstance(model.roi_heads.box_head, TwoFCHead)
    assert model.roi_heads.box_head.fc6.in_features == 256 * 7 * 7
    assert model.rpn.head.cls_logits.out_channels == 3  # 1 size x 3 ratios per level
    assert model.roi_heads.box_predictor.cls_score.out_features == 5  # 4 classes + background
    assert model.roi_heads.box_predictor.bbox_pred.out_features == 20


def test_c4_and_vgg_variants_from_one_key():
    c4 = _build("model.backbone.name=resnet101", "model.roi_heads.box_head=c4_res5")
    assert isinstance(c4.roi_heads.box_head, Res5Head) and len(c4.roi_heads.box_head.res5) == 3
    assert not isinstance(c4.backbone, FPN) and c4.rpn.in_features == ["res4"]
    assert c4.roi_heads.in_features == ["res4"]
    assert c4.rpn.head.cls_logits.out_channels == 15  # 5 sizes x 3 ratios on res4
    assert c4.roi_heads.pooler.scales == [1 / 16] and c4.roi_heads.pooler.output_size == (14, 14)
    vgg = _build("model.backbone.name=vgg16", "model.roi_heads.box_head=vgg_fc",
                 "model.roi_heads.pooler_type=ROIPool")
    assert isinstance(vgg.roi_heads.box_head, VGGFCHead)
    assert vgg.rpn.in_features == ["conv5"] and vgg.roi_heads.in_features == ["conv5"]
    assert vgg.roi_heads.box_predictor.cls_score.in_features == 4096
    assert vgg.roi_heads.pooler.pooler_type == "ROIPool"
    assert vgg.roi_heads.pooler.output_size == (7, 7)
    assert vgg.rpn.head.conv.in_channels == 512


def test_derived_keys_are_written_and_explicit_values_win():
    cfg = load_config(None, BASE + ["model.roi_heads.box_head=c4_res5"])
    m = cfg.model
    assert (m.fpn.enabled, m.rpn.in_features, m.roi_heads.in_features) == (
        False, ["res4"], ["res4"])
    assert m.anchor_generator.sizes == [[32.0, 64.0, 128.0, 256.0, 512.0]]
    assert m.roi_heads.pooler_resolution == 14
    # the resolved config (config.yaml, --print-config) spells the derived values out
    assert "in_features: [res4]" in dump_config(cfg) and "enabled: false" in dump_config(cfg)
    c4 = _build("model.backbone.name=resnet18", "model.roi_heads.box_head=c4_res5",
                "model.anchor_generator.sizes=[[64, 128, 256, 512]]",
                "model.roi_heads.pooler_resolution=7")
    assert c4.rpn.head.cls_logits.out_channels == 12  # 4 sizes x 3 ratios
    assert c4.roi_heads.pooler.output_size == (7, 7)


def test_num_classes_argument_and_missing():
    model = build_model(load_config(None, ["model.backbone.weights=null",
                                           "model.backbone.name=resnet18"]), num_classes=7)
    assert model.roi_heads.box_predictor.num_classes == 7
    with pytest.raises(ValueError, match="model.num_classes"):
        build_model(load_config(None, ["model.backbone.weights=null"]))


C4 = "model.roi_heads.box_head=c4_res5"
P2_P6 = "model.rpn.in_features=[p2, p3, p4, p5, p6]"


@pytest.mark.parametrize("overrides, message", [
    ([C4, "model.fpn.enabled=true"], "'c4_res5' .* set model.fpn.enabled: false"),
    (["model.backbone.name=vgg16", C4],
     "'c4_res5' .* needs a ResNet backbone, got model.backbone.name 'vgg16'"),
    (["model.roi_heads.box_head=vgg_fc"], "'vgg_fc' .* needs model.backbone.name"),
    (["model.backbone.name=vgg16", "model.roi_heads.box_head=vgg_fc", "model.fpn.enabled=true"],
     "'vgg_fc' pools VGG-16's conv5: set model.fpn.enabled: false"),
    (["model.backbone.name=vgg16"], "'fpn_2fc' needs the FPN of a ResNet backbone"),
    (["model.fpn.enabled=false"], "'fpn_2fc' needs model.fpn.enabled: true"),
    (["model.backbone.name=vgg16", "model.roi_heads.box_head=vgg_fc",
      "model.roi_heads.pooler_resolution=14"], "pooler_resolution must be 7"),
    ([C4, P2_P6], r"model.rpn.in_features \['p2'"),
    ([C4, "model.roi_heads.in_features=[p2, p3]"], r"model.roi_heads.in_features \['p2'"),
    (["model.anchor_generator.sizes=[[32], [64]]"], "sizes has 2 entries .* 5 levels"),
    (["model.anchor_generator.aspect_ratios=[[1.0], [0.5, 1.0], [1.0], [1.0], [1.0]]"],
     "same number of anchors"),
])
def test_inconsistent_combinations(overrides, message):
    with pytest.raises(ValueError, match=message):
        _build("model.backbone.name=resnet18", *overrides)


def test_plain_backbone_builds():
    model = _build("model.backbone.name=plain18")
    assert model.backbone.bottom_up.residual is False
    with torch.no_grad():
        model.eval()([torch.zeros(3, 64, 64)])


def test_recipe_keys_reach_the_model():
    """norm_eps in every norm layer (the C4 head's res5 included), input_format, ROIAlignV2,
    the L1 losses and cross-boundary anchors: the config keys the recipes set."""
    from torchvision.ops import FrozenBatchNorm2d

    model = _build("model.backbone.name=resnet50", C4, "model.backbone.norm_eps=0.0",
                   "model.input_format=BGR", "model.roi_heads.pooler_type=ROIAlignV2",
                   "model.rpn.smooth_l1_beta=0", "model.roi_heads.smooth_l1_beta=0",
                   "model.rpn.ignore_cross_boundary=true")
    norms = [m for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert len(norms) == 53 and {m.eps for m in norms} == {0.0}  # stem + 3 x 16 blocks + 4
    head_norms = [m for m in model.roi_heads.box_head.modules()
                  if isinstance(m, FrozenBatchNorm2d)]
    assert len(head_norms) == 10 and {m.eps for m in head_norms} == {0.0}
    assert model.input_format == "BGR"
    assert model.pixel_mean.flatten().tolist() == pytest.approx([103.53, 116.28, 123.675])
    assert model.pixel_std.flatten().tolist() == [1.0, 1.0, 1.0]
    assert model.roi_heads.pooler.pooler_type == "ROIAlignV2"
    assert model.rpn.smooth_l1_beta == 0.0 and model.roi_heads.smooth_l1_beta == 0.0
    assert model.rpn.ignore_cross_boundary
    default = _build("model.backbone.name=resnet18", "model.backbone.norm=BN")
    assert {m.eps for m in default.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {1e-5}


def test_missing_weights_file_names_it_and_how_to_make_it(tmp_path):
    path = tmp_path / "pretrained" / "R-101.pth"
    with pytest.raises(FileNotFoundError) as err:
        build_model(load_config(None, ["model.num_classes=2", "model.backbone.name=resnet101",
                                       f"model.backbone.weights={path}",
                                       "model.backbone.stride_in_1x1=true"]))
    message = str(err.value)
    assert message.startswith(f"model.backbone.weights: file not found: {path}")
    assert "ImageNetPretrained/MSRA/R-101.pkl" in message
    assert f"python tools/convert_pretrained.py R-101.pkl {path}" in message
    with pytest.raises(FileNotFoundError, match=r"file not found: .*other.pth$"):
        _build(f"model.backbone.weights={tmp_path / 'other.pth'}")  # no MSRA hint
