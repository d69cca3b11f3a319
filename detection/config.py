"""Typed configuration: a tree of dataclasses, loaded from YAML with ``_base_`` inheritance.

YAML keys equal constructor argument names. ``detection/build.py`` is the only code that turns a
:class:`Config` into objects; everything else receives plain arguments.

Loading order (later wins)::

    dataclass defaults  <-  _base_ files (in list order, recursively)  <-  the file  <-  overrides

An unknown key, a wrong type or a value outside a key's choices raises :class:`ConfigError`, which
names the full dotted key, the file it came from, and the closest valid key.

**Paths.** One rule: a relative path in a config value (``data.*``, ``model.weights``,
``model.backbone.weights``, ``output_dir``, ...) resolves from the current working directory,
the folder the command runs in, wherever the config file lies; :func:`existing_path` checks
one and names the key and that folder when it is missing. Only ``_base_`` entries, which are
references between config files rather than values, resolve from the file that names them.

The model variant follows from one key, ``model.roi_heads.box_head`` (``fpn_2fc``, ``c4_res5``,
``vgg_fc``): the keys that depend on it (``fpn.enabled``, ``anchor_generator.sizes``,
``rpn.in_features``, ``roi_heads.in_features``, ``roi_heads.pooler_resolution``) default to
``null`` and are filled from ``VARIANT_DEFAULTS`` when the config is built; a value given in a
file or an override wins. ``model.pixel_mean`` / ``pixel_std`` follow ``model.input_format`` in
the same way (``INPUT_FORMAT_DEFAULTS``).
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

__all__ = [
    "Config", "ConfigError", "load_config", "config_from_dict", "config_to_dict", "dump_config",
    "apply_overrides", "save_config", "existing_path",
]


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key."""


def _choices(*values: str, default: Any) -> Any:
    return field(default=default, metadata={"choices": values})


def _list(*values: Any) -> Any:
    return field(default_factory=lambda: [list(v) if isinstance(v, list) else v for v in values])


# ----------------------------------------------------------------------------------------- model
@dataclass
class BackboneConfig:
    name: str = "resnet50"
    weights: Optional[str] = "imagenet"  # "imagenet", "imagenet_v2", a file path, or null
    norm: str = _choices("FrozenBN", "BN", "GN", "SyncBN", default="FrozenBN")
    freeze_at: int = 2
    shortcut: str = _choices("A", "B", "C", default="B")
    stride_in_1x1: bool = False  # true for MSRA's original weights (Detectron2's R-50.pkl)
    norm_eps: float = 1e-5  # eps of the norm layers; 0.0 for torchvision's COCO detectors


@dataclass
class FPNConfig:
    enabled: Optional[bool] = None  # None: derived from roi_heads.box_head (fpn_2fc: true)
    out_channels: int = 256


@dataclass
class AnchorGeneratorConfig:
    sizes: Optional[list[list[float]]] = None  # None: derived from roi_heads.box_head
    aspect_ratios: list[list[float]] = _list([0.5, 1.0, 2.0])


@dataclass
class RPNConfig:
    in_features: Optional[list[str]] = None  # None: derived from roi_heads.box_head
    pre_nms_topk_train: int = 2000
    pre_nms_topk_test: int = 1000
    post_nms_topk_train: int = 2000
    post_nms_topk_test: int = 1000
    nms_thresh: float = 0.7
    min_box_size: float = 1e-3
    score_thresh: float = 0.0
    fg_iou_thresh: float = 0.7
    bg_iou_thresh: float = 0.3
    batch_size_per_image: int = 256
    positive_fraction: float = 0.5
    smooth_l1_beta: float = 1.0 / 9.0  # 0: exactly L1 (Detectron2)
    ignore_cross_boundary: bool = False  # true: anchors crossing the image border are ignored


@dataclass
class RoIHeadsConfig:
    in_features: Optional[list[str]] = None  # None: derived from box_head
    box_head: str = _choices("fpn_2fc", "c4_res5", "vgg_fc", default="fpn_2fc")
    # ROIAlignV2: RoIAlign with aligned=True (half-pixel shift), Detectron2's default
    pooler_type: str = _choices("ROIAlign", "ROIAlignV2", "ROIPool", default="ROIAlign")
    pooler_resolution: Optional[int] = None  # None: derived from box_head (c4_res5: 14, else 7)
    sampling_ratio: int = 2
    fc_dim: int = 1024
    fg_iou_thresh: float = 0.5
    bg_iou_thresh: float = 0.5
    batch_size_per_image: int = 512
    positive_fraction: float = 0.25
    box_reg_weights: list[float] = _list(10.0, 10.0, 5.0, 5.0)
    smooth_l1_beta: float = 1.0 / 9.0  # 0: exactly L1 (Detectron2)
    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    detections_per_img: int = 100


