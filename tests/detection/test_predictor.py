import cv2
import numpy as np
import pytest
import torch

from detection import Predictor
from detection.build import build_model
from detection.config import config_to_dict, dump_config, load_config
from detection.engine.checkpoint import save_checkpoint
from detection.export.runtime import compare_detections

CLASSES = [{"id": 1, "name": "circle"}, {"id": 3, "name": "square"},
           {"id": 7, "name": "triangle"}, {"id": 12, "name": "star"}, {"id": 20, "name": "cross"}]
TINY = ["model.backbone.name=resnet18", "model.backbone.weights=null", "model.num_classes=5",
        "model.fpn.out_channels=32", "model.roi_heads.fc_dim=64",
        "model.rpn.pre_nms_topk_test=200", "model.rpn.post_nms_topk_test=50",
        "model.roi_heads.score_thresh=0.0", "model.roi_heads.detections_per_img=30",
        "data.input.min_size_test=64", "data.input.max_size_test=100"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("predictor")
    cfg = load_config(None, TINY)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():  # spread the class logits so the labels vary between detections
        model.roi_heads.box_predictor.cls_score.weight.normal_(0, 0.5)
    config_path = folder / "tiny.yaml"
    config_path.write_text(dump_config(cfg))
    weights = folder / "tiny.pth"
    save_checkpoint({"model": model.state_dict(), "config": config_to_dict(cfg),
                     "classes": CLASSES, "iteration": 7}, weights)
    return {"model": model, "config": config_path, "weights": weights, "cfg": cfg}


def _image(seed, h=96, w=150):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_matches_raw_model_with_ids_and_original_pixels(tiny):
    predictor = Predictor(tiny["config"], weights=tiny["weights"], amp="off")  # float32
    image = _image(0)
    result = predictor(image)
    # the test-time resize: 96x150 -> shorter side 64, longer side 100 (cap wins: scale 2/3)
    resized = cv2.resize(image, (100, 64), interpolation=cv2.INTER_LINEAR)
    with torch.inference_mode():
        raw = tiny["model"]([torch.from_numpy(resized).permute(2, 0, 1)])[0]
    assert len(raw["boxes"]) > 0
    scale = np.array([150 / 100, 96 / 64, 150 / 100, 96 / 64], dtype=np.float32)
    np.testing.assert_allclose(result["boxes"], raw["boxes"].numpy() * scale, rtol=1e-5,
                               atol=1e-4)
    np.testing.assert_array_equal(result["scores"], raw["scores"].numpy())
    ids = np.array([c["id"] for c in CLASSES])
    np.testing.assert_array_equal(result["labels"], ids[raw["labels"].numpy() - 1])
    assert len(set(result["labels"].tolist())) > 1  # several classes: the map is exercised
    names = {c["id"]: c["name"] for c in CLASSES}
    assert result["class_names"] == [names[i] for i in result["labels"].tolist()]
    assert result["boxes"].dtype == np.float32 and result["scores"].dtype == np.float32
    assert result["labels"].dtype == np.int64
    assert result["boxes"][:, [0, 2]].max() <= 150 and result["boxes"][:, [1, 3]].max() <= 96
    assert predictor.category_names == names


def test_list_input_is_batched_and_equal_to_single_calls(tiny):
    predictor = Predictor(tiny["config"], weights=tiny["weights"], batch_size=2, amp="off")
    images = [_image(1), _image(2), _image(3, 80, 60)]
    batched = predictor(images)
    assert isinstance(batched, list) and len(batched) == 3
    for image, out in zip(images[:2], batched[:2]):  # same size: same padding, same numbers
        single = predictor(image)
        np.testing.assert_allclose(out["boxes"], single["boxes"], atol=1e-3)
        np.testing.assert_array_equal(out["labels"], single["labels"])
    assert batched[2]["boxes"][:, [1, 3]].max() <= 80 and batched[2]["boxes"][:, [0, 2]].max() <= 60


def test_config_from_checkpoint_and_score_threshold(tiny):
    predictor = Predictor(None, weights=tiny["weights"], score_thresh=0.3)
    result = predictor(_image(0))
    assert predictor.cfg.model.roi_heads.score_thresh == 0.3
    assert (result["scores"] >= 0.3).all()
    everything = Predictor(tiny["config"], weights=tiny["weights"])(_image(0))
    assert len(result["scores"]) == int((everything["scores"] >= 0.3).sum())


def test_missing_weights_and_class_count_mismatch(tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        Predictor(tiny["config"], weights=tmp_path / "nope.pth")
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(dump_config(load_config(None, [*TINY, "model.num_classes=4"])))
    with pytest.raises(ValueError, match="num_classes is 4 .* 5 classes"):
        Predictor(wrong, weights=tiny["weights"])


@pytest.mark.parametrize("image, error, words", [
    (np.zeros((32, 32), np.uint8), ValueError, "grayscale"),
    (np.zeros((32, 32, 1), np.uint8), ValueError, "grayscale"),
    (np.zeros((32, 32, 4), np.uint8), ValueError, "RGBA"),
    (np.zeros((32, 32, 3), np.float32), TypeError, "uint8"),
    (torch.zeros(3, 32, 32, dtype=torch.uint8), TypeError, "numpy"),
])
def test_bad_images_raise_clear_errors(tiny, image, error, words):
    predictor = Predictor(tiny["config"], weights=tiny["weights"])
    with pytest.raises(error, match=words):
        predictor([_image(0), image])


def test_file_paths_are_read_as_rgb(tiny, tmp_path):
    predictor = Predictor(tiny["config"], weights=tiny["weights"])
    image = _image(4)
    path = tmp_path / "photo.png"
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    from_array = predictor(image)
    for result in (predictor(path), predictor([str(path), image])[0]):
        np.testing.assert_allclose(result["boxes"], from_array["boxes"], atol=1e-3)
        np.testing.assert_array_equal(result["labels"], from_array["labels"])
    with pytest.raises(ValueError, match="image file not found: .*missing.jpg"):
        predictor([image, str(tmp_path / "missing.jpg")])


def test_pil_images_are_converted_to_rgb(tiny):
    from PIL import Image

    predictor = Predictor(tiny["config"], weights=tiny["weights"])
    image = _image(5)
    from_array = predictor(image)
    rgba = Image.fromarray(image).convert("RGBA")  # alpha dropped, as for a file
    np.testing.assert_array_equal(predictor(Image.fromarray(image))["boxes"], from_array["boxes"])
    in_a_batch = predictor([rgba, image])[0]  # padded with the other image: float noise only
    np.testing.assert_allclose(in_a_batch["boxes"], from_array["boxes"], atol=1e-3)
    np.testing.assert_array_equal(in_a_batch["labels"], from_array["labels"])
    gray = predictor(Image.fromarray(image[:, :, 0]))  # "L": replicated to three channels
    expected = predictor(np.repeat(image[:, :, :1], 3, axis=2))
    np.testing.assert_array_equal(gray["scores"], expected["scores"])


def test_onnxruntime_backend_gives_the_same_results(exported, tmp_path, one_thread):
    ex = exported("fpn")
    torch_pred = Predictor(None, weights=ex.weights, amp="off")  # ONNX Runtime: float32
    ort_pred = Predictor(weights=ex.onnx, backend="onnxruntime", threads=1)
    assert ort_pred.classes == torch_pred.classes == ex.classes
    assert ort_pred.category_names == torch_pred.category_names
    images = [_image(5, 300, 200), _image(6, 90, 140), _image(7, 128, 128)]
    expected, got = torch_pred(images), ort_pred(images)
    stats = compare_detections(expected, got)
    assert stats["matched"] >= 0.95 and stats["max_count_diff"] <= 2 and stats["detections"] > 60
    for e, g in zip(expected, got):
        assert set(g) == {"boxes", "scores", "labels", "class_names"}
        assert g["boxes"].dtype == np.float32 and g["labels"].dtype == np.int64
        assert set(g["labels"].tolist()) <= {c["id"] for c in ex.classes}
        assert g["class_names"][:3] == [ort_pred.category_names[i] for i in g["labels"][:3]]
    assert got[0]["boxes"][:, [1, 3]].max() > 128  # in the 300 x 200 image's own pixels
    raised = Predictor(weights=ex.onnx, backend="onnxruntime", score_thresh=0.5)(images[0])
    assert len(raised["scores"]) and raised["scores"].min() >= 0.5
    with pytest.raises(ValueError, match="carries its own config"):
        Predictor("some.yaml", weights=ex.onnx, backend="onnxruntime")
    with pytest.raises(ValueError, match="an .onnx file runs with backend='onnxruntime'"):
        Predictor(weights=ex.onnx)
    with pytest.raises(ValueError, match="backend must be one of"):
        Predictor(weights=ex.weights, backend="tensorrt")


def test_amp_bf16_matches_float32_and_says_why(exported, one_thread, detection_log):
    """``amp="bf16"`` (what ``auto`` picks on a CPU with native bf16): >= 90 % of the float32
    detections above 0.3 matched (same label, IoU > 0.9, score within 0.05)."""
    from detection.export.runtime import REDUCED_PRECISION_MATCH

    ex = exported("fpn")
    f32 = Predictor(None, weights=ex.weights, amp="off")
    bf16 = Predictor(None, weights=ex.weights, amp="bf16")
    assert f32.precision == "float32 (amp off)"
    assert bf16.precision.startswith("bf16 autocast, channels-last (amp bf16 asked")
    assert any(m.startswith("Predictor (torch): bf16 autocast") for m in detection_log)
    images = [_image(5, 300, 200), _image(6, 90, 140), _image(7, 128, 128)]
    stats = compare_detections(f32(images), bf16(images), **REDUCED_PRECISION_MATCH)
    assert stats["matched"] >= 0.9 and stats["detections"] >= 30, stats
    with pytest.raises(ValueError, match="amp must be one of"):
        Predictor(None, weights=ex.weights, amp="fp16")


def test_masks_come_pasted_into_the_original_image(exported, one_thread):
    """A Mask R-CNN checkpoint: ``masks`` bool (D, H, W) in the original pixels, the model's RoI
    masks pasted with its boxes rescaled to the original size."""
    from detection.masks import paste_masks

    ex = exported("fpn_mask")
    image = _image(3, h=90, w=200)  # resized to 128 x 284 -> 72 x 160 (max size 160)
    predictor = Predictor(weights=ex.weights, amp="off")  # against the float32 model
    result = predictor(image)
    assert result["masks"].dtype == bool and result["masks"].shape == (len(result["boxes"]),
                                                                        90, 200)
    tensor = predictor._prepare(image)
    with torch.no_grad():
        (raw,) = ex.model([tensor], original_sizes=[(90, 200)])
    assert len(raw["boxes"]) == len(result["boxes"]) > 10
    expected = paste_masks(raw["masks"], raw["boxes"], (90, 200)).numpy()
    assert np.array_equal(result["masks"], expected)
    assert 0 < result["masks"].sum(axis=(1, 2)).min()  # every detection has mask pixels
