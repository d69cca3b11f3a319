"""tools/convert_torchvision.py: a torchvision checkpoint file in, our checkpoint file out."""
import pytest
import torch
from torchvision.models.detection import fasterrcnn_resnet50_fpn

from tool_loader import load_tool

tool = load_tool("convert_torchvision")


@pytest.fixture(scope="module")
def tv_state():
    torch.manual_seed(0)
    return fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict()


def test_converts_a_references_training_checkpoint(tv_state, tmp_path):
    src, dst = tmp_path / "tv.pth", tmp_path / "out" / "ours.pth"
    torch.save({"model": tv_state, "epoch": 25}, src)  # a references/detection checkpoint
    assert tool.main([str(src), str(dst), "--norm-eps", "1e-5"]) == 0  # trained today: 1e-5
    converted = torch.load(dst, weights_only=True)
    assert set(converted) == {"model", "config", "classes", "iteration"}
    assert converted["config"]["model"]["backbone"]["norm_eps"] == 1e-5  # default: 0
    assert len(converted["classes"]) == 90 and converted["classes"][0]["name"] == "person"
    ours_w = converted["model"]["backbone.bottom_up.layer1.0.conv1.weight"]
    assert torch.equal(ours_w, tv_state["backbone.body.layer1.0.conv1.weight"])
    assert torch.equal(converted["model"]["rpn.head.conv.weight"],
                       tv_state["rpn.head.conv.0.0.weight"])
    assert not any(k.endswith("num_batches_tracked") for k in converted["model"])


def test_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    not_a_checkpoint = tmp_path / "notes.pth"
    not_a_checkpoint.write_text("hello")
    for src, message in ((bad, "bad.pth: not a torchvision Faster R-CNN"),
                         (tmp_path / "missing.pth", "torchvision checkpoint not found"),
                         (not_a_checkpoint, "notes.pth: cannot read as a weights-only")):
        assert tool.main([str(src), str(tmp_path / "x.pth")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "x.pth").exists()


def test_a_converted_coco_detector_fine_tunes_to_classes_of_the_same_names(tv_state):
    """The fine-tuning step of docs/own_data.md: what the tool converts (renamed tensors, COCO's
    90 classes) as ``model.weights`` of the R-50-FPN base config with 3 classes of COCO names:
    every tensor loaded, the rows of person / car / dog (COCO labels 1, 3, 18) and of the
    background copied."""
    from pathlib import Path

    from detection.build import build_model
    from detection.coco_names import coco_id_classes
    from detection.config import load_config
    from detection.convert import convert_state_dict
    from detection.transfer import transfer_weights

    converted = {"model": convert_state_dict(tv_state), "classes": coco_id_classes()}
    base = Path(__file__).resolve().parents[2] / "configs/_base_/models/faster_rcnn_R_50_FPN.yaml"
    with torch.device("meta"):  # no random init (every row gets copied): only the memory
        model = build_model(load_config(base, ["model.backbone.weights=null"]), num_classes=3)
    model = model.to_empty(device="cpu")
    classes = [{"id": 1, "name": "Dog"}, {"id": 2, "name": "person"}, {"id": 3, "name": "car"}]
    report = transfer_weights(model, converted, classes=classes)
    assert report.matches == [("background", 0, 0), ("Dog", 18, 1), ("person", 1, 2),
                              ("car", 3, 3)]
    state = model.state_dict()
    for name, rows in (("cls_score", 1), ("bbox_pred", 4)):
        ours, theirs = (s[f"roi_heads.box_predictor.{name}.weight"] for s in (state, tv_state))
        for dst, src in ((0, 0), (1, 18), (2, 1), (3, 3)):
            assert torch.equal(ours[rows * dst:rows * dst + rows],
                               theirs[rows * src:rows * src + rows])
    fpn = "backbone.fpn.inner_blocks.0.0.weight"
    assert torch.equal(state[fpn], tv_state[fpn])
    assert len(report.loaded) == len(state) - 4 and report.ignored == []


def test_converts_a_published_maskrcnn_checkpoint(tmp_path, capsys):
    """maskrcnn_resnet50_fpn as published (MaskRCNNHeads' keys from before its version 2:
    mask_fcn1..4) converts with the Mask R-CNN config, chosen from the checkpoint, and loads."""
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    from detection.build import build_model
    from detection.config import config_from_dict

    torch.manual_seed(0)
    state = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict()
    published = {k.replace("roi_heads.mask_head.2.0.", "roi_heads.mask_head.mask_fcn3."): v
                 for k, v in state.items()}  # one block in the old names, the rest today's
    src, dst = tmp_path / "maskrcnn.pth", tmp_path / "ours.pth"
    torch.save(published, src)
    assert tool.main([str(src), str(dst)]) == 0
    converted = torch.load(dst, weights_only=True)
    assert converted["config"]["model"]["mask_head"]["enabled"]
    ours = converted["model"]
    for tv_key, key in (("roi_heads.mask_head.0.0.weight", "roi_heads.mask_head.mask_fcn1.weight"),
                        ("roi_heads.mask_head.2.0.bias", "roi_heads.mask_head.mask_fcn3.bias"),
                        ("roi_heads.mask_predictor.conv5_mask.weight",
                         "roi_heads.mask_head.conv5_mask.weight"),
                        ("roi_heads.mask_predictor.mask_fcn_logits.weight",
                         "roi_heads.mask_head.mask_fcn_logits.weight")):
        assert torch.equal(ours[key], state[tv_key]), key
    model = build_model(config_from_dict(converted["config"]))
    model.load_state_dict(ours)  # strict: every tensor has its place
    assert model.roi_heads.mask_head.num_masks == 91
    faster = tmp_path / "faster.yaml"  # a Mask R-CNN checkpoint with a box-only config
    faster.write_text("_base_: " + str(tool.DEFAULT_CONFIG) + "\n")
    assert tool.main([str(src), str(dst), "--config", str(faster)]) == 2
    assert "model.mask_head.enabled" in capsys.readouterr().err
