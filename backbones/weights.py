"""Backbone weights: torchvision's ImageNet checkpoints (offline-friendly) or a local file.

`weights` is one of
* `None`: keep the random (He) initialisation;
* `"imagenet"`: torchvision's `IMAGENET1K_V1` (the paper-era weights);
* `"imagenet_v2"`: torchvision's `IMAGENET1K_V2` (ResNet-50/101/152 only);
* a path to a checkpoint: a raw state_dict, or a dict holding it under "model" or "state_dict".

ImageNet files live in the torch hub cache, `torch.hub.get_dir()/checkpoints/<file name>`
(`$TORCH_HOME/hub/checkpoints`, by default `~/.cache/torch/hub/checkpoints`), under the file name
of torchvision's URL, e.g. `resnet50-0676ba61.pth`. A missing file is downloaded once; offline,
one error names the file, the folder and the URL to fetch it from on another machine.

Loading rules (`check_state_dict`, `load_state_dict_checked`): every key of the model must be in
the checkpoint with the same shape and no other key may be left over, except
* keys under `ignore_prefixes` (the classifier: ResNet `fc.`, VGG `classifier.6.`);
* `num_batches_tracked`, which FrozenBatchNorm2d does not keep and older files may lack;
* for a GroupNorm layer, the BN running statistics (`running_mean`, `running_var`,
  `num_batches_tracked`) of the same name are dropped — GN has no running statistics; it takes
  gamma/beta (`weight`, `bias`) only.
Otherwise a `WeightsError` names the missing, unexpected and mis-shaped keys.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import Tensor, nn

__all__ = ["IMAGENET_WEIGHTS", "WeightsError", "check_state_dict", "hub_checkpoint",
           "imagenet_url", "load_backbone_weights", "load_state_dict_checked", "read_state_dict",
           "resolve_weights"]

# weights name -> torchvision's WeightsEnum member name
IMAGENET_WEIGHTS = {"imagenet": "IMAGENET1K_V1", "imagenet_v2": "IMAGENET1K_V2"}
# our architecture name -> torchvision's WeightsEnum class
TORCHVISION_ENUMS = {
    "resnet18": "ResNet18_Weights", "resnet34": "ResNet34_Weights",
    "resnet50": "ResNet50_Weights", "resnet101": "ResNet101_Weights",
    "resnet152": "ResNet152_Weights", "vgg16": "VGG16_Weights",
}
_BN_STATS = ("running_mean", "running_var", "num_batches_tracked")
_MAX_LISTED = 20


class WeightsError(RuntimeError):
    """A checkpoint that cannot be found, read or loaded into a backbone."""


def imagenet_url(arch: str, weights: str) -> str:
    """torchvision's URL of `weights` ("imagenet" / "imagenet_v2") for `arch` (e.g. "resnet50")."""
    if arch not in TORCHVISION_ENUMS:
        raise ValueError(f"torchvision has no ImageNet weights for {arch!r}; "
                         f"available for: {', '.join(TORCHVISION_ENUMS)}")
    enum = getattr(torchvision.models, TORCHVISION_ENUMS[arch])
    member = IMAGENET_WEIGHTS[weights]
    if member not in enum.__members__:
        available = [m for m in enum.__members__ if m.startswith("IMAGENET1K_V")]
        raise ValueError(f"weights={weights!r}: torchvision has no {enum.__name__}.{member} for "
                         f"{arch}; available: {', '.join(available)} (use weights='imagenet')")
    return enum[member].url


def hub_checkpoint(url: str, *, what: str) -> Path:
    """The torch hub cache file of `url`, downloaded if absent. Offline: one `WeightsError`
    naming the file, the folder it belongs in and the URL (no chained urllib traceback)."""
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    file_name = os.path.basename(urlparse(url).path)
    path = folder / file_name
    if path.is_file():
        return path
    # torchvision's file names carry the first hex digits of the file's sha256
    match = re.search(r"-([a-f0-9]+)\.", file_name)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), hash_prefix=match and match.group(1))
    except Exception as error:  # offline, proxy, read-only cache, bad hash: all end the same way
        raise WeightsError(
            f"cannot get the {what} weights: the file {file_name} is not in {folder} and "
            f"downloading it failed ({type(error).__name__}: {error}).\n"
            f"Fetch it on a machine with internet from {url}\n"
            f"and put it at {path} (the folder is $TORCH_HOME/hub/checkpoints; TORCH_HOME "
            f"defaults to ~/.cache/torch), or pass weights=<path to the file>."
        ) from None
    return path


