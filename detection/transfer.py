"""Initialise a whole detector from another detector's checkpoint (``model.weights``).

The source is a checkpoint of this toolkit (``last.pth``, ``best.pth``: ``{"model", "classes",
...}``), one of ``tools/convert_torchvision.py`` (a torchvision COCO detector, 90 classes), or a
bare state_dict of our model. Rules, in order:

1. **Architecture.** Every tensor of the model outside the class-dependent predictor must be in
   the checkpoint under the same name with the same shape, and the checkpoint may hold nothing
   else but BatchNorm ``num_batches_tracked`` counters; otherwise :class:`WeightsError` lists the
   missing, unexpected and mis-shaped keys (an R-50 detector into an R-18 config stops here).
2. **Predictor** (``roi_heads.box_predictor.cls_score`` ``(K+1, D)`` and ``bbox_pred``
   ``((K+1)*4, D)``, row ``k`` / rows ``4k..4k+3`` for label ``k``, 0 the background). Loaded as
   is when the checkpoint's classes are the model's (same names in the same order; or, without
   names, same shapes; or ``weights_classes="none"`` and same shapes). Otherwise re-initialised
   (the model's own initialisation) and, with ``weights_classes="by_name"``, the rows of every
   class whose name equals a checkpoint class's name (case-insensitive) are copied from it, as
   is the background row. A name that the checkpoint holds twice (the ten ``"N/A"`` of a
   converted torchvision COCO model) matches nothing.

A Mask R-CNN initialised from a Faster R-CNN (a checkpoint without any ``roi_heads.mask_head``
tensor) keeps its own initial mask head, reported as re-initialised. A Mask R-CNN's
class-specific mask predictor (``roi_heads.mask_head.mask_fcn_logits``, channel
``k`` for label ``k``) is class-dependent too and follows the same rule, channel by channel
(``class_keys``); a class-agnostic one (a single channel) is loaded as is.

Copying rows, not only keeping the trunk, makes the new model detect the shared classes before
any training: its logits for them are the source's, and only the softmax denominator changes
(the other classes' terms leave it), so scores differ but boxes do not.

Every tensor is accounted for in the :class:`TransferReport` (loaded / re-initialised / ignored),
which the run logs.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from backbones.weights import WeightsError, load_state_dict_checked

from .engine.checkpoint import load_checkpoint, unwrap_model

__all__ = ["MASK_PREDICTOR_KEYS", "PREDICTOR_KEYS", "TransferReport", "class_keys",
           "load_detector_weights", "match_classes", "transfer_weights"]

_CLS = "roi_heads.box_predictor.cls_score."
_BOX = "roi_heads.box_predictor.bbox_pred."
#: The class-dependent tensors: their first dimension is ``K + 1`` (cls) or ``(K + 1) * 4`` (box).
PREDICTOR_KEYS = (_CLS + "weight", _CLS + "bias", _BOX + "weight", _BOX + "bias")
_MASK_HEAD = "roi_heads.mask_head."
_MASK = _MASK_HEAD + "mask_fcn_logits."
MASK_PREDICTOR_KEYS = (_MASK + "weight", _MASK + "bias")  # (K + 1, C, 1, 1), (K + 1,)
_TORCHVISION_PREFIX = "backbone.body."


def class_keys(expected: Mapping[str, Tensor]) -> tuple[str, ...]:
    """The class-dependent tensors of a model's state_dict: the box predictor's and a
    class-specific mask predictor's (one channel per label, as many as the classifier's rows)."""
    rows = expected[_CLS + "weight"].shape[0]
    mask = MASK_PREDICTOR_KEYS if _MASK + "weight" in expected and expected[
        _MASK + "weight"].shape[0] == rows > 1 else ()
    return PREDICTOR_KEYS + mask


@dataclass
class TransferReport:
    """What :func:`transfer_weights` did: every model tensor (but BatchNorm counters absent from
    the checkpoint) is ``loaded`` or ``reinitialised``; ``ignored`` are checkpoint tensors not
    used; ``matches`` are ``(name, checkpoint label,
    model label)`` whose predictor rows were copied (label 0: the background)."""

    source: str
    loaded: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    matches: list[tuple[str, int, int]] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)  # model classes that start fresh
    note: str = ""

    def lines(self) -> list[str]:
        """The log lines of the run (one per category of tensors)."""
        out = [f"model.weights {self.source}: loaded {len(self.loaded)} tensors"
               + (f"; {self.note}" if self.note else "")]
        if self.reinitialised:
            out.append(f"  re-initialised ({len(self.reinitialised)}): "
                       + ", ".join(self.reinitialised))
        if self.matches:
            pairs = ", ".join(f"{name} {src}->{dst}" for name, src, dst in self.matches)
            out.append(f"  predictor rows copied by class name (checkpoint label -> label): "
                       f"{pairs}")
        if self.unmatched:
            out.append(f"  classes without a match (new rows): {', '.join(self.unmatched)}")
        if self.ignored:
            out.append(f"  ignored ({len(self.ignored)}): " + ", ".join(self.ignored))
        return out


def _key(name: str) -> str:
    return name.strip().casefold()


def match_classes(source: Sequence[dict], target: Sequence[dict]
                  ) -> tuple[list[tuple[str, int, int]], list[str]]:
    """``([(name, source label, target label), ...], [target names without a match])`` by
    case-insensitive name; names the source holds more than once match nothing."""
    counts: dict[str, int] = {}
    for c in source:
        counts[_key(c["name"])] = counts.get(_key(c["name"]), 0) + 1
    label_of = {_key(c["name"]): label for label, c in enumerate(source, start=1)
                if counts[_key(c["name"])] == 1}
    matches, unmatched = [], []
    for label, c in enumerate(target, start=1):
        src = label_of.get(_key(c["name"]))
        if src is None:
            unmatched.append(str(c["name"]))
        else:
            matches.append((str(c["name"]), src, label))
    return matches, unmatched


def _copy_rows(fresh: dict[str, Tensor], src: Mapping[str, Tensor],
               pairs: Sequence[tuple[int, int]]) -> None:
    """``fresh[...]``'s rows of label ``dst`` := ``src``'s rows of label ``s`` (in place)."""
    with torch.no_grad():
        for s, d in pairs:
            for key in (_CLS + "weight", _CLS + "bias", *MASK_PREDICTOR_KEYS):
                if key in fresh:
                    fresh[key][d] = src[key][s]
            for key in (_BOX + "weight", _BOX + "bias"):
                fresh[key][4 * d:4 * d + 4] = src[key][4 * s:4 * s + 4]


def _classes_of(checkpoint: Mapping, source: str) -> list[dict] | None:
    """The checkpoint's ``classes`` (``None`` for a bare state_dict), checked."""
    classes = checkpoint.get("classes")
    if classes is None or isinstance(classes, Tensor):
        return None
    if not (isinstance(classes, list)
            and all(isinstance(c, Mapping) and isinstance(c.get("name"), str) for c in classes)):
        raise WeightsError(f"{source}: 'classes' must be a list of {{'id', 'name'}} dicts")
    return list(classes)


