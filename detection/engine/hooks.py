"""Hooks: behaviour added to the training loop without editing it.

A hook subclasses :class:`HookBase` and overrides what it needs; the :class:`~.trainer.Trainer`
calls every hook's method, in the order of its ``hooks`` list, at these points::

    before_train()                       once, before the first step (also after a resume)
    for each iteration:
        before_step()                    trainer.iteration = steps done so far
        (the SGD step)
        after_step()                     trainer.iteration = steps done, this one included
    after_evaluation(results)            after each evaluation, with its results
    after_train()                        once, at the end (also after an error or a stop)

``self.trainer`` is the trainer (set when the hook is registered): ``trainer.iteration``,
``trainer.max_iter``, ``trainer.model``, ``trainer.optimizer``, ``trainer.writer`` (the
metrics log, ``None`` on processes other than the first), ``trainer.last_results``, and
``trainer.request_stop(reason)`` to end the training after the current step.

A hook with state returns it from ``state_dict()`` (tensors and plain values only): it goes
into every checkpoint under ``hooks``, keyed by the hook's ``name``, and a resumed run hands it
back to ``load_state_dict`` before ``before_train``, so resuming stays exact.

Your own hooks come from the config (``hooks: [{class: my_package.MyHook, <keyword
arguments>}]``), imported by :func:`build_user_hooks` from the config a user runs, never from
one stored in a checkpoint (``resdet eval`` and ``infer`` read those, and import no hook).
"""
from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from .trainer import Trainer

__all__ = ["HookBase", "build_user_hooks"]


class HookBase:
    """The base of every hook (module docstring); each method does nothing by default."""

    trainer: "Trainer"

    @property
    def name(self) -> str:
        """The key of this hook's state in a checkpoint (its class name by default)."""
        return type(self).__name__

    def before_train(self) -> None:
        pass

    def after_train(self) -> None:
        pass

    def before_step(self) -> None:
        pass

    def after_step(self) -> None:
        pass

    def after_evaluation(self, results: Mapping[str, Any]) -> None:
        pass

    def state_dict(self) -> Optional[dict]:
        """This hook's state for a checkpoint, or ``None`` when it has none."""
        return None

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass


def _import_class(path: str, where: str) -> type:
    module_name, _, class_name = path.rpartition(".")
    if not module_name:
        raise ValueError(f"{where}: class must be an import path (my_package.module.MyHook), "
                         f"got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"{where}: cannot import {module_name} for {path}: {e} (is its "
                         "package installed or on PYTHONPATH?)") from None
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type) or not issubclass(cls, HookBase):
        found = "nothing" if cls is None else f"a {type(cls).__name__}"
        raise ValueError(f"{where}: {path} is {found}, not a subclass of "
                         "detection.engine.hooks.HookBase")
    return cls


def build_user_hooks(specs: Sequence[Any], *, key: str = "hooks") -> list[HookBase]:
    """The hooks ``specs`` name (``[{"class": "pkg.mod.Hook", **kwargs}, ...]``, the config's
    ``hooks``), imported and built in order; ``ValueError`` naming ``hooks[i]`` for a spec
    without a class, a class that cannot be imported or is no ``HookBase``, or arguments it
    refuses. Call it on a user's own config only (module docstring)."""
    hooks = []
    for i, spec in enumerate(specs):
        where = f"{key}[{i}]"
        if not isinstance(spec, Mapping) or not isinstance(spec.get("class"), str):
            raise ValueError(f"{where}: each hook is a mapping with its class, e.g. "
                             f"{{class: my_package.MyHook}}, got {spec!r}")
        cls = _import_class(spec["class"], where)
        kwargs = {k: v for k, v in spec.items() if k != "class"}
        try:
            hooks.append(cls(**kwargs))
        except TypeError as e:
            raise ValueError(f"{where} ({spec['class']}): {e}") from None
    names = [h.name for h in hooks]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"{key}: two hooks are named {twice[0]} (their state would share one "
                         "checkpoint entry): give each its own name property")
    return hooks
