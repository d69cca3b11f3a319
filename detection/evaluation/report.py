"""One self-contained HTML page comparing runs (works offline: inline CSS, JS, SVG, JPEG).

Built only from what each run saved (``eval.json``, ``metrics.jsonl``, ``coco_results.json`` and
the test annotations and images its config names; see ``analysis.read_run``):

- the summary metrics side by side, as Table 8 of He et al. (2016) (a static HTML table);
- per-category AP bars, loss / lr / time / mAP curves over iterations, precision-recall curves
  per category at IoU .5 and .75, the COCO error breakdown and a confusion matrix per run (SVG
  drawn by the page's script from the embedded JSON);
- the worst false positives and missed objects (JPEG grids) and a grid of test images with the
  ground truth and each run's detections side by side (score threshold on a slider).

A Mask R-CNN's run (its ``eval.json`` has ``segm_*`` numbers, its results RLE
``segmentation``) adds mask AP rows to the table, a mask AP per category chart, and draws the
masks in the image grid, filled and translucent (outlines traced from the RLE, ``_outlines``).
"""
from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..engine.files import write_text
from .analysis import ERROR_TYPES, analyze_run, draw_crops, read_run

__all__ = ["build_report", "write_report", "PALETTE"]

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b")
SUMMARY = (("mAP@.5", "mAP50"), ("mAP@[.5, .95]", "mAP"), ("mAP@.75", "mAP75"),
           ("AP small", "mAP_s"), ("AP medium", "mAP_m"), ("AP large", "mAP_l"),
           ("AR@100", "AR100"))
MASK_SUMMARY = tuple((f"mask {label}", f"segm_{key}") for label, key in SUMMARY)
_TEMPLATE = Path(__file__).with_name("report_template.html")


