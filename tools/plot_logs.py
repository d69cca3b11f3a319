#!/usr/bin/env python
"""Plot the loss terms, learning rate and mAP of one or several runs into one PNG.

    python tools/plot_logs.py output/r50_fpn [output/r101_fpn ...] [--output curves.png]

Reads each run's ``metrics.jsonl`` (train lines: losses and ``lr``; eval lines: ``mAP``,
``mAP50``). One colour per run; losses are drawn raw (thin) and as a moving average (thick).
Needs matplotlib: ``pip install -e ".[plot]"``.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from detection.cli import ArgumentParser, UserError, tool_main  # noqa: E402
from detection.engine.logging import read_metrics  # noqa: E402

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


def _unique_names(paths: list[str]) -> list[str]:
    names = [Path(p).name if Path(p).is_dir() else Path(p).parent.name for p in paths]
    return [n if names.count(n) == 1 else p for n, p in zip(names, paths)]


@tool_main
def main(argv: Optional[list[str]] = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run output folders (or metrics.jsonl files)")
    parser.add_argument("--output", help="PNG to write (default: RUN/metrics.png for one run, "
                                         "./metrics.png for several)")
    parser.add_argument("--smooth", type=int, default=20, help="moving-average window of losses")
    args = parser.parse_args(argv)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UserError('plot_logs.py needs matplotlib: pip install -e ".[plot]"') from None
    runs = {n: read_metrics(p) for n, p in zip(_unique_names(args.runs), args.runs)}
    first = Path(args.runs[0])
    default = (first if first.is_dir() else first.parent) / "metrics.png"
    output = args.output or (default if len(args.runs) == 1 else "metrics.png")
    print(f"wrote {plot_runs(runs, output, smooth=max(1, args.smooth))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
