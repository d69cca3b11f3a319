"""The exported file: names, dynamic axes, standard operators and the metadata it carries."""
import json

import pytest

from detection.config import config_to_dict
from detection.export.exporter import export_onnx, read_metadata

onnx = pytest.importorskip("onnx", reason="ONNX export needs the export extra (onnx, "
                                          'onnxruntime): pip install -e ".[export]"')


def test_inputs_outputs_operators_and_metadata(exported):
    ex = exported("fpn")
    proto = onnx.load(str(ex.onnx))
    graph = proto.graph
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in list(graph.input) + list(graph.output)}
    assert dims == {"images": ["N", 3, "H", "W"], "image_sizes": ["N", 2],
                    "boxes": ["D", 4], "scores": ["D"], "labels": ["D"], "batch_index": ["D"]}
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert graph.input[1].type.tensor_type.elem_type == onnx.TensorProto.INT64
    ops = {n.op_type for n in graph.node}
    assert {"NonMaxSuppression", "RoiAlign", "TopK", "NonZero"} <= ops
    assert not any(n.domain not in ("", "ai.onnx") for n in graph.node)  # no custom ops
    assert proto.opset_import[0].version == 17

    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["classes"]) == ex.classes
    parsed = read_metadata(meta, "model.onnx")
    assert parsed["classes"] == ex.classes
    assert (parsed["min_size"], parsed["max_size"], parsed["size_divisibility"]) == (128, 160, 32)
    assert parsed["score_thresh"] == 0.05
    assert config_to_dict(parsed["config"]) == config_to_dict(ex.cfg)


def test_vgg_file_pools_with_max_roi_pool(exported):
    ops = {n.op_type for n in onnx.load(str(exported("vgg").onnx)).graph.node}
    assert "MaxRoiPool" in ops and "RoiAlign" not in ops


def test_bad_metadata_and_arguments_are_clear_errors(exported, tmp_path):
    with pytest.raises(ValueError, match=r"x.onnx lacks the metadata \['classes', 'config'\]"):
        read_metadata({"min_size": "1", "max_size": "2", "size_divisibility": "32",
                       "score_thresh": "0.1"}, "x.onnx")
    ex = exported("fpn")
    with pytest.raises(ValueError, match="opset 15 is too old"):
        export_onnx(ex.model, tmp_path / "a.onnx", cfg=ex.cfg, classes=ex.classes, opset=15)
    with pytest.raises(ValueError, match="2 classes given for a model with 10"):
        export_onnx(ex.model, tmp_path / "a.onnx", cfg=ex.cfg, classes=ex.classes[:2])
    assert not list(tmp_path.iterdir())  # nothing written
