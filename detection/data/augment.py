"""Training augmentations from the config: ``data.augment``, a list of transforms by name.

Each entry names a transform and gives its keyword arguments::

    data:
      augment:
        - {name: lsj, size: 1024}                 # a preset (below)
        - {name: ColorJitter, brightness: 0.2, p: 0.8}   # any albumentations transform
        - {name: OneOf, transforms: [{name: Blur}, {name: GaussNoise}], p: 0.3}

A name is, in this order, a preset, one of our transforms (``ResizeShortestEdge``,
``ResizeScale``) or an albumentations transform class; compositions (``OneOf``, ``SomeOf``,
``Sequential``) take a ``transforms`` list of entries. :func:`build_augment` checks every entry
before any data is read: an unknown name or argument, or a value albumentations refuses, is one
``ValueError`` naming ``data.augment[i]`` (the closest valid name when there is one).

**Presets** expand to entries of the same language (:func:`expand`):

- ``resize_flip`` (what an empty ``data.augment`` means, Detectron2's default): a resize of the
  shorter side to a size drawn from ``sizes`` (``data.input.min_size_train``) with the longer
  side at most ``max_size`` (``max_size_train``), a horizontal flip with ``flip_prob``
  (``data.input.flip_prob``), and colour jitter when ``photometric`` (``data.input.photometric``).
- ``lsj``, large-scale jitter (Ghiasi et al. 2021; Detectron2's new baselines): a horizontal
  flip with ``flip_prob``, the image resized to fit a ``size`` x ``size`` square times a scale
  drawn from ``[min_scale, max_scale]`` (0.1 to 2.0), then a random ``size`` x ``size`` crop,
  padded at the bottom and right with ``fill`` (128) where the image is smaller. ``size``
  defaults to ``data.input.min_size_test``.

**Boxes** follow every geometric transform (albumentations moves them); after a crop a box is
clipped to the image, and dropped when the part left is under ``data.box_min_visibility`` of its
area or has no width or height (:class:`~detection.data.transforms.DetectionTransform`).

**Masks**: compact instance masks follow an image through an axis-aligned affine map only (read
off two corner keypoints that go through the pipeline). With ``masks=True`` (a model with a mask
head) every transform must be a pixel-level one (colour, blur, noise) or one of
``MASK_SAFE`` (flips, resizes, crops, pads); any other is refused by name.

**Randomness** comes from albumentations' own generator, which the training loader reseeds per
sample from ``(seed, rank, iteration, slot)``: a resumed run draws the same augmentation.
"""
from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import albumentations as A

from .transforms import Resize, ResizeShortestEdge

__all__ = ["MASK_SAFE", "PRESETS", "ResizeScale", "build_augment", "expand"]


class ResizeScale(Resize):
    """Resize to fit ``height`` x ``width`` times a scale drawn uniformly from ``[min_scale,
    max_scale]``, keeping the aspect ratio (LSJ's resize)::

        s = scale * min(height / h, width / w);   (h', w') = (round(h * s), round(w * s))

    Boxes (normalised by albumentations) need no change; keypoints are pixel centres
    (``k' = (k + 0.5) * w' / w - 0.5``), as the mask corners expect."""

    def __init__(self, min_scale: float, max_scale: float, height: int, width: int,
                 p: float = 1.0) -> None:
        super().__init__(p=p)
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"need 0 < min_scale <= max_scale, got {min_scale}, {max_scale}")
        if height < 1 or width < 1:
            raise ValueError(f"height and width must be positive, got {height}, {width}")
        self.min_scale, self.max_scale = float(min_scale), float(max_scale)
        self.height, self.width = int(height), int(width)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]
                                     ) -> dict[str, Any]:
        h, w = params["shape"][:2]
        scale = self.py_random.uniform(self.min_scale, self.max_scale)
        s = scale * min(self.height / h, self.width / w)
        return {"new_shape": (max(1, int(round(h * s))), max(1, int(round(w * s)))),
                "old_shape": (h, w)}

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("min_scale", "max_scale", "height", "width")


