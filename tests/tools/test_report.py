"""tools/report.py on two real tiny runs: one offline HTML page, and what Chromium renders of it."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from tool_loader import load_tool

CHROMIUM = "/usr/bin/chromium"
WINDOW = (1280, 2600)
JS_OK = (0, 128, 96)  # the badge the page's script colours once every chart is drawn
RUN_COLORS = ((31, 119, 180), (214, 39, 40))  # PALETTE[0], PALETTE[1]: the runs' lines


def _data(page: str) -> dict:
    match = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page,
                      re.S)
    return json.loads(match.group(1))


def _records(run: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if r["type"] == kind]


@pytest.fixture(scope="module")
def report(tiny_runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.html"
    assert load_tool("report").main([*map(str, tiny_runs), "--output", str(out),
                                     "--score-thr", "0.0", "--num-images", "4"]) == 0
    return out


def test_report_is_one_offline_file_with_every_runs_numbers(report, tiny_runs):
    page = report.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|url\(|@import|<link""", page)
    data = _data(page)
    assert [r["name"] for r in data["runs"]] == ["resnet18 (r18_a)", "resnet18 (r18_b)"]
    for run, shown in zip(tiny_runs, data["runs"]):
        evaluation = json.loads((run / "eval.json").read_text())
        assert shown["per_category"] == pytest.approx(evaluation["per_category"])
        train = _records(run, "train")
        assert shown["train"]["iteration"] == [r["iteration"] for r in train]
        for key in ("loss", "loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box", "lr"):
            assert shown["train"][key] == [r[key] for r in train], key
        assert shown["evals"]["mAP"] == [r["mAP"] for r in _records(run, "eval")]
        if "val_loss" in shown["evals"]:  # run a: test.val_loss
            assert shown["evals"]["val_loss_cls"] == [r["val_loss_cls"]
                                                      for r in _records(run, "eval")]
        assert f"<td>{evaluation['mAP50']:.1f}</td>" in page  # the Table 8 rows
        assert shown["analysis"]["ap"]["all"]["C50"] * 100 == pytest.approx(evaluation["mAP50"])
    assert "val_loss" in data["runs"][0]["evals"] and "val_loss" not in data["runs"][1]["evals"]
    assert data["runs"][0]["evals"]["iteration"] == [2, 4]
    assert data["runs"][1]["evals"]["iteration"] == [2]
    assert len(data["images"]) == 4 and all(im["src"].startswith("data:image/jpeg;base64,")
                                            for im in data["images"])
    assert all(len(data["runs"][0]["detections"][str(im["id"])]) > 0 for im in data["images"])


