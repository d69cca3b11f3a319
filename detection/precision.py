"""Which arithmetic a model runs in, chosen from what the hardware reports, and why.

One place decides for every caller (``Predictor``, ``tools/eval.py``, the training run and its
evaluation, ``tools/benchmark.py``, the OpenVINO backend):

- ``off``: float32.
- ``bf16``: ``torch.autocast(device, dtype=torch.bfloat16)`` on any device (on a CPU without
  native bf16 it is emulated and slower than float32: for tests and comparisons).
- ``auto``: bfloat16 autocast on a CPU that multiplies bf16 natively (Intel AMX tiles or
  AVX512-BF16, as torch's own CPU checks report them), float32 on any other CPU. On CUDA it keeps
  what the config asked before this key existed (``solver.amp: true`` -> ``solver.amp_dtype``,
  else float32).
- ``true`` / ``false`` (``solver.amp`` of older configs): CUDA autocast to ``solver.amp_dtype``
  or float32; ``true`` on a CPU stays float32, as it always did.

Autocast runs convolutions and matrix products in bf16 and keeps what needs float32 in float32:
losses (autocast's float32 list: ``binary_cross_entropy_with_logits``, ``smooth_l1_loss``,
``cross_entropy``), RoIAlign / NMS (torchvision casts to float32), and in the model itself box
decoding, anchors, objectness top-k and the class softmax (``BoxCoder.decode``, ``RPN``,
``RoIHeads.postprocess`` promote their inputs to float32). The model is channels-last already
(``FasterRCNN(channels_last=True)``), the layout oneDNN's bf16 kernels want.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Optional, Union

import torch

from backbones.layers import fold_norms

__all__ = ["AMP_MODES", "Precision", "cpu_bf16_support", "resolve_precision",
           "inference_precision", "training_precision"]

#: What ``test.amp``, ``--amp`` and ``Predictor(amp=...)`` accept.
AMP_MODES = ("auto", "off", "bf16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: layers whose products autocast runs in the lower precision (their weights are cast per call)
_AUTOCAST_LAYERS = (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)
logger = logging.getLogger("detection")


def _torch_check(name: str) -> bool:
    """``torch.cpu.<name>()`` (a check of torch's own CPU dispatcher), False when absent."""
    check = getattr(torch.cpu, name, None)
    try:
        return bool(check()) if check is not None else False
    except RuntimeError:
        return False


def cpu_bf16_support() -> tuple[bool, str]:
    """``(native, what)``: whether this CPU multiplies bfloat16 natively (AMX tiles or
    AVX512-BF16, and oneDNN built with bf16), and the features torch reports, for the log."""
    amx = _torch_check("_is_amx_tile_supported")
    avx512_bf16 = _torch_check("_is_avx512_bf16_supported")
    try:
        onednn = bool(torch.backends.mkldnn.is_available()
                      and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        onednn = False
    found = [name for name, ok in (("AMX", amx), ("AVX512-BF16", avx512_bf16)) if ok]
    capability = torch.backends.cpu.get_cpu_capability()
    if not onednn:
        return False, f"{capability}, no oneDNN bf16"
    if not found:
        return False, f"{capability}, no AMX or AVX512-BF16"
    return True, "+".join(found)


@dataclass(frozen=True)
class Precision:
    """The arithmetic of one run: ``dtype`` (None: float32) on ``device_type``, and why."""

    dtype: Optional[torch.dtype]
    device_type: str
    reason: str

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    @property
    def name(self) -> str:
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.dtype, "float32")

    def trainer_args(self) -> dict:
        """``amp`` and ``amp_dtype`` for ``Trainer`` and ``inference_on_dataset``."""
        return {"amp": self.enabled, "amp_dtype": self.name if self.enabled else "bf16"}

    def autocast(self) -> contextlib.AbstractContextManager:
        """``torch.autocast`` to ``dtype``, or nothing for float32."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` made ready for inference in this precision, in place: in eval mode, every
        FrozenBN and batch norm folded into its convolution for good
        (``backbones.layers.fold_norms``: FrozenBN's outputs bit for bit, a batch norm's within
        float32 rounding, without re-folding or normalising on every call); for a CPU autocast
        run, channels-last 4-D weights, and the weights of the layers autocast runs in bf16
        (convolutions, linear layers) stored in bf16, which is what autocast would cast them to
        on every call. Only for a model that infers: Predictor and ``resdet eval`` build their
        own."""
        fold_norms(model.eval())
        if self.enabled and self.device_type == "cpu":
            model.to(memory_format=torch.channels_last)
            with torch.no_grad():
                for m in model.modules():
                    if isinstance(m, _AUTOCAST_LAYERS):
                        for p in (m.weight, m.bias):
                            if p is not None:
                                p.data = p.data.to(self.dtype)
        return model

    def describe(self) -> str:
        layout = ", channels-last" if self.enabled and self.device_type == "cpu" else ""
        return f"{self.name}{' autocast' if self.enabled else ''}{layout} ({self.reason})"


def resolve_precision(amp: Union[str, bool], device: Union[str, torch.device], *,
                      cuda_dtype: Optional[str] = None) -> Precision:
    """The :class:`Precision` of ``amp`` (see the module docstring) on ``device``.

    ``cuda_dtype``: what CUDA runs under ``auto`` or ``true`` (``"bf16"``, ``"fp16"``, or None:
    float32).
    """
    kind = torch.device(device).type
    if amp is False or amp == "off":
        return Precision(None, kind, "amp off")
    if amp == "bf16":
        if kind == "cpu":
            native, what = cpu_bf16_support()
            how = f"native: {what}" if native else f"emulated on this CPU ({what}): slower"
            return Precision(torch.bfloat16, kind, f"amp bf16 asked; {how}")
        return Precision(torch.bfloat16, kind, "amp bf16 asked")
    if amp is True or amp == "auto":
        key = "true" if amp is True else "auto"
        if kind == "cuda":
            if cuda_dtype is None:
                return Precision(None, kind, f"amp {key}: float32 on CUDA (solver.amp: true "
                                             "for CUDA autocast)")
            return Precision(_DTYPES[cuda_dtype], kind, f"amp {key}: solver.amp_dtype on CUDA")
        if kind != "cpu" or amp is True:
            return Precision(None, kind, f"amp {key}: float32 on {kind} (solver.amp: true is "
                                         "for CUDA; use bf16 or auto on a CPU)")
        native, what = cpu_bf16_support()
        if native:
            return Precision(torch.bfloat16, kind, f"auto: this CPU has native bf16 ({what})")
        return Precision(None, kind, f"auto: this CPU has no native bf16 ({what})")
    raise ValueError(f"amp must be one of {list(AMP_MODES)} (or true/false), got {amp!r}")


def inference_precision(amp: str, device: Union[str, torch.device], *, solver_amp: Union[
        str, bool] = False, amp_dtype: str = "bf16") -> Precision:
    """Inference (``test.amp`` / ``--amp``): on CUDA, ``auto`` follows ``solver.amp`` (the
    training's CUDA autocast, as evaluation always did: ``true`` -> ``amp_dtype``, ``bf16`` ->
    bf16; ``auto``, ``off``, ``false`` train and infer in float32 on CUDA)."""
    cuda = amp_dtype if solver_amp is True else "bf16" if solver_amp == "bf16" else None
    return resolve_precision(amp, device, cuda_dtype=cuda)


def training_precision(amp: Union[str, bool], amp_dtype: str,
                       device: Union[str, torch.device]) -> Precision:
    """Training (``solver.amp``): ``amp_dtype`` is CUDA's, with ``solver.amp: true``."""
    return resolve_precision(amp, device, cuda_dtype=amp_dtype if amp is True else None)
