import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from tool_loader import load_tool


plot_logs = load_tool("plot_logs")


def _write_run(folder: Path, scale: float, partial_last_line: bool = False) -> Path:
    folder.mkdir(parents=True)
    lines = []
    for it in range(0, 200, 10):
        loss = scale * (2.0 - it / 200)
        lines.append({"type": "train", "iteration": it, "lr": 0.02 * min(1, (it + 1) / 50),
                      "loss": loss, "loss_rpn_cls": loss / 4, "loss_rpn_box": loss / 4,
                      "loss_cls": loss / 4, "loss_box": loss / 4, "time": 0.5,
                      "data_time": 0.01, "memory_mb": 100.0, "eta_s": 10.0})
    for it in (100, 199):
        lines.append({"type": "eval", "iteration": it, "mAP": it / 10 * scale,
                      "mAP50": it / 5 * scale, "mAP75": 1.0})
    text = "\n".join(json.dumps(r) for r in lines) + "\n"
    if partial_last_line:
        text += '{"type": "train", "iter'
    (folder / "metrics.jsonl").write_text(text)
    return folder


def test_read_metrics_splits_train_and_eval_and_skips_partial_line(tmp_path, capsys):
    run = _write_run(tmp_path / "r50", 1.0, partial_last_line=True)
    metrics = plot_logs.read_metrics(run)
    assert len(metrics["train"]) == 20 and len(metrics["eval"]) == 2
    assert metrics["eval"][1]["mAP50"] == pytest.approx(39.8)
    assert "metrics.jsonl:23" in capsys.readouterr().err


def test_plot_two_runs_writes_png(tmp_path, capsys):
    a = _write_run(tmp_path / "a", 1.0)
    b = _write_run(tmp_path / "b", 0.5)
    out = tmp_path / "plots" / "curves.png"
    assert plot_logs.main([str(a), str(b), "--output", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = cv2.imread(str(out))
    assert image.shape == (640, 1440, 3)
    # both runs' default colours (matplotlib C0 blue, C1 orange; BGR here) are drawn
    blue = np.all(np.abs(image.astype(int) - [180, 119, 31]) < 8, axis=2).sum()
    orange = np.all(np.abs(image.astype(int) - [14, 127, 255]) < 8, axis=2).sum()
    assert blue > 500 and orange > 500


def test_default_output_in_the_run_folder(tmp_path):
    run = _write_run(tmp_path / "run", 1.0)
    assert plot_logs.main([str(run)]) == 0
    assert (run / "metrics.png").stat().st_size > 1000


def test_missing_run_and_missing_matplotlib(tmp_path, capsys, monkeypatch):
    assert plot_logs.main([str(tmp_path / "nope")]) == 2
    assert "no metrics.jsonl at" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    assert plot_logs.main([str(tmp_path)]) == 2
    assert 'pip install -e ".[plot]"' in capsys.readouterr().err


def test_smooth_is_a_trailing_mean():
    assert plot_logs._smooth([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]


def _write_pretrain_run(folder: Path, final_err: float) -> Path:
    folder.mkdir(parents=True)
    lines = [{"type": "train", "iteration": it, "loss": 1.0, "loss_cls": 1.0,
              "top1_err": 90 - (90 - final_err) * it / 400, "lr": 0.1} for it in range(20, 420, 20)]
    lines += [{"type": "eval", "iteration": it, "top1_err": final_err + 5 + 100 / it,
               "top1": 0.0, "num_images": 50.0} for it in (100, 200, 300, 400)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return folder


def test_error_curves_as_the_papers_figures(tmp_path):
    runs = {name: plot_logs.read_metrics(_write_pretrain_run(tmp_path / name, err))
            for name, err in (("plain-20", 10.0), ("plain-56", 20.0))}
    fig = plot_logs.error_figure(runs, iters_per_epoch=100)
    lines = fig.axes[0].lines
    assert [(line.get_linewidth(), line.get_label()) for line in lines] == [
        (0.8, "_child0"), (2.5, "plain-20"), (0.8, "_child2"), (2.5, "plain-56")]
    assert lines[0].get_color() == lines[1].get_color() != lines[2].get_color()  # one per run
    assert list(lines[3].get_xdata()) == [1.0, 2.0, 3.0, 4.0]  # epochs of 100 iterations
    assert list(lines[3].get_ydata()) == pytest.approx([26.0, 25.5, 25 + 1 / 3, 25.25])
    assert fig.axes[0].get_xlabel() == "epoch"


def test_errors_mode_writes_a_png_and_refuses_detection_logs(tmp_path, capsys):
    run = _write_pretrain_run(tmp_path / "resnet-20", 8.0)
    out = tmp_path / "figure6.png"
    assert plot_logs.main(["--errors", str(run), "--output", str(out)]) == 0
    assert cv2.imread(str(out)).shape == (550, 800, 3)
    detection = _write_run(tmp_path / "det", 1.0)
    assert plot_logs.main(["--errors", str(detection), "--output", str(out)]) == 2
    assert "no top1_err" in capsys.readouterr().err
