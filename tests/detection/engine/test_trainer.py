import json
import signal

import pytest
import torch

from detection.engine.checkpoint import load_checkpoint, seed_all
from detection.engine.files import DiskFullError, disk_full_error
from detection.engine.preemption import Preempted
from detection.engine.runlog import MetricsWriter
from detection.engine.schedule import WarmupLRScheduler, param_groups
from detection.data.loader import move_batch
from detection.engine.hooks import MetricsLogger, standard_hooks
from detection.engine.trainer import NonFiniteLossError, Trainer
from detection.evaluation.inference import inference_on_dataset
from toy_detector import LOSS_NAMES, ToyDetector, ToyEvaluator, toy_batches, toy_sample

DEVICE = torch.device("cpu")


def _trainer(tmp_path, *, max_iter=6, start_ckpt=None, crash_at=None, evaluator=None,
             eval_period=0, checkpoint_period=2, model=None, seed=0, init_seed=0,
             signal_at=None, hooks=None):
    seed_all(init_seed)
    model = model or ToyDetector()
    opt = torch.optim.SGD(param_groups(model, weight_decay=1e-4, weight_decay_norm=0.0),
                          lr=0.05, momentum=0.9)
    sched = WarmupLRScheduler(opt, max_iter=max_iter, steps=[4], warmup_iters=2)
    start = 0 if start_ckpt is None else start_ckpt["iteration"]
    evaluate = None
    if evaluator is not None:
        test = [[toy_sample(100 + i)] for i in range(3)]
        evaluate = lambda m: inference_on_dataset(m, test, evaluator, device=DEVICE)[0]  # noqa
    trainer = Trainer(model=model, optimizer=opt, scheduler=sched,
                      data_loader=toy_batches(seed=seed, batch_size=4, start_iter=start,
                                              crash_at=crash_at, signal_at=signal_at),
                      max_iter=max_iter, output_dir=tmp_path, device=DEVICE, evaluate=evaluate,
                      hooks=hooks if hooks is not None else standard_hooks(
                          log_period=1, eval_period=eval_period,
                          checkpoint_period=checkpoint_period),
                      extra_state={"config": {"seed": seed}, "classes": []},
                      writer=MetricsWriter(tmp_path, truncate_after=start),
                      prepare_batch=move_batch)
    if start_ckpt is not None:
        trainer.load_state_dict(start_ckpt)
    return trainer


def test_resume_after_a_crash_gives_bitwise_the_same_weights(tmp_path):
    full = _trainer(tmp_path / "full")
    full.train()

    crashed = _trainer(tmp_path / "resumed", crash_at=5)  # dies fetching batch 5
    with pytest.raises(KeyboardInterrupt):
        crashed.train()
    ckpt = load_checkpoint(tmp_path / "resumed" / "last.pth")
    assert ckpt["iteration"] == 4
    # a fresh process: other weights and RNG states until the checkpoint is loaded
    resumed = _trainer(tmp_path / "resumed", start_ckpt=ckpt, init_seed=99)
    resumed.train()

    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    sa, sb = full.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(sa[i]["momentum_buffer"], sb[i]["momentum_buffer"]) for i in sa)
    # the log holds each iteration once, the crashed run's extra lines dropped
    lines = [json.loads(x) for x in (tmp_path / "resumed" / "metrics.jsonl").read_text().split(
        "\n") if x]
    assert [r["iteration"] for r in lines if r["type"] == "train"] == [1, 2, 3, 4, 5, 6]
    full_lines = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().split(
        "\n") if x]
    assert [r["loss"] for r in lines] == [r["loss"] for r in full_lines]


def test_metrics_lines_hold_every_loss_term_and_timings(tmp_path):
    _trainer(tmp_path, max_iter=3).train()
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [1, 2, 3]
    for r in records:
        assert set(LOSS_NAMES) | {"loss", "lr", "time", "data_time", "memory_mb", "eta_s"} <= set(r)
        assert r["loss"] == pytest.approx(sum(r[n] for n in LOSS_NAMES))
        assert r["time"] >= r["data_time"] >= 0 and r["memory_mb"] > 0
    # warm-up over 2 iterations from 0.001 * lr: the lr logged is that of the next iteration
    assert records[0]["lr"] == pytest.approx(0.05 * (0.001 * 0.5 + 0.5))
    assert records[2]["lr"] == pytest.approx(0.05)
    assert records[2]["eta_s"] == 0