OWN: dict[str, type] = {"ResizeShortestEdge": ResizeShortestEdge, "ResizeScale": ResizeScale}
COMPOSITIONS = ("OneOf", "SomeOf", "Sequential")
#: Geometric transforms whose map is an axis-aligned affine one (flip, resize, crop, pad):
#: the only geometric ones compact masks can follow.
MASK_SAFE = frozenset({
    "ResizeShortestEdge", "ResizeScale", "HorizontalFlip", "VerticalFlip", "Resize",
    "RandomScale", "LongestMaxSize", "SmallestMaxSize", "RandomCrop", "CenterCrop", "Crop",
    "RandomSizedCrop", "RandomResizedCrop", "RandomSizedBBoxSafeCrop", "BBoxSafeRandomCrop",
    "AtLeastOneBBoxRandomCrop", "RandomCropFromBorders", "PadIfNeeded", "Pad", "NoOp"})


def _resize_flip(*, sizes: int | Sequence[int], max_size: int, flip_prob: float = 0.5,
                 photometric: bool = False) -> list[dict]:
    sizes = [sizes] if isinstance(sizes, int) else list(sizes)
    out = [{"name": "ResizeShortestEdge", "sizes": sizes, "max_size": max_size}]
    if flip_prob > 0:
        out.append({"name": "HorizontalFlip", "p": flip_prob})
    if photometric:
        out.append({"name": "ColorJitter", "brightness": 0.2, "contrast": 0.2,
                    "saturation": 0.2, "hue": 0.02, "p": 0.8})
    return out


def _lsj(*, size: int, min_scale: float = 0.1, max_scale: float = 2.0, flip_prob: float = 0.5,
         fill: float = 128.0) -> list[dict]:
    # the flip first, so that the padding is always at the bottom and right (as the batch's)
    out = [{"name": "HorizontalFlip", "p": flip_prob}] if flip_prob > 0 else []
    return out + [{"name": "ResizeScale", "min_scale": min_scale, "max_scale": max_scale,
                   "height": size, "width": size},
                  {"name": "RandomCrop", "height": size, "width": size, "pad_if_needed": True,
                   "pad_position": "top_left", "fill": fill}]


#: preset name -> a function of its arguments giving the entries it stands for
PRESETS = {"resize_flip": _resize_flip, "lsj": _lsj}


def _known_names() -> list[str]:
    names = [n for n in dir(A) if isinstance(getattr(A, n), type)
             and issubclass(getattr(A, n), A.BasicTransform)]
    return [*PRESETS, *OWN, *COMPOSITIONS, *names]


def _arguments(fn: Any) -> tuple[list[str], bool]:
    """``fn``'s keyword parameter names and whether it takes ``**kwargs``."""
    params = inspect.signature(fn).parameters.values()
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return names, any(p.kind == p.VAR_KEYWORD for p in params)


def _check_arguments(fn: Any, args: Mapping[str, Any], where: str) -> None:
    names, any_kwargs = _arguments(fn)
    for key in args:
        if key not in names and not any_kwargs:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ValueError(f"{where}: unknown argument '{key}'; {hint}(it takes "
                             f"{', '.join(n for n in names if n != 'self') or 'none'})")


def _value_error(e: Exception) -> str:
    """A one-line reason from albumentations' (pydantic's) validation error or any other."""
    cause = e.__cause__ if hasattr(e.__cause__, "errors") else e  # albumentations wraps it
    errors = getattr(cause, "errors", None)
    if callable(errors):
        try:
            return "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']} (got "
                             f"{err.get('input')!r})" for err in errors())
        except Exception:  # noqa: BLE001 - not pydantic's shape: fall back to the text
            pass
    return " ".join(str(e).split())