def _same_names(source: Sequence[dict] | None, target: Sequence[dict]) -> bool:
    return source is not None and [_key(c["name"]) for c in source] == [
        _key(c["name"]) for c in target]


def _fits(state: Mapping[str, Tensor], expected: Mapping[str, Tensor],
          keys: Sequence[str]) -> bool:
    return all(k in state and state[k].shape == expected[k].shape for k in keys)


def transfer_weights(model: nn.Module, checkpoint: Mapping, *, classes: Sequence[dict],
                     weights_classes: str = "by_name", source: str = "checkpoint"
                     ) -> TransferReport:
    """Load ``checkpoint`` (a checkpoint dict or a bare state_dict) into ``model`` under the
    rules of the module docstring; ``classes`` are the model's (``[{"id", "name"}]`` by label).

    Raises :class:`WeightsError` for another architecture or a torchvision state_dict that was
    not converted.
    """
    if weights_classes not in ("by_name", "none"):
        raise ValueError(f'weights_classes must be "by_name" or "none", got {weights_classes!r}')
    state = checkpoint["model"] if isinstance(checkpoint.get("model"), Mapping) else checkpoint
    state = {k: v for k, v in state.items() if isinstance(v, Tensor)}
    if any(k.startswith(_TORCHVISION_PREFIX) for k in state):
        raise WeightsError(f"{source} is a torchvision state_dict: convert it first with "
                           f"python tools/convert_torchvision.py {source} converted.pth")
    src_classes = _classes_of(checkpoint, source)
    model = unwrap_model(model)
    expected = model.state_dict()
    report = TransferReport(source=source)
    merged = dict(state)
    mask_head = [k for k in expected if k.startswith(_MASK_HEAD)]
    if mask_head and not any(k.startswith(_MASK_HEAD) for k in state):  # from a Faster R-CNN
        merged.update({k: expected[k] for k in mask_head})
        report.reinitialised.extend(mask_head)
        report.note = "the checkpoint has no mask head"
    keys = [k for k in class_keys(expected) if k not in report.reinitialised]
    keep_predictor = _fits(state, expected, keys) and (
        _same_names(src_classes, classes) or src_classes is None or weights_classes == "none")
    if not keep_predictor and all(k in state for k in keys) and all(
            state[k].shape[1:] == expected[k].shape[1:] for k in keys):
        fresh = {k: expected[k].clone() for k in keys}
        n_src = state[_CLS + "weight"].shape[0] - 1
        which = (" of other names" if n_src == len(classes) else "") + (
            "" if src_classes is not None else " (the checkpoint names none)")
        report.note = "; ".join(filter(None, [
            report.note, f"the checkpoint has {n_src} classes, the data {len(classes)}{which}"]))
        if weights_classes == "by_name" and src_classes is not None:
            matches, report.unmatched = match_classes(src_classes, classes)
            report.matches = [("background", 0, 0), *matches]
            _copy_rows(fresh, state, [(s, d) for _, s, d in report.matches])
        else:
            report.ignored.extend(keys)
        merged.update(fresh)
        report.reinitialised.extend(keys)
    try:
        load_state_dict_checked(model, merged, source=source)
    except WeightsError as e:
        raise WeightsError(f"{e}\n  (model.weights must come from the same architecture as "
                           "the config: backbone, FPN, heads and their widths)") from None
    reinit = set(report.reinitialised)
    report.loaded = [k for k in expected if k in state and k not in reinit]
    report.ignored.extend(k for k in state if k not in expected)
    return report


def load_detector_weights(model: nn.Module, path: str | os.PathLike, *,
                          classes: Sequence[dict], weights_classes: str = "by_name"
                          ) -> TransferReport:
    """:func:`transfer_weights` from the checkpoint file ``path`` (``weights_only`` read)."""
    try:
        checkpoint = load_checkpoint(path)
    except (FileNotFoundError, RuntimeError) as e:
        raise WeightsError(f"model.weights: {e}") from None
    report = transfer_weights(model, checkpoint, classes=classes,
                              weights_classes=weights_classes, source=os.fspath(path))
    if "iteration" in checkpoint:
        report.note = "; ".join(filter(None, [f"iteration {checkpoint['iteration']}",
                                              report.note]))
    return report
