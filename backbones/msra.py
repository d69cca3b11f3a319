"""MSRA's original ResNet ImageNet weights, as Detectron and Detectron2 publish them, converted to
our (torchvision's) parameter names: ``tools/convert_pretrained.py R-50.pkl R-50.pth``.

The files (``ImageNetPretrained/MSRA/R-50.pkl``, ``R-101.pkl``) are Python 2 pickles of one dict,
Caffe2 blob name -> numpy float32 array (Detectron's detection models wrap it in
``{"blobs": ...}``; ``*_momentum`` blobs are solver state and are dropped, as Detectron2 does).
The names, as Detectron2's ``convert_basic_c2_names`` reads them:

    conv1_w                              -> conv1.weight
    res_conv1_bn_{s,b}                   -> bn1.{weight,bias}
    res{S}_{i}_branch2{a,b,c}_w          -> layer{S-1}.{i}.conv{1,2,3}.weight
    res{S}_{i}_branch2{a,b,c}_bn_{s,b}   -> layer{S-1}.{i}.bn{1,2,3}.{weight,bias}
    res{S}_{i}_branch1_w                 -> layer{S-1}.{i}.downsample.0.weight
    res{S}_{i}_branch1_bn_{s,b}          -> layer{S-1}.{i}.downsample.1.{weight,bias}
    fc1000_{w,b}                         -> fc.{weight,bias}

(``S`` = 2..5, ``i`` from 0; the depth follows from the number of blocks per stage.) The models
were trained with each BatchNorm folded into a per-channel affine ``y = s * x + b`` (Caffe2's
AffineChannel): the files hold no running statistics. They become ``running_mean = 0`` and
``running_var = 1 - eps``, so a norm layer computing ``(x - mean) / sqrt(var + eps) * w + b``
(FrozenBatchNorm2d, or BatchNorm2d in eval mode, both eps = 1e-5) gives ``s * x + b``.

Two things differ from torchvision's weights and must be matched by the user: the stride of a
bottleneck is in its first 1x1 conv (``stride_in_1x1=True``), and the input is BGR in 0..255
minus the mean (103.53, 116.28, 123.675), not divided by a std (std 1). With ``rgb=True`` conv1's
input channels are reversed, so the weights take RGB images (mean (123.675, 116.28, 103.53)).
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from backbones.resnet import RESNET_SPECS, ResNet
from backbones.safe_pickle import safe_load
from backbones.weights import WeightsError, check_state_dict

__all__ = ["BGR_PIXEL_MEAN", "caffe2_resnet_state_dict", "convert_msra_weights",
           "read_caffe2_blobs"]

BGR_PIXEL_MEAN = [103.53, 116.28, 123.675]  # Detectron's PIXEL_MEANS (BGR, 0..255); std 1
_BLOCK = re.compile(r"^res([2-5])_(\d+)_branch(1|2a|2b|2c)_(w|bn_s|bn_b)$")
_BRANCH = {"2a": ("conv1", "bn1"), "2b": ("conv2", "bn2"), "2c": ("conv3", "bn3"),
           "1": ("downsample.0", "downsample.1")}
_FIXED = {"conv1_w": "conv1.weight", "res_conv1_bn_s": "bn1.weight",
          "res_conv1_bn_b": "bn1.bias", "fc1000_w": "fc.weight", "fc1000_b": "fc.bias"}


def read_caffe2_blobs(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The ``{blob name: array}`` dict of a Detectron / MSRA ``.pkl`` (restricted unpickler)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"MSRA weights file not found: {os.fspath(path)} (Detectron2 "
                                "publishes R-50.pkl / R-101.pkl; docs/model_zoo.md, "
                                "'MSRA's weights')")
    data = safe_load(path)
    source = os.fspath(path)
    if isinstance(data, dict) and "__author__" in data and "model" in data:
        raise WeightsError(f"{source} is a Detectron2 checkpoint (__author__ "
                           f"{data['__author__']!r}), not Caffe2 ImageNet blobs; load it with "
                           "Detectron2 or convert it with its own tools")
    if isinstance(data, dict) and isinstance(data.get("blobs"), dict):
        data = data["blobs"]
    if not isinstance(data, dict) or not data:
        raise WeightsError(f"{source} holds a {type(data).__name__}, not a dict of Caffe2 blobs")
    blobs = {str(k): v for k, v in data.items() if not str(k).endswith("_momentum")}
    bad = [k for k, v in blobs.items() if not isinstance(v, np.ndarray)]
    if bad:
        raise WeightsError(f"{source}: the blobs {bad[:10]} are not numpy arrays")
    return blobs


def caffe2_resnet_state_dict(blobs: dict[str, np.ndarray], *, eps: float = 1e-5,
                             source: str = "the blobs") -> tuple[int, dict[str, Tensor]]:
    """``(depth, state_dict)``: the blobs under our names (module docstring), with the folded
    norms' running statistics added. Unknown blob names and block layouts of no ResNet in
    ``RESNET_SPECS`` raise ``WeightsError`` naming them."""
    state: dict[str, Tensor] = {}
    unknown, blocks = [], defaultdict(set)
    for name, array in blobs.items():
        match = _BLOCK.match(name)
        if name in _FIXED:
            key = _FIXED[name]
        elif match:
            stage, index, branch, kind = match.groups()
            conv, norm = _BRANCH[branch]
            prefix = f"layer{int(stage) - 1}.{int(index)}."
            key = prefix + {"w": f"{conv}.weight", "bn_s": f"{norm}.weight",
                            "bn_b": f"{norm}.bias"}[kind]
            blocks[int(stage)].add((int(index), branch))
        else:
            unknown.append(name)
            continue
        state[key] = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if unknown:
        raise WeightsError(f"{source}: blobs of no ResNet layer: {sorted(unknown)[:20]}")
    depth = _depth(blocks, source)
    for key in [k for k in state if re.search(r"(^bn1|\.bn\d|downsample\.1)\.weight$", k)]:
        owner = key.removesuffix(".weight")
        state[f"{owner}.running_mean"] = torch.zeros_like(state[key])
        state[f"{owner}.running_var"] = torch.full_like(state[key], 1.0 - eps)
    return depth, state


def _depth(blocks: dict[int, set], source: str) -> int:
    counts = tuple(len({i for i, _ in blocks.get(stage, ())}) for stage in (2, 3, 4, 5))
    kind = "bottleneck" if any(b == "2c" for s in blocks.values() for _, b in s) else "basic"
    for depth, spec in RESNET_SPECS.items():
        if spec == (kind, counts):
            return depth
    raise WeightsError(f"{source}: {kind} blocks per stage res2..res5 {counts} match no ResNet "
                       f"(known: {({d: s[1] for d, s in RESNET_SPECS.items()})})")


def convert_msra_weights(src: str | os.PathLike, *, rgb: bool = False
                         ) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read ``src`` (a ``.pkl`` of Caffe2 blobs) and return ``(state_dict, metadata)``: the
    weights in the layout ``build_backbone(arch, weights=..., stride_in_1x1=True)`` loads, and
    ``arch``, ``input_format``, ``pixel_mean``, ``pixel_std``, ``source``, ``has_fc`` (plain
    values; the caller writes both into one file, ``tools/convert_pretrained.py``).

    The weights are checked against ``ResNet(depth, stride_in_1x1=True)`` (every parameter
    present, no other, same shapes).
    """
    source = repr(os.fspath(src))
    depth, state = caffe2_resnet_state_dict(read_caffe2_blobs(src), source=source)
    if rgb:
        state["conv1.weight"] = state["conv1.weight"].flip(1).contiguous()  # BGR -> RGB inputs
    with torch.device("meta"):  # shapes only
        model = ResNet(depth=depth, stride_in_1x1=True)
    check_state_dict(model, state, source=source, ignore_prefixes=("fc.",))
    meta = {"arch": f"resnet{depth}", "stride_in_1x1": True,
            "input_format": "RGB" if rgb else "BGR",
            "pixel_mean": BGR_PIXEL_MEAN[::-1] if rgb else list(BGR_PIXEL_MEAN),
            "pixel_std": [1.0, 1.0, 1.0], "source": Path(src).name,
            "has_fc": "fc.weight" in state}
    return state, meta