def test_non_finite_loss_stops_naming_iteration_and_term(tmp_path, monkeypatch):
    seed_all(0)
    model = ToyDetector()
    real_forward = model.forward
    calls = {"n": 0}

    def forward(images, targets=None, original_sizes=None):
        out = real_forward(images, targets, original_sizes)
        calls["n"] += 1
        if calls["n"] == 4:  # the 4th step (iteration 3) goes bad
            out["loss_box"] = out["loss_box"] * float("nan")
        return out
    monkeypatch.setattr(model, "forward", forward)
    trainer = _trainer(tmp_path / "nan", model=model, max_iter=6, checkpoint_period=2)
    with pytest.raises(NonFiniteLossError, match=r"iteration 3: loss_box=nan") as err:
        trainer.train()
    assert "loss_cls" not in str(err.value)
    assert sorted(p.name for p in (tmp_path / "nan").iterdir()) == ["last.pth", "metrics.jsonl"]
    assert load_checkpoint(tmp_path / "nan" / "last.pth")["iteration"] == 2
    # the bad step changed no weight: they equal those of a clean 3-iteration run
    seed_all(0)
    clean = _trainer(tmp_path / "clean", model=ToyDetector(), max_iter=6, checkpoint_period=0)
    for it in range(3):
        clean.run_step(it, next(clean.data_loader))
    clean_params = dict(clean.model.named_parameters())
    for name, param in model.named_parameters():
        assert torch.equal(param, clean_params[name]), name


def test_periodic_evaluation_keeps_the_best_checkpoint(tmp_path):
    evaluator = ToyEvaluator(values=[30.0, 70.0, 40.0])
    trainer = _trainer(tmp_path, max_iter=6, eval_period=2, evaluator=evaluator)
    result = trainer.train()
    assert evaluator.calls == 3 and result["mAP"] == 40.0
    assert evaluator.samples[0]["image_id"] == 100 and "image" not in evaluator.samples[0]
    best = load_checkpoint(tmp_path / "best.pth")
    last = load_checkpoint(tmp_path / "last.pth")
    assert best["iteration"] == 4 and best["hooks"]["best"]["value"] == 70.0
    assert last["iteration"] == 6 and last["hooks"]["best"]["value"] == 70.0
    evals = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()
             if '"eval"' in x]
    assert [(r["iteration"], r["mAP"]) for r in evals] == [(2, 30.0), (4, 70.0), (6, 40.0)]


def test_evaluation_does_not_change_the_training(tmp_path):
    with_eval = _trainer(tmp_path / "a", eval_period=1, evaluator=ToyEvaluator())
    with_eval.train()
    without = _trainer(tmp_path / "b")
    without.train()
    for (k, v), w in zip(with_eval.model.state_dict().items(), without.model.state_dict().values()):
        assert torch.equal(v, w), k


def test_the_training_time_is_estimated_from_the_first_iterations(tmp_path, caplog,
                                                                   monkeypatch):
    """Iteration k takes 1 + k s on a fake clock: after 6 iterations the median of 2..6 s (the
    first, with the start-up costs, left out), 4 s per iteration, times the 4 left = 16 s."""
    import detection.engine.trainer as trainer_module

    trainer = _trainer(tmp_path, max_iter=10)
    clock = {"now": 0.0}
    run_step = trainer.run_step

    def slow_step(it, batch):  # iteration it takes 1 + it seconds on the fake clock
        clock["now"] += 1 + it
        return run_step(it, batch)

    monkeypatch.setattr(trainer_module.time, "perf_counter", lambda: clock["now"])
    monkeypatch.setattr(trainer, "run_step", slow_step)
    with caplog.at_level("INFO", logger="detection"):
        trainer.train()
    lines = [r.getMessage() for r in caplog.records if "over the first" in r.getMessage()]
    assert lines == ["4.00 s/iteration over the first 6 iterations: the 4 left take about "
                     "0:00:16 (plus evaluation)"]


def test_entries_other_than_losses_are_logged_metrics_not_minimised(tmp_path, monkeypatch):
    seed_all(0)
    model = ToyDetector()
    real_forward = model.forward

    def forward(images, targets=None, original_sizes=None):
        out = real_forward(images, targets, original_sizes)
        # a metric with a steep gradient: were it minimised, objectness.bias would feel it
        return {**out, "top1_err": 1000 * model.objectness.bias.sum() + 25}
    monkeypatch.setattr(model, "forward", forward)
    trainer = _trainer(tmp_path, model=model, max_iter=2)
    bias = model.objectness.bias.item()
    losses = trainer.run_step(0, next(trainer.data_loader))
    assert losses["top1_err"] == pytest.approx(1000 * bias + 25)
    assert losses["loss"] == pytest.approx(sum(losses[n] for n in LOSS_NAMES))
    assert 0 < model.objectness.bias.grad.abs().item() < 1  # from loss_rpn_cls alone


