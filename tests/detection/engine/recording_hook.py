"""A user's hook for the tests, importable by path as a config names it
(``hooks: [{class: recording_hook.Recorder, tag: ...}]``): it records every call it gets, with
what the hooks before it had done by then, and keeps the record as its state."""
from __future__ import annotations

from detection.engine.hooks import HookBase


class Recorder(HookBase):
    def __init__(self, tag: str = "r"):
        self.tag = tag
        self.events: list[list] = []

    def before_train(self) -> None:
        self.events.append(["before_train", self.trainer.iteration])

    def before_step(self) -> None:
        self.events.append(["before_step", self.trainer.iteration])

    def after_step(self) -> None:
        self.events.append(["after_step", self.trainer.iteration])

    def after_evaluation(self, results) -> None:
        best = next(h for h in self.trainer.hooks if h.name == "best")
        # the hooks before this one already ran: the validation loss is in the results and
        # the best checkpoint has seen them
        self.events.append(["after_evaluation", self.trainer.iteration, results["mAP"],
                            "val_loss" in results, best.value])

    def after_train(self) -> None:
        self.events.append(["after_train", self.trainer.iteration])

    def state_dict(self) -> dict:
        return {"tag": self.tag, "events": [list(e) for e in self.events]}

    def load_state_dict(self, state) -> None:
        self.events = [list(e) for e in state["events"]]


class NotAHook:
    pass