def resolve_weights(weights: str | os.PathLike, *, arch: str) -> Path:
    """The checkpoint file that `weights` ("imagenet", "imagenet_v2" or a path) names."""
    if isinstance(weights, str) and weights in IMAGENET_WEIGHTS:
        url = imagenet_url(arch, weights)
        return hub_checkpoint(url, what=f"{arch} {weights!r}")
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file {str(path)!r} does not exist; weights must be None, "
            f"{' or '.join(repr(k) for k in IMAGENET_WEIGHTS)}, or a path to a checkpoint file")
    return path


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a checkpoint (weights only) and return its state_dict: the file itself, or the
    dict under its "model" or "state_dict" key."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise WeightsError(f"cannot read checkpoint {str(path)!r} with weights_only=True: "
                           f"{type(error).__name__}: {error}") from error
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise WeightsError(f"checkpoint {str(path)!r} holds a {type(obj).__name__}, "
                           "not a state_dict (a dict of tensors)")
    bad = [k for k, v in obj.items() if not isinstance(v, Tensor)]
    if bad:
        raise WeightsError(f"checkpoint {str(path)!r} is not a state_dict: the values of "
                           f"{_listing(bad)} are not tensors")
    return obj


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f" ... and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else "")


def check_state_dict(model: nn.Module, state_dict: dict[str, Tensor], *, source: str,
                     ignore_prefixes: tuple[str, ...] = ()) -> dict[str, Tensor]:
    """The entries of `state_dict` that `model` takes, under the rules of this module's
    docstring; a `WeightsError` names every missing, unexpected and mis-shaped key. Loads
    nothing, so `model` may live on the meta device."""
    expected = model.state_dict()
    group_norms = {name for name, m in model.named_modules() if isinstance(m, nn.GroupNorm)}
    given: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        owner, _, leaf = key.rpartition(".")
        if key.startswith(ignore_prefixes) or (leaf in _BN_STATS and owner in group_norms):
            continue
        if leaf == "num_batches_tracked" and key not in expected:
            if f"{owner}.running_mean" in expected:  # FrozenBatchNorm2d keeps no counter
                continue
        given[key] = value
    missing = [k for k in expected if k not in given and not k.endswith(".num_batches_tracked")]
    unexpected = [k for k in given if k not in expected]
    mis_shaped = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
                  for k, v in given.items() if k in expected and v.shape != expected[k].shape]
    if missing or unexpected or mis_shaped:
        problems = [f"{title} ({len(keys)}): {_listing(keys)}" for title, keys in
                    (("missing keys", missing), ("unexpected keys", unexpected),
                     ("shape mismatches", mis_shaped)) if keys]
        raise WeightsError(f"checkpoint {source} does not fit {type(model).__name__}:\n  "
                           + "\n  ".join(problems))
    return given


def load_state_dict_checked(model: nn.Module, state_dict: dict[str, Tensor], *, source: str,
                            ignore_prefixes: tuple[str, ...] = ()) -> None:
    """Load `state_dict` into `model` under the rules of this module's docstring."""
    given = check_state_dict(model, state_dict, source=source, ignore_prefixes=ignore_prefixes)
    model.load_state_dict(given, strict=False)  # only counters may be absent, checked above


def load_backbone_weights(model: nn.Module, weights: str | os.PathLike, *, arch: str,
                          ignore_prefixes: tuple[str, ...] = ()) -> None:
    """Resolve `weights` for `arch`, read the file and load it into `model` (checked)."""
    path = resolve_weights(weights, arch=arch)
    state_dict = read_state_dict(path)
    load_state_dict_checked(model, state_dict, source=repr(str(path)),
                            ignore_prefixes=ignore_prefixes)