# ------------------------------------------------------------------- masks (Mask R-CNN, issue 26)
@dataclass
class MaskHeadConfig:
    """A mask branch beside the box head (``detection/mask_head.py``); masks of
    ``2 x pooler_resolution`` cells (c4_res5: of the box head's res5 maps, 14x14)."""

    enabled: bool = False
    num_convs: Optional[int] = None  # None: derived from roi_heads.box_head (4; c4_res5: 0)
    conv_dim: int = 256
    # the mask pooler (c4_res5 has none: leave both null); null type: roi_heads.pooler_type
    pooler_resolution: Optional[int] = None  # None: derived (14; c4_res5: none)
    pooler_type: Optional[str] = _choices("ROIAlign", "ROIAlignV2", "ROIPool", None,
                                          default=None)
    class_agnostic: bool = False  # one mask per RoI instead of one per class


@dataclass
class ModelConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    fpn: FPNConfig = field(default_factory=FPNConfig)
    num_classes: Optional[int] = None  # None: taken from the training annotations
    # the channel order the backbone's weights expect; images always come in RGB, and with
    # BGR the model reverses their channels first
    input_format: str = _choices("RGB", "BGR", default="RGB")
    pixel_mean: Optional[list[float]] = None  # None: from input_format (INPUT_FORMAT_DEFAULTS)
    pixel_std: Optional[list[float]] = None  # in input_format's channel order, 0..255 units
    size_divisibility: int = 32
    anchor_generator: AnchorGeneratorConfig = field(default_factory=AnchorGeneratorConfig)
    rpn: RPNConfig = field(default_factory=RPNConfig)
    roi_heads: RoIHeadsConfig = field(default_factory=RoIHeadsConfig)
    mask_head: MaskHeadConfig = field(default_factory=MaskHeadConfig)  # Mask R-CNN
    # the whole detector from a checkpoint of this toolkit (or a converted torchvision one);
    # tensors matching by name and shape are loaded (detection/transfer.py); --resume wins
    weights: Optional[str] = None
    # class-dependent predictor rows: copied for the classes of equal name (case-insensitive),
    # or "none": the predictor is loaded only when its shape fits and re-initialised otherwise
    weights_classes: str = _choices("by_name", "none", default="by_name")

    def __post_init__(self) -> None:
        """Fill the keys left ``None`` from the one key that names the variant,
        ``roi_heads.box_head`` (see ``VARIANT_DEFAULTS``), and the pixel mean/std from
        ``input_format`` (``INPUT_FORMAT_DEFAULTS``); values set explicitly are kept."""
        derived = VARIANT_DEFAULTS[self.roi_heads.box_head]
        if self.mask_head.enabled:
            derived = {**derived, **MASK_VARIANT_DEFAULTS[self.roi_heads.box_head]}
        for dotted, value in derived.items():
            section, key = dotted.split(".")
            node = getattr(self, section)
            if getattr(node, key) is None:
                setattr(node, key, copy.deepcopy(value))
        for key, value in INPUT_FORMAT_DEFAULTS[self.input_format].items():
            if getattr(self, key) is None:
                setattr(self, key, list(value))


#: Pixel mean/std (0..255 units, in the format's channel order) for each ``input_format``:
#: RGB is torchvision's ImageNet normalisation; BGR is MSRA's original ResNets (Detectron2's
#: ``R-50.pkl``/``R-101.pkl``): the mean pixel only, std 1 (absorbed into conv1's weights).
INPUT_FORMAT_DEFAULTS: dict[str, dict[str, list[float]]] = {
    "RGB": {"pixel_mean": [123.675, 116.28, 103.53], "pixel_std": [58.395, 57.12, 57.375]},
    "BGR": {"pixel_mean": [103.53, 116.28, 123.675], "pixel_std": [1.0, 1.0, 1.0]},
}


