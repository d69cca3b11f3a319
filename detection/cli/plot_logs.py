"""Plot the loss terms, learning rate and mAP of one or several runs into one PNG.

    resdet plot-logs output/r50_fpn [output/r101_fpn ...] [--output curves.png]
    resdet plot-logs --errors output/pretrain/cifar10_plain20 \\
        output/pretrain/cifar10_plain56 --output figure6.png [--iters-per-epoch 391]

Reads each run's metrics.jsonl (train lines: losses and lr; eval lines: mAP, mAP50). One colour
per run; losses are drawn raw (thin) and as a moving average (thick). --errors draws the
paper's Figures 4 and 6 from `resdet pretrain` runs instead: the top-1 training error (train
lines, thin) and validation / test error (eval lines, bold) of every run in one panel, per
iteration (or per epoch with --iters-per-epoch). Needs matplotlib: pip install -e ".[plot]".
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from ..engine.runlog import read_metrics
from .common import ArgumentParser, UserError, tool_main

TRAIN_KEYS = ("loss", "loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box", "lr")
EVAL_KEYS = ("mAP", "mAP50")


def _smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average over ``window`` points (shorter at the start)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_runs(runs: dict[str, dict[str, list[dict]]], output: str | Path, smooth: int = 20) -> Path:
    """Draw every run's curves into a grid of panels (one per key) and save it as ``output``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [*TRAIN_KEYS, *EVAL_KEYS]
    fig, axes = plt.subplots(2, 4, figsize=(18, 8), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, key in zip(axes.flat, keys):
        kind = "train" if key in TRAIN_KEYS else "eval"
        for i, (name, metrics) in enumerate(runs.items()):
            points = [(r["iteration"], float(r[key])) for r in metrics[kind]
                      if isinstance(r.get(key), (int, float))]
            if not points:
                continue
            x, y = zip(*points)
            color = colors[i % len(colors)]
            if kind == "eval":
                ax.plot(x, y, "o-", color=color, label=name)
            elif key == "lr":
                ax.plot(x, y, color=color, label=name)
            else:
                ax.plot(x, y, color=color, alpha=0.25, linewidth=0.8)
                window = min(smooth, max(1, len(y) // 5))  # a short log keeps its shape
                ax.plot(x, _smooth(list(y), window), color=color, label=name)
        ax.set_title(key + (" (%)" if kind == "eval" else ""))
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize="small")
    fig.tight_layout()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=80)
    plt.close(fig)
    return output


def error_figure(runs: dict[str, dict[str, list[dict]]],
                 iters_per_epoch: Optional[float] = None):
    """Figure 4 / 6 style: per run (one colour), top-1 training error thin and validation error
    bold, in percent, against iterations (or epochs). Returns the matplotlib figure."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    scale = 1.0 / iters_per_epoch if iters_per_epoch else 1.0
    for i, (name, metrics) in enumerate(runs.items()):
        color = colors[i % len(colors)]
        for kind, width, label in (("train", 0.8, None), ("eval", 2.5, name)):
            points = [(r["iteration"] * scale, float(r["top1_err"])) for r in metrics[kind]
                      if isinstance(r.get("top1_err"), (int, float))]
            if points:
                ax.plot(*zip(*points), color=color, linewidth=width, label=label)
    if not ax.lines:
        plt.close(fig)
        raise ValueError("no top1_err in these runs' metrics.jsonl (tools/pretrain.py runs)")
    ax.set_xlabel("epoch" if iters_per_epoch else "iteration")
    ax.set_ylabel("top-1 error (%)")
    ax.set_title("thin: training error, bold: validation error")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_errors(runs: dict[str, dict[str, list[dict]]], output: str | Path,
                iters_per_epoch: Optional[float] = None) -> Path:
    """:func:`error_figure` saved as ``output`` (PNG)."""
    import matplotlib.pyplot as plt

    fig = error_figure(runs, iters_per_epoch)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return output


def _unique_names(paths: list[str]) -> list[str]:
    names = [Path(p).name if Path(p).is_dir() else Path(p).parent.name for p in paths]
    return [n if names.count(n) == 1 else p for n, p in zip(names, paths)]


def build_parser(prog: str | None = None) -> ArgumentParser:
    parser = ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("runs", nargs="+", help="run output folders (or metrics.jsonl files)")
    parser.add_argument("--output", metavar="FILE",
                        help="the PNG file to write (default: RUN/metrics.png for one run, "
                             "metrics.png for several)")
    parser.add_argument("--smooth", type=int, default=20,
                        help="moving-average window of losses (default: 20)")
    parser.add_argument("--errors", action="store_true",
                        help="training (thin) and validation (bold) top-1 error of pretraining "
                             "runs, as the paper's Figures 4 and 6")
    parser.add_argument("--iters-per-epoch", type=float,
                        help="with --errors: plot against epochs of this many iterations")
    return parser


@tool_main
def main(argv: Optional[list[str]] = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UserError('plot-logs needs matplotlib: pip install -e ".[plot]"') from None
    runs = {n: read_metrics(p) for n, p in zip(_unique_names(args.runs), args.runs)}
    first = Path(args.runs[0])
    default = (first if first.is_dir() else first.parent) / "metrics.png"
    output = args.output or (default if len(args.runs) == 1 else "metrics.png")
    if args.errors:
        try:
            print(f"wrote {plot_errors(runs, output, iters_per_epoch=args.iters_per_epoch)}")
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    print(f"wrote {plot_runs(runs, output, smooth=max(1, args.smooth))}")
    return 0

