"""tools/convert_pretrained.py: an MSRA R-50.pkl becomes weights build_backbone loads; a pickle
that would run code, or blobs that fit no ResNet, stop with one line and exit 2."""
import os
import pickle

import numpy as np
import torch

from backbones.resnet import ResNet
from backbones.weights import check_state_dict, read_state_dict
from tool_loader import load_tool

convert_pretrained = load_tool("convert_pretrained")


def test_converts_the_published_layout(msra_r50_pkl, tmp_path, capsys):
    blobs, pkl = msra_r50_pkl
    dst = tmp_path / "R-50-msra.pth"
    assert convert_pretrained.main([str(pkl), str(dst), "--rgb"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {dst}: resnet50 (MSRA, stride in the 1x1 conv), RGB input" in out
    assert "model.pixel_mean: [123.675, 116.28, 103.53]" in out
    saved = torch.load(dst, weights_only=True)
    assert saved["arch"] == "resnet50" and saved["input_format"] == "RGB"
    # conv1 takes RGB: its input channels are the published (BGR) ones reversed
    assert torch.equal(saved["model"]["conv1.weight"],
                       torch.from_numpy(blobs[b"conv1_w"][:, ::-1].copy()))
    state = saved["model"]
    assert torch.equal(state["fc.weight"], torch.from_numpy(blobs[b"fc1000_w"]))
    assert torch.equal(state["layer3.5.conv2.weight"],
                       torch.from_numpy(blobs[b"res4_5_branch2b_w"]))
    assert torch.equal(state["layer4.0.downsample.1.bias"],
                       torch.from_numpy(blobs[b"res5_0_branch1_bn_b"]))
    # the file loads where the toolkit looks for backbone weights (shapes checked, no init)
    with torch.device("meta"):
        model = ResNet(depth=50, stride_in_1x1=True)
    assert set(check_state_dict(model, read_state_dict(dst), source="dst",
                                ignore_prefixes=("fc.",))) == set(model.state_dict())


def test_malicious_pickle_is_refused_without_running(tmp_path, capsys, runs_code):
    marker = tmp_path / "ran"
    src = tmp_path / "R-50.pkl"
    src.write_bytes(pickle.dumps({"conv1_w": runs_code(f"touch {marker}")}, protocol=2))
    assert convert_pretrained.main([str(src), str(tmp_path / "out.pth")]) == 2
    err = capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "out.pth").exists()
    assert err.count("\n") == 1 and err.startswith(f"error: {src}: refused to load")
    assert f"{os.system.__module__}.system" in err


def test_blobs_of_wrong_shape_or_missing_file(tmp_path, capsys, make_msra_blobs, py2_pickle):
    src = py2_pickle(make_msra_blobs(50, tiny=True), tmp_path / "tiny.pkl")
    assert convert_pretrained.main([str(src), str(tmp_path / "out.pth")]) == 2
    err = capsys.readouterr().err
    assert "does not fit ResNet" in err
    assert "conv1.weight: checkpoint (1,) vs model (64, 3, 7, 7)" in err
    assert convert_pretrained.main([str(tmp_path / "nope.pkl"), str(tmp_path / "o.pth")]) == 2
    assert "nope.pkl" in capsys.readouterr().err
    py2_pickle([np.zeros(3)], tmp_path / "list.pkl")
    assert convert_pretrained.main([str(tmp_path / "list.pkl"), str(tmp_path / "o.pth")]) == 2
    assert "holds a list, not a dict of Caffe2 blobs" in capsys.readouterr().err
