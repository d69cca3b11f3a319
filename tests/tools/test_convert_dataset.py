"""tools/convert_dataset.py: the three conversions end to end, inputs untouched, one-line errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tool_loader import load_tool

convert = load_tool("convert_dataset")


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_voc_to_coco_to_yolo_to_coco(tmp_path, write_voc, capsys):
    root = write_voc(tmp_path / "VOCdevkit" / "VOC2007", "trainval", {
        "000005": (100, 80, [{"name": "chair", "bbox": (10, 20, 30, 40), "difficult": 0}]),
        "000007": (60, 90, [{"name": "car", "bbox": (5, 5, 50, 80), "difficult": 1}])})
    before = _digest(tmp_path / "VOCdevkit")
    out = tmp_path / "out"
    assert convert.main(["voc2coco", "--root", str(root), "--split", "trainval",
                         "--out", str(out / "voc.json")]) == 0
    assert capsys.readouterr().out.strip() == (
        f"wrote {out / 'voc.json'}: 2 images, 2 boxes, 20 classes; image folder: "
        f"{root / 'JPEGImages'}")
    coco = json.loads((out / "voc.json").read_text())
    assert coco["annotations"][0]["bbox"] == [9, 19, 21, 21]
    assert coco["annotations"][1]["iscrowd"] == 1  # difficult

    assert convert.main(["coco2yolo", "--annotations", str(out / "voc.json"),
                         "--labels", str(out / "labels"), "--names", str(out / "names.txt")]) == 0
    assert "wrote 2 label files" in capsys.readouterr().out
    # chair = class 9 - 1; [9, 19, 30, 40] in 100x80: centre (19.5, 29.5), size (21, 21)
    assert (out / "labels" / "000005.txt").read_text() == (
        "8 0.195000 0.368750 0.210000 0.262500\n")
    assert (out / "labels" / "000007.txt").read_text() == ""  # the difficult car: crowd

    assert convert.main(["yolo2coco", "--images", str(root / "JPEGImages"), "--labels",
                         str(out / "labels"), "--names", str(out / "names.txt"),
                         "--out", str(out / "back.json")]) == 0
    back = json.loads((out / "back.json").read_text())
    assert back["categories"] == coco["categories"]
    assert [round(v, 6) for v in back["annotations"][0]["bbox"]] == [9, 19, 21, 21]
    assert _digest(tmp_path / "VOCdevkit") == before  # the inputs, byte for byte


def test_errors_are_one_line_and_name_the_file(tmp_path, write_voc, capsys):
    root = write_voc(tmp_path / "VOC", "train", {
        "a": (50, 40, [{"name": "unicorn", "bbox": (1, 1, 5, 5), "difficult": 0}])}, jpeg=False)
    assert convert.main(["voc2coco", "--root", str(root), "--split", "train",
                         "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert f"{root / 'Annotations' / 'a.xml'}: object #1: unknown class 'unicorn'" in err
    assert not (tmp_path / "x.json").exists()

    (tmp_path / "names.txt").write_text("unicorn\n")
    assert convert.main(["voc2coco", "--root", str(root), "--split", "train", "--classes",
                         str(tmp_path / "names.txt"), "--out", str(tmp_path / "names.txt")]) == 2
    assert "names.txt already exists" in capsys.readouterr().err
    assert (tmp_path / "names.txt").read_text() == "unicorn\n"

    (tmp_path / "bad.json").write_text('{"images": [}')
    assert convert.main(["coco2yolo", "--annotations", str(tmp_path / "bad.json"), "--labels",
                         str(tmp_path / "l"), "--names", str(tmp_path / "n.txt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'bad.json'}: invalid JSON at line 1")