_SINGLE_LEVEL = {"fpn.enabled": False,
                 "anchor_generator.sizes": [[32.0, 64.0, 128.0, 256.0, 512.0]],
                 "roi_heads.pooler_resolution": 7}
#: What ``model.roi_heads.box_head`` implies for the keys left unset (``null``).
VARIANT_DEFAULTS: dict[str, dict[str, Any]] = {
    "fpn_2fc": {"fpn.enabled": True,
                "anchor_generator.sizes": [[32.0], [64.0], [128.0], [256.0], [512.0]],
                "rpn.in_features": ["p2", "p3", "p4", "p5", "p6"],
                "roi_heads.in_features": ["p2", "p3", "p4", "p5"],
                "roi_heads.pooler_resolution": 7},
    "c4_res5": {**_SINGLE_LEVEL, "rpn.in_features": ["res4"], "roi_heads.in_features": ["res4"],
                "roi_heads.pooler_resolution": 14},
    "vgg_fc": {**_SINGLE_LEVEL, "rpn.in_features": ["conv5"],
               "roi_heads.in_features": ["conv5"]},
}

#: What ``model.roi_heads.box_head`` implies for the mask head's keys left unset, when enabled.
MASK_VARIANT_DEFAULTS: dict[str, dict[str, Any]] = {
    "fpn_2fc": {"mask_head.num_convs": 4, "mask_head.pooler_resolution": 14},
    "c4_res5": {"mask_head.num_convs": 0},
    "vgg_fc": {"mask_head.num_convs": 4, "mask_head.pooler_resolution": 14},
}


# ------------------------------------------------------------------------------------------ data
@dataclass
class DatasetConfig:
    images: str = ""  # data.format coco: folder of image files
    annotations: str = ""  # data.format coco: COCO-format json
    roots: list[str] = _list()  # data.format voc: VOCdevkit/VOCyyyy folders, concatenated
    splits: list[str] = _list()  # data.format voc: ImageSets/Main/<split>.txt, one or per root


@dataclass
class SyntheticConfig:
    """Generate the synthetic shapes dataset at ``root`` on first use (when enabled); empty
    ``data.train`` / ``data.test`` paths then default to its train / val splits."""

    enabled: bool = False
    root: str = "datasets/shapes"
    num_train: int = 400
    num_val: int = 100
    image_size: int = 160
    seed: int = 0
    max_objects: int = 4
    empty_fraction: float = 0.08


@dataclass
class InputConfig:
    min_size_train: list[int] = _list(800)  # a random choice per image: multi-scale training
    max_size_train: int = 1333
    min_size_test: int = 800
    max_size_test: int = 1333
    flip_prob: float = 0.5
    photometric: bool = False


@dataclass
class DataConfig:
    format: str = _choices("coco", "voc", default="coco")
    train: DatasetConfig = field(default_factory=DatasetConfig)
    test: DatasetConfig = field(default_factory=DatasetConfig)  # empty: train, no evaluation
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    input: InputConfig = field(default_factory=InputConfig)
    num_workers: int = 2
    filter_empty: bool = True
    on_bad_image: str = _choices("skip", "error", default="skip")
    on_bad_annotation: str = _choices("skip", "error", default="skip")  # NaN/negative/... boxes
    aspect_grouping: bool = True
    keep_difficult: bool = False  # voc: train on "difficult" objects too
    class_names: Optional[list[str]] = None  # voc: the label order (default: the 20 VOC ones)
    # "repeat_factor": images holding rare classes are drawn more often (LVIS, Gupta et al.
    # 2019): r(image) = max over its classes c of max(1, sqrt(repeat_threshold / f(c)))
    sampler: str = _choices("uniform", "repeat_factor", default="uniform")
    repeat_threshold: float = 0.001


# ---------------------------------------------------------------------------------------- solver
@dataclass
class SolverConfig:
    max_iter: int = 90000
    base_lr: float = 0.02
    ims_per_batch: int = 16  # total over all processes
    optimizer: str = _choices("SGD", "AdamW", default="SGD")
    momentum: float = 0.9  # SGD's momentum
    betas: list[float] = _list(0.9, 0.999)  # AdamW's
    weight_decay: float = 1e-4
    weight_decay_norm: float = 0.0
    lr_schedule: str = _choices("multistep", "cosine", default="multistep")
    steps: list[int] = _list(60000, 80000)
    gamma: float = 0.1
    warmup_iters: int = 1000
    warmup_factor: float = 0.001
    clip_grad_norm: Optional[float] = None
    amp: bool = False  # CUDA only
    amp_dtype: str = _choices("bf16", "fp16", default="bf16")
    checkpoint_period: int = 5000