def expand(specs: Sequence[Any], *, defaults: Mapping[str, Mapping[str, Any]],
           where: str = "data.augment") -> list[tuple[str, dict]]:
    """``(location, entry)`` of every entry with presets replaced by what they stand for;
    ``defaults[preset]`` fills a preset's arguments the entry leaves out (from
    ``data.input``)."""
    out = []
    for i, spec in enumerate(specs):
        at = f"{where}[{i}]"
        if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
            raise ValueError(f"{at}: each entry is a mapping with a name, e.g. "
                             f"{{name: HorizontalFlip, p: 0.5}}, got {spec!r}")
        name, args = spec["name"], {k: v for k, v in spec.items() if k != "name"}
        if name not in PRESETS:
            out.append((at, dict(spec)))
            continue
        fn = PRESETS[name]
        _check_arguments(fn, args, f"{at} (preset {name})")
        merged = {**{k: v for k, v in defaults.get(name, {}).items()
                     if k in _arguments(fn)[0]}, **args}
        try:
            entries = fn(**merged)
        except TypeError as e:
            raise ValueError(f"{at} (preset {name}): {e}") from None
        out += [(f"{at} (preset {name})", entry) for entry in entries]
    return out


def _transform_class(name: str, where: str) -> type:
    cls = OWN.get(name) or getattr(A, name, None)
    if isinstance(cls, type) and (issubclass(cls, A.BasicTransform) or name in COMPOSITIONS):
        return cls
    close = difflib.get_close_matches(name, _known_names(), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise ValueError(f"{where}: unknown transform '{name}': not a preset "
                     f"({', '.join(PRESETS)}), one of ours ({', '.join(OWN)}) nor an "
                     f"albumentations transform{hint}")


def _check_kind(cls: type, name: str, where: str, masks: bool) -> None:
    if name in COMPOSITIONS or issubclass(cls, A.ImageOnlyTransform):
        return
    targets = getattr(cls, "_targets", ())
    if name not in OWN and A.core.type_definitions.Targets.BBOXES not in targets:
        raise ValueError(f"{where}: {name} does not move bounding boxes, so it cannot "
                         "augment detection data")
    if masks and name not in MASK_SAFE:
        raise ValueError(
            f"{where}: {name} is not an axis-aligned affine map, and this model has masks "
            "(model.mask_head.enabled): compact masks follow flips, resizes, crops and pads "
            f"only ({', '.join(sorted(MASK_SAFE))}) and any pixel-level transform")


def _build_one(at: str, spec: dict, *, masks: bool) -> A.BasicTransform:
    name, args = spec["name"], {k: v for k, v in spec.items() if k != "name"}
    cls = _transform_class(name, at)
    where = f"{at} ({name})"
    _check_kind(cls, name, where, masks)
    _check_arguments(cls, args, where)
    if name in COMPOSITIONS:
        children = args.get("transforms")
        if not isinstance(children, list) or not children:
            raise ValueError(f"{where}: needs a non-empty list of entries as transforms")
        args["transforms"] = [_build_one(f"{where}.transforms[{j}]", dict(child), masks=masks)
                              for j, child in enumerate(children)
                              if _is_entry(child, f"{where}.transforms[{j}]")]
    try:
        return cls(**args)
    except (ValueError, TypeError) as e:  # albumentations validates with pydantic
        raise ValueError(f"{where}: {_value_error(e)}") from None


def _is_entry(spec: Any, where: str) -> bool:
    if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
        raise ValueError(f"{where}: each entry is a mapping with a name, got {spec!r}")
    if spec["name"] in PRESETS:
        raise ValueError(f"{where}: a preset ({spec['name']}) cannot sit inside a composition")
    return True


def build_augment(specs: Sequence[Any], *, defaults: Mapping[str, Mapping[str, Any]],
                  masks: bool = False) -> list[A.BasicTransform]:
    """The albumentations transforms of ``data.augment`` (module docstring); ``ValueError``
    naming the entry for anything wrong. ``defaults``: each preset's arguments from
    ``data.input``; ``masks``: refuse what compact masks cannot follow."""
    return [_build_one(at, spec, masks=masks) for at, spec in expand(specs, defaults=defaults)]
