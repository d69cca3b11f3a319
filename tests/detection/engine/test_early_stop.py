"""Early stopping and the best evaluation (detection/engine/early_stop.py) on scripted metric
sequences."""
from __future__ import annotations

import pytest

from detection.engine.early_stop import EarlyStopping, improves, metric_mode


def _run(stopper: EarlyStopping, values: list[float], period: int = 100) -> int | None:
    """The iteration at which ``stopper`` stops over evaluations every ``period`` iterations."""
    for k, value in enumerate(values, start=1):
        if stopper.update({stopper.metric: value, "other": 0.0}, iteration=k * period):
            return k * period
    return None


@pytest.mark.parametrize("values, patience, min_delta, stops_at", [
    ([10, 20, 30, 25, 29, 28, 40], 3, 0.0, 600),  # best 30 at 300, then 3 below it
    ([10, 20, 30, 25, 29, 31, 40], 3, 0.0, None),  # 31 at 600 improves: the count restarts
    ([10, 20, 30, 30.5, 30.9, 30.2], 3, 1.0, 600),  # +0.5, +0.9 are not more than min_delta 1
    ([10, 20, 30, 31.5, 30, 29, 28], 3, 1.0, 700),  # +1.5 is: best 31.5 at 400
    ([5, 5, 5], 1, 0.0, 200),  # equal is not better
    ([float("nan"), 1.0, 1.0], 2, 0.0, None),  # NaN never improves, 1.0 then does
])
def test_stops_at_the_evaluation_the_patience_runs_out(values, patience, min_delta, stops_at):
    stopper = EarlyStopping(metric="mAP", patience=patience, min_delta=min_delta)
    assert _run(stopper, values) == stops_at
    assert (stopper.reason is None) == (stops_at is None)


def test_a_loss_is_minimised_and_the_reason_names_it_all():
    stopper = EarlyStopping(metric="val_loss", patience=2, min_delta=0.01)
    assert stopper.mode == "min"
    assert _run(stopper, [1.0, 0.8, 0.795, 0.9, 0.7]) == 400
    assert stopper.reason == (
        "early stop at iteration 400: val_loss has not fallen by more than 0.01 for 2 "
        "evaluation(s) in a row (best 0.8 at iteration 200; solver.early_stop.patience 2)")


def test_its_state_resumes_where_it_stopped_counting():
    values = [10, 20, 30, 25, 29, 28, 40]
    first = EarlyStopping(metric="mAP", patience=3)
    assert _run(first, values[:4]) is None
    state = first.state_dict()
    assert state == {"best": 30.0, "best_iteration": 300, "bad_evaluations": 1}
    resumed = EarlyStopping(metric="mAP", patience=3)
    resumed.load_state_dict(state)
    assert [resumed.update({"mAP": v}, iteration=i) for i, v in
            [(500, 29), (600, 28)]] == [False, True]


def test_a_missing_metric_names_the_ones_there_are():
    with pytest.raises(KeyError, match="no 'mAP50_typo'.* it has mAP, other"):
        EarlyStopping(metric="mAP50_typo", patience=1).update({"mAP": 1.0, "other": 2,
                                                               "per_category": {}}, 1)
    with pytest.raises(ValueError, match="patience of at least 1"):
        EarlyStopping(metric="mAP", patience=0)


def test_modes_by_name_and_improvement():
    assert [metric_mode(n) for n in ("mAP", "val_loss", "top1_err", "top1", "AR100")] == [
        "max", "min", "min", "max", "max"]
    assert improves(1.0, None, mode="max") and not improves(float("inf"), None, mode="max")
    assert improves(0.5, 1.0, mode="min", min_delta=0.4)
    assert not improves(0.6, 1.0, mode="min", min_delta=0.4)