def _render(page: Path, folder: Path) -> tuple[np.ndarray, str]:
    """Chromium's screenshot (RGB) and the DOM after the page's scripts ran."""
    png = folder / f"{page.stem}.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={folder / 'profile'}", f"--screenshot={png}",
           f"--window-size={WINDOW[0]},{WINDOW[1]}", "--dump-dom"]
    proc = subprocess.run([*cmd, page.as_uri()], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and png.is_file(), proc.stderr[-2000:]
    return cv2.imread(str(png))[:, :, ::-1].copy(), proc.stdout


def _pixels(image: np.ndarray, rgb: tuple[int, int, int]) -> int:
    return int(np.all(image == np.array(rgb, dtype=np.uint8), axis=2).sum())


@pytest.mark.skipif(not Path(CHROMIUM).exists(),
                    reason=f"{CHROMIUM} not installed (Debian: apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(report, tmp_path):
    image, dom = _render(report, tmp_path)
    data = _data(report.read_text())
    assert image.shape == (WINDOW[1], WINDOW[0], 3)
    assert (image < 245).any(axis=2).mean() > 0.05  # not a blank page
    packed = image.astype(np.int32) @ np.array([1 << 16, 1 << 8, 1], dtype=np.int32)
    assert len(np.unique(packed)) > 500  # distinct colours: photos, lines, text
    # the script ran to its end: it counts what it drew and colours the status badge
    train_keys = {k for r in data["runs"] for k in r["train"] if k != "iteration"}
    charts = 1 + len(train_keys) + 2 + 2 + len(data["runs"])  # AP bars, training, PR, breakdown
    assert f'data-charts="{charts}"' in dom and f">{charts} charts drawn<" in dom
    # run a's validation losses, dashed over its training losses (loss and each term)
    val_keys = [k for k in data["runs"][0]["evals"] if k.startswith("val_loss")]
    assert len(val_keys) == 5 and dom.count('stroke-dasharray="5,3"') == len(val_keys)
    assert "loss_cls (dashed: val_loss_cls)" in dom
    assert _pixels(image, JS_OK) > 1500  # the badge, visible in the screenshot
    ground_truth = sum(len(im["gt"]) for im in data["images"])
    detections = sum(len(v) for r in data["runs"] for v in r["detections"].values())
    assert dom.count('class="box"') == ground_truth + detections  # threshold 0: every box
    # the same page with its script made inert shows none of it: the checks above can fail
    inert = tmp_path / "inert.html"
    inert.write_text(report.read_text().replace('<script>\n"use strict";',
                                                '<script type="text/plain">\n"use strict";'))
    still, dom = _render(inert, tmp_path)
    assert _pixels(still, JS_OK) == 0 and 'data-charts="' not in dom
    assert "charts need JavaScript" in dom
    for color in RUN_COLORS:  # each run's curves were drawn (beyond the table's swatches)
        assert _pixels(image, color) - _pixels(still, color) > 300, color
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)


def test_report_of_a_mask_run_shows_mask_ap_and_masks(tiny_mask_run, tmp_path):
    """Mask AP rows and per-category values from eval.json, and each shown detection's mask as
    outline polygons inside its box (ground truth: the objects' polygons)."""
    out = tmp_path / "report.html"
    assert load_tool("report").main([str(tiny_mask_run), "--output", str(out),
                                     "--score-thr", "0.0", "--num-images", "2"]) == 0
    page = out.read_text()
    evaluation = json.loads((tiny_mask_run / "eval.json").read_text())
    assert "<td>mask mAP@.5</td>" in page and f"<td>{evaluation['segm_mAP50']:.1f}</td>" in page
    data = _data(page)
    (shown,) = data["runs"]
    assert shown["segm_per_category"] == pytest.approx(evaluation["segm_per_category"],
                                                       nan_ok=True)
    outlines = 0
    for image in data["images"]:
        assert all(len(row) == 6 and row[5] for row in image["gt"])  # every object outlined
        for x, y, w, h, score, k, *polygons in shown["detections"][str(image["id"])]:
            for polygon in polygons[0] if polygons else []:
                xs, ys = np.array(polygon[0::2]), np.array(polygon[1::2])
                assert xs.min() >= x - 2 and xs.max() <= x + w + 2  # the mask in its box
                assert ys.min() >= y - 2 and ys.max() <= y + h + 2
                outlines += 1
    assert outlines > 0


@pytest.mark.skipif(not Path(CHROMIUM).exists(),
                    reason=f"{CHROMIUM} not installed (Debian: apt-get install -y chromium)")
def test_mask_report_draws_every_mask_outline_in_headless_chromium(tiny_mask_run, tmp_path):
    """The page's script draws each shown object's and detection's mask as a polygon and the
    mask AP per category chart beside the box one."""
    out = tmp_path / "mask.html"
    assert load_tool("report").main([str(tiny_mask_run), "--output", str(out),
                                     "--score-thr", "0.0", "--num-images", "2"]) == 0
    _, dom = _render(out, tmp_path)
    data = _data(out.read_text())
    outlines = sum(len(row[5]) for im in data["images"] for row in im["gt"])
    outlines += sum(len(row[6]) for v in data["runs"][0]["detections"].values() for row in v
                    if len(row) > 6)
    assert outlines > 0 and dom.count('class="mask"') == outlines
    # one chart more than a box run's: the mask AP bars, titled like the box AP bars
    assert dom.count(">mask AP per category (%)<") == dom.count(">AP per category (%)<") == 1
    train_keys = {k for k in data["runs"][0]["train"] if k != "iteration"}
    charts = 2 + len(train_keys) + 2 + 2 + 1
    assert f'data-charts="{charts}"' in dom
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)
