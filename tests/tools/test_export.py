"""tools/export.py: a checkpoint to an .onnx file that ONNX Runtime runs with its metadata."""
import pytest
import torch

from detection.export.runtime import OnnxDetector, compare_detections
from tool_loader import load_tool

export = load_tool("export")


def test_export_checkpoint_with_a_higher_score_threshold(exported, tmp_path, capsys):
    ex = exported("c4")
    out = tmp_path / "deploy" / "c4.onnx"
    assert export.main(["--weights", str(ex.weights), "--output", str(out),
                        "--score-thresh", "0.2"]) == 0
    line = capsys.readouterr().out
    assert line.startswith(f"wrote {out} (") and "resnet18 c4_res5, 10 classes" in line
    assert "score_thresh 0.2, images resized to 128..160 px" in line
    mine = OnnxDetector(out, threads=1)
    assert mine.exported_score_thresh == 0.2 and mine.classes == ex.classes
    g = torch.Generator().manual_seed(8)
    images = [torch.randint(0, 256, (3, 100, 140), generator=g, dtype=torch.uint8)]
    # the same weights as the session's export at 0.05, raised to 0.2 after the graph: equal
    expected = OnnxDetector(ex.onnx, threads=1, score_thresh=0.2)(images)
    stats = compare_detections(expected, mine(images))
    assert stats == {"matched": 1.0, "max_count_diff": 0, "detections": stats["detections"]}
    assert stats["detections"] > 5


@pytest.mark.parametrize("args, words", [
    (["--weights", "missing.pth"], "error: weights file not found: missing.pth"),
    (["--opset", "13"], "error: opset 13 is too old"),
])
def test_bad_inputs_are_one_line_errors(exported, tmp_path, capsys, args, words):
    base = {"--weights": str(exported("fpn").weights), "--output": str(tmp_path / "m.onnx")}
    base.update(dict(zip(args[::2], args[1::2])))
    assert export.main([x for kv in base.items() for x in kv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(words) and err.count("\n") == 1
    assert not (tmp_path / "m.onnx").exists()


def test_export_openvino_ir_with_the_same_metadata(exported, tmp_path, capsys):
    ov = pytest.importorskip("openvino", reason='the OpenVINO backend needs the openvino '
                                                'extra: pip install -e ".[openvino]"')
    from detection.export.openvino import read_openvino_metadata

    ex = exported("fpn")
    target = tmp_path / "out" / "m.xml"
    assert export.main(["--weights", str(ex.weights), "--format", "openvino",
                        "--output", str(target)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {target} (")
    assert target.with_suffix(".bin").is_file() and target.with_suffix(".onnx").is_file()
    meta = read_openvino_metadata(ov.Core().read_model(str(target)), str(target))
    assert meta["classes"] == ex.classes and meta["config"] == ex.cfg
    assert export.main(["--weights", str(ex.weights), "--int8", "--output", "m.onnx"]) == 2
    assert "--int8 is for --format openvino" in capsys.readouterr().err
    assert export.main(["--weights", str(ex.weights), "--format", "openvino",
                        "--output", str(tmp_path / "m.onnx")]) == 2
    assert "--output must end in .xml" in capsys.readouterr().err


def test_export_a_mask_rcnn_checkpoint(exported, tmp_path, capsys, one_thread):
    """The tool on a Mask R-CNN checkpoint: the file has a plain ``masks`` output (RoI
    resolution), and Predictor on it gives the PyTorch Predictor's pasted masks."""
    import numpy as np

    from detection.export.runtime import mask_iou
    from detection.predictor import Predictor

    ex = exported("fpn_mask")
    out = tmp_path / "mask.onnx"
    assert export.main(["--weights", str(ex.weights), "--output", str(out)]) == 0
    assert "resnet18 fpn_2fc with masks, 10 classes" in capsys.readouterr().out
    onnx = OnnxDetector(out, threads=1)
    assert onnx.output_names == ["boxes", "scores", "labels", "batch_index", "masks"]
    image = np.random.default_rng(5).integers(0, 256, (90, 150, 3), dtype=np.uint8)
    expected = Predictor(weights=ex.weights, amp="off")(image)  # ONNX Runtime: float32
    got = Predictor(weights=out, backend="onnxruntime", threads=1)(image)
    assert got["masks"].shape == expected["masks"].shape == (len(got["boxes"]), 90, 150)
    assert len(got["boxes"]) > 10
    np.testing.assert_allclose(got["boxes"], expected["boxes"], atol=1e-3)
    ious = mask_iou(torch.from_numpy(got["masks"]), torch.from_numpy(expected["masks"]))
    assert float(ious.min()) > 0.99


def test_a_full_disk_is_one_error_line_and_leaves_no_file(exported, tmp_path, capsys,
                                                          small_disk):
    ex = exported("fpn")
    size = ex.onnx.stat().st_size  # the session's export of the same model and metadata
    disk = small_disk(tmp_path / "disk", capacity=size // 2)
    out = disk.folder / "m.onnx"
    assert export.main(["--weights", str(ex.weights), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: cannot write {out}: no space left on "
                                                   "device (it needs ")
    assert f"; {size // 2:,} bytes = " in err and err.endswith(f"are free in {disk.folder})\n")
    assert list(disk.folder.iterdir()) == []