def _clean(value: Any) -> Any:
    """JSON for ``JSON.parse``: NaN / inf (floats or eval.json's strings) become null."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, str) and value.lower() in ("nan", "inf", "-inf"):
        return None
    return value


def _jpeg(rgb: np.ndarray, quality: int = 85) -> str:
    import cv2

    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def _names(runs: Sequence[dict]) -> list[str]:
    """The backbone, with the folder name where two runs share one."""
    base = [str(r["eval"].get("backbone") or r["name"]) for r in runs]
    return [f"{b} ({r['name']})" if base.count(b) > 1 else b for b, r in zip(base, runs)]


def _series(records: list[dict], kind: str, max_points: int = 400) -> dict[str, list]:
    """Numbers of ``kind`` records by key over iterations, at most ``max_points`` (evenly)."""
    rows = [r for r in records if r.get("type") == kind]
    if len(rows) > max_points:
        rows = [rows[i] for i in np.linspace(0, len(rows) - 1, max_points).round().astype(int)]
    keys = [k for k in (rows[0] if rows else {}) if k not in ("type", "iteration", "eta_s")
            and isinstance(rows[0][k], (int, float))]
    out = {"iteration": [r["iteration"] for r in rows]}
    out.update({k: [r.get(k) for r in rows] for k in keys})
    return out


def _outlines(segmentation: Any, scale: float, height: int, width: int) -> list[list[float]]:
    """A COCO segmentation (polygons or RLE) as outline polygons ``[[x0, y0, x1, y1, ...]]``
    in the shown image's pixels (``scale`` of the original), simplified to half a pixel."""
    import cv2
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    else:
        counts = segmentation["counts"]
        rle = {**segmentation, "counts": counts.encode() if isinstance(counts, str) else counts}
        if not isinstance(counts, (str, bytes)):  # uncompressed
            rle = mask_utils.frPyObjects(segmentation, height, width)
    bitmap = mask_utils.decode(rle)
    contours, _ = cv2.findContours(bitmap, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = []
    for c in contours:
        c = cv2.approxPolyDP(c, 0.5 / max(scale, 1e-6), True).reshape(-1, 2) * scale
        if len(c) >= 3:
            out.append([round(float(v), 1) for v in c.reshape(-1)])
    return out


def _images(run: dict, num_images: int, max_side: int, masks: bool = False
            ) -> tuple[list[dict], dict[int, float]]:
    """The first ``num_images`` test images (by id) with objects, shrunk to ``max_side``;
    ``masks``: each object with its mask's outlines."""
    import cv2

    from detection.data.coco import decode_image

    gt = run["ground_truth"]
    if num_images <= 0 or not Path(run["images"] or "/nonexistent").is_dir():
        return [], {}
    k_of = {c["id"]: k for k, c in enumerate(sorted(gt["categories"], key=lambda c: c["id"]))}
    objects: dict[int, list] = {}
    for a in gt["annotations"]:
        objects.setdefault(a["image_id"], []).append(a)
    out, scales = [], {}
    for im in sorted(gt["images"], key=lambda im: im["id"]):
        if im["id"] not in objects:
            continue
        image = decode_image(str(Path(run["images"]) / im["file_name"]))
        s = min(1.0, max_side / max(image.shape[:2]))
        image = cv2.resize(image, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        scales[im["id"]] = s
        gt_boxes = [[*(round(v * s, 1) for v in a["bbox"]), k_of[a["category_id"]]]
                    for a in objects[im["id"]] if not a.get("iscrowd", 0)]
        if masks:
            for row, a in zip(gt_boxes, (a for a in objects[im["id"]] if not a.get("iscrowd"))):
                row.append(_outlines(a["segmentation"], s, im["height"], im["width"]))
        out.append({"id": im["id"], "file_name": im["file_name"], "src": _jpeg(image),
                    "width": image.shape[1], "height": image.shape[0], "gt": gt_boxes})
        if len(out) == num_images:
            break
    return out, scales


def _detections(run: dict, scales: dict[int, float], categories: list[str]) -> dict:
    """Per shown image, up to 50 detections scoring >= 0.05: ``[x, y, w, h, score, k]`` (and
    the outlines of its mask, for results with a ``segmentation``)."""
    k_of = {c["id"]: categories.index(c["name"]) for c in run["ground_truth"]["categories"]
            if c["name"] in categories}
    out: dict[int, list] = {i: [] for i in scales}
    for r in sorted(run["results"], key=lambda r: -r["score"]):
        i = r["image_id"]
        if i in out and r["score"] >= 0.05 and len(out[i]) < 50 and r["category_id"] in k_of:
            out[i].append([*(round(v * scales[i], 1) for v in r["bbox"]), round(r["score"], 3),
                           k_of[r["category_id"]]])
            if "segmentation" in r:
                h, w = r["segmentation"]["size"]
                out[i][-1].append(_outlines(r["segmentation"], scales[i], h, w))
    return out


def _table(runs: Sequence[dict], names: list[str]) -> str:
    def cell(v: Any) -> str:
        v = _clean(v)
        return "n/a" if v is None else f"{float(v):.1f}"

    head = "".join(f'<th><span class="swatch" style="background:{PALETTE[i % len(PALETTE)]}">'
                   f"</span>{html.escape(n)}</th>" for i, n in enumerate(names))
    masks = any("segm_mAP" in r["eval"] for r in runs)
    rows = [f"<tr><td>{label}</td>" + "".join(f"<td>{cell(r['eval'].get(key))}</td>"
                                              for r in runs) + "</tr>"
            for label, key in SUMMARY + (MASK_SUMMARY if masks else ())]
    rows.append("<tr><td>iteration</td>" + "".join(
        f"<td>{html.escape(str(r['eval'].get('iteration', '-')))}</td>" for r in runs) + "</tr>")
    return f"<table><tr><th>metric</th>{head}</tr>{''.join(rows)}</table>"


def _crops(runs: Sequence[dict], analyses: Sequence[dict], names: list[str]) -> str:
    parts = []
    for run, analysis, name in zip(runs, analyses, names):
        parts.append(f"<h3>{html.escape(name)}</h3>")
        kinds = analysis["false_positive_kinds"]
        for title, items in ((f"worst false positives (all: {sum(kinds.values())})",
                              analysis["worst_false_positives"]),
                             (f"missed objects, largest first (all: {analysis['num_missed']})",
                              analysis["missed"])):
            grid = draw_crops(items, run) if Path(run["images"] or "/none").is_dir() else None
            body = f'<img alt="{title}" src="{_jpeg(grid)}">' if grid is not None else \
                '<p class="note">none (or the test images were not found)</p>'
            parts.append(f'<div class="crops"><p>{title}: green = ground truth, red = '
                         f"detection</p>{body}</div>")
    return "".join(parts)


def build_report(runs: Sequence[dict], *, analyses: Optional[Sequence[dict]] = None,
                 backend: str = "faster", title: str = "Detection report", num_images: int = 6,
                 score_thresh: float = 0.5, max_side: int = 320) -> str:
    """The HTML text for ``runs`` (:func:`~detection.evaluation.analysis.read_run` results);
    ``analyses`` (from ``analyze_run``) are computed when not given. The image grid shows the
    first run's test images; a run evaluated on other annotations is marked and not drawn."""
    analyses = analyses or [analyze_run(r, backend=backend, score_thresh=score_thresh)
                            for r in runs]
    names = _names(runs)
    same = [Path(r["annotations"]).resolve() == Path(runs[0]["annotations"]).resolve()
            for r in runs]
    names = [n if s else f"{n} [other test set: {r['annotations']}]"
             for n, s, r in zip(names, same, runs)]
    categories = [c["name"] for c in sorted(runs[0]["ground_truth"]["categories"],
                                            key=lambda c: c["id"])]
    masks = any("segm_mAP" in r["eval"] for r in runs)
    shown, scales = _images(runs[0], num_images, max_side, masks=masks)
    data = {"error_types": list(ERROR_TYPES), "recall": analyses[0]["recall"],
            "categories": categories, "images": shown, "runs": []}
    for i, (run, analysis, name, s) in enumerate(zip(runs, analyses, names, same)):
        data["runs"].append({
            "name": name, "color": PALETTE[i % len(PALETTE)],
            "per_category": run["eval"].get("per_category") or {},
            "segm_per_category": run["eval"].get("segm_per_category"),
            "train": _series(run["metrics"], "train"), "evals": _series(run["metrics"], "eval"),
            "analysis": {k: analysis[k] for k in ("ap", "curves", "pr", "confusion",
                                                  "false_positive_kinds")},
            "detections": _detections(run, scales if s else {}, categories)})
    text = _TEMPLATE.read_text(encoding="utf-8")
    payload = json.dumps(_clean(data), allow_nan=False).replace("</", "<\\/")
    for key, value in (("__TITLE__", html.escape(title)), ("__TABLE__", _table(runs, names)),
                       ("__CROPS__", _crops(runs, analyses, names)),
                       ("__SCORE__", f"{score_thresh:g}"), ("__DATA__", payload)):
        text = text.replace(key, value)
    return text


def write_report(run_dirs: Sequence[str | Path], output: str | Path, *,
                 annotations: Optional[str] = None, images: Optional[str] = None,
                 **kwargs: Any) -> Path:
    """Read ``run_dirs`` (``annotations`` / ``images`` override what their configs name), build
    the page (``build_report``'s keywords) and write ``output``."""
    runs = [read_run(d, annotations=annotations, images=images) for d in run_dirs]
    return write_text(output, build_report(runs, **kwargs))