def test_inference_logs_progress_and_the_evaluators_time(tmp_path):
    import logging

    from detection.engine.runlog import LOGGER_NAME

    records = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger(LOGGER_NAME)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        test = [[toy_sample(100 + i)] for i in range(3)]
        result, _ = inference_on_dataset(ToyDetector(), test, ToyEvaluator(), device=DEVICE,
                                          log_period_s=0)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert result["num_images"] == 3.0
    assert [r.split("  ")[0] for r in records[:3]] == [
        "inference 1/3", "inference 2/3", "inference 3/3"]
    assert all(" s/it  data " in r and "  eta " in r for r in records[:3])
    assert records[3].startswith("inference: 3 it in 0:00:0") and "evaluator: " in records[3]
    assert len(records) == 4


def _same_training(a, b):
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[key], sb[key]) for key in sa)
    sa, sb = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    assert all(torch.equal(sa[i]["momentum_buffer"], sb[i]["momentum_buffer"]) for i in sa)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_a_stop_signal_saves_the_current_iteration_and_resumes_bitwise(tmp_path, signum):
    """The signal comes while batch 2 loads (iteration 3 under way, the last periodic
    checkpoint and evaluation at 2): iteration 3 finishes, last.pth holds it with the hooks'
    states, and the resumed run ends as the uninterrupted one (best.pth and hook states too)."""
    full = _trainer(tmp_path / "full", eval_period=2, evaluator=ToyEvaluator([30.0, 70.0, 40.0]))
    full.train()
    before = signal.getsignal(signum)
    stopped = _trainer(tmp_path / "resumed", signal_at=(2, signum), eval_period=2,
                       evaluator=ToyEvaluator([30.0]))
    with pytest.raises(Preempted) as e:
        stopped.train()
    assert str(e.value) == (f"{signal.Signals(signum).name}: stopped after iteration 3 of 6, "
                            f"{tmp_path / 'resumed' / 'last.pth'} holds it; continue the run "
                            "with --resume (exit status 75)")
    assert e.value.exit_status == 75
    assert signal.getsignal(signum) is before  # the handler is the caller's again
    ckpt = load_checkpoint(tmp_path / "resumed" / "last.pth")
    assert ckpt["iteration"] == 3 and ckpt["hooks"]["best"]["value"] == 30.0
    resumed = _trainer(tmp_path / "resumed", start_ckpt=ckpt, init_seed=99, eval_period=2,
                       evaluator=ToyEvaluator([70.0, 40.0]))
    resumed.train()
    _same_training(full, resumed)
    for name in ("last.pth", "best.pth"):
        a, b = (load_checkpoint(tmp_path / run / name) for run in ("full", "resumed"))
        assert a["iteration"] == b["iteration"] and a["hooks"] == b["hooks"], name
    lines = [json.loads(x) for x in (tmp_path / "resumed" / "metrics.jsonl").read_text().split(
        "\n") if x]
    assert [r["iteration"] for r in lines if r["type"] == "train"] == [1, 2, 3, 4, 5, 6]


def test_a_stop_signal_writes_last_pth_without_a_checkpoint_hook(tmp_path):
    trainer = _trainer(tmp_path, signal_at=(1, signal.SIGTERM), hooks=[MetricsLogger(1)])
    with pytest.raises(Preempted, match="stopped after iteration 2 of 6"):
        trainer.train()
    assert load_checkpoint(tmp_path / "last.pth")["iteration"] == 2


def test_a_stop_signal_in_the_last_step_lets_the_run_finish(tmp_path):
    trainer = _trainer(tmp_path, signal_at=(5, signal.SIGTERM))  # batch 5: the 6th, last step
    trainer.train()
    assert load_checkpoint(tmp_path / "last.pth")["iteration"] == 6


@pytest.mark.parametrize("file", ["metrics.jsonl", "best.pth"])
def test_a_full_disk_anywhere_in_a_run_says_which_checkpoint_is_kept(tmp_path, monkeypatch,
                                                                     file):
    """metrics.jsonl at iteration 3, or best.pth at the evaluation of iteration 3: last.pth
    was written at 2 (every 2 iterations)."""
    trainer = _trainer(tmp_path, eval_period=3, evaluator=ToyEvaluator())
    if file == "metrics.jsonl":
        write = trainer.writer.write

        def full_at_3(record):
            if record["iteration"] == 3:
                raise disk_full_error(tmp_path / file, needed=120)
            write(record)

        monkeypatch.setattr(trainer.writer, "write", full_at_3)
    else:
        def full(state, name):
            if name == "best.pth":
                raise disk_full_error(tmp_path / file, needed=120)
            save(state, name)

        save = trainer._write
        monkeypatch.setattr(trainer, "_write", full)
    with pytest.raises(DiskFullError) as e:
        trainer.train()
    message = str(e.value)
    assert message.startswith(f"cannot write {tmp_path / file}: no space left on "
                              "device (it needs 120 bytes; ")
    assert message.endswith(f"; {tmp_path / 'last.pth'} (iteration 2) is kept: free some space, "
                            "then continue the run with --resume")