@dataclass
class TestConfig:
    eval_period: int = 0  # 0: evaluate only at the end
    ims_per_batch: int = 1
    vis_images: int = 4  # images drawn with detections into <output_dir>/vis
    vis_score_thresh: float = 0.5
    use_07_metric: bool = True  # voc: mAP is the VOC2007 11-point AP (else all-point)
    # COCOEvaluator(backend=...): faster-coco-eval, or the reference pycocotools (same numbers)
    evaluator_backend: str = _choices("faster", "pycocotools", default="faster")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    test: TestConfig = field(default_factory=TestConfig)
    output_dir: str = "output"
    seed: int = 0
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    log_period: int = 20
    tensorboard: bool = True  # MetricsWriter(tensorboard=...): scalars in <output_dir>/tensorboard


# -------------------------------------------------------------------------------------- loading
def _read_yaml(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping, got {type(data).__name__}")
    return data


def _merge(base: dict, child: dict) -> dict:
    """Deep merge: mappings merge key by key, anything else in ``child`` replaces ``base``."""
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _load_tree(path: Path, chain: tuple[Path, ...] = (), schema: Optional[type] = None) -> dict:
    """Read ``path`` and its ``_base_`` files (relative to ``path``'s folder), merged.

    Each file is validated on its own first, so an error names the file that holds the bad key.
    """
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise ConfigError(f"_base_ cycle: {cycle}")
    data = _read_yaml(path)
    bases = data.pop("_base_", [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: _base_ must be a path or a list of paths, got {bases!r}")
    config_from_dict(data, source=str(path), schema=schema)  # validate this file's own keys
    merged: dict = {}
    for base in bases:
        base_path = (path.parent / base).resolve()
        if not base_path.is_file():
            raise ConfigError(f"{path}: _base_ file not found: '{base}' (looked for {base_path})")
        merged = _merge(merged, _load_tree(base_path, (*chain, path), schema))
    return _merge(merged, data)


def _check_override(parts: list[str], value: Any, source: str,
                    schema: Optional[type] = None) -> None:
    """Validate one override's dotted key and value against the schema; errors name ``source``."""
    cls: Any = schema or Config
    for i, part in enumerate(parts):
        dotted = ".".join(parts[: i + 1])
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields:
            section = "".join(f"{p}." for p in parts[:i])
            raise _unknown_key_error(cls, ".".join(parts), source, section)
        hint = typing.get_type_hints(cls)[part]
        if i < len(parts) - 1:
            if not dataclasses.is_dataclass(hint):
                raise ConfigError(f"{source}: '{dotted}' is a value, not a section; "
                                  f"cannot set '{'.'.join(parts)}'")
            cls = hint
            continue
        _check_field(fields[part], hint, value, dotted, source)


def apply_overrides(tree: dict, overrides: list[str], schema: Optional[type] = None) -> dict:
    """Apply ``a.b.c=value`` strings (the value is parsed as YAML: ``0.01``, ``[1, 2]``, ``null``).

    Each override is checked against the schema on its own, so an error names the override (not
    the file) that holds the bad key or value.
    """
    tree = _merge({}, tree)
    for item in overrides:
        key, sep, raw = item.partition("=")
        source = f"override '{item}'"
        if not sep or not key.strip():
            raise ConfigError(f"{source} must look like key.sub_key=value")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"{source}: value is not valid YAML: {e}") from None
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"{source}: empty part in key '{key.strip()}'")
        _check_override(parts, value, source, schema)
        node = tree
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value
    return tree


def load_config(path: Union[str, os.PathLike, None] = None,
                overrides: Optional[list[str]] = None, *, schema: Optional[type] = None) -> Any:
    """Read a YAML file (with ``_base_``), apply ``overrides`` and validate against the schema:
    :class:`Config` (detection), or another root dataclass such as the classification
    pretraining's ``PretrainConfig``."""
    tree = _load_tree(Path(path), schema=schema) if path is not None else {}
    tree = apply_overrides(tree, list(overrides or []), schema)
    return config_from_dict(tree, source=str(path) if path is not None else "overrides",
                            schema=schema)


def save_config(cfg: Config, path: Union[str, os.PathLike]) -> None:
    """Write the resolved config as YAML (``output_dir/config.yaml``); reloadable as is."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(dump_config(cfg), encoding="utf-8")


def existing_path(value: str, key: str, *, kind: str = "file") -> str:
    """``value`` of config key ``key``, checked to be an existing file (``kind="file"``) or
    folder (``"folder"``); returned unchanged. A relative path resolves from the current working
    directory (the one rule of the module docstring); the error names the key, the path and the
    folder it was resolved from."""
    path = Path(value).expanduser()
    if path.is_file() if kind == "file" else path.is_dir():
        return value
    where = "" if path.is_absolute() else (
        f" (relative paths resolve from the current directory, {os.getcwd()})")
    found = "" if not path.exists() else f" ({'a folder' if path.is_dir() else 'a file'})"
    raise FileNotFoundError(f"{key}: {kind} not found: {value}{found}{where}")


# ----------------------------------------------------------------------------------- validation
def _all_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(cls):
        dotted = f"{prefix}{f.name}"
        keys.append(dotted)
        hint = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            keys.extend(_all_keys(hint, dotted + "."))
    return keys


def _unknown_key_error(cls: type, dotted: str, source: str, section: str) -> ConfigError:
    valid = _all_keys(cls, section)  # the keys under the section ``cls`` (at ``section``)
    close = difflib.get_close_matches(dotted, valid, n=1, cutoff=0.6)
    if not close:  # a typo in the last part only: compare leaf names under the same parent
        parent, _, leaf = dotted.rpartition(".")
        leaves = [f.name for f in dataclasses.fields(cls)]
        close = [f"{parent}.{m}" if parent else m
                 for m in difflib.get_close_matches(leaf, leaves, n=1, cutoff=0.5)]
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return ConfigError(f"{source}: unknown config key '{dotted}'{hint}")


def _check(value: Any, hint: Any, dotted: str, source: str) -> Any:
    """Return ``value`` converted to ``hint`` or raise a ConfigError naming ``dotted``."""
    origin = typing.get_origin(hint)
    if origin is Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _check(value, args[0], dotted, source)
    if dataclasses.is_dataclass(hint):
        if value is None:  # an empty section (`solver:` with every key commented out)
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{dotted}' must be a mapping, got {value!r}")
        return _build(hint, value, dotted + ".", source)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: '{dotted}' must be a list, got {value!r}")
        (item_hint,) = typing.get_args(hint)
        return [_check(v, item_hint, f"{dotted}[{i}]", source) for i, v in enumerate(value)]
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads `1e-4` (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (str, bool) and isinstance(value, hint):
        return value
    name = getattr(hint, "__name__", str(hint))
    raise ConfigError(f"{source}: '{dotted}' must be of type {name}, got {value!r}")


def _check_field(f: dataclasses.Field, hint: Any, value: Any, dotted: str, source: str) -> Any:
    """``value`` converted to the field's type and checked against its choices."""
    checked = _check(value, hint, dotted, source)
    choices = f.metadata.get("choices")
    if choices and checked not in choices:
        raise ConfigError(f"{source}: '{dotted}' must be one of {list(choices)}, got {checked!r}")
    return checked


def _build(cls: type, tree: dict, prefix: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            raise _unknown_key_error(cls, dotted, source, prefix)
        kwargs[key] = _check_field(fields[key], hints[key], value, dotted, source)
    return cls(**kwargs)


def config_from_dict(tree: dict, source: str = "config", schema: Optional[type] = None) -> Any:
    """Validate a plain dict (e.g. from a checkpoint) into a :class:`Config` (or ``schema``)."""
    if not isinstance(tree, dict):
        raise ConfigError(f"{source}: a config must be a mapping, got {type(tree).__name__}")
    return _build(schema or Config, tree, "", source)


def config_to_dict(cfg: Any) -> dict:
    """The resolved config as plain Python values (safe for ``torch.load(weights_only=True)``)."""
    return dataclasses.asdict(cfg)


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML text; ``load_config`` of it gives back an equal Config."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None)
