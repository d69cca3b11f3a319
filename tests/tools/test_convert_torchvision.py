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
