import dataclasses
import json
import re
import textwrap
from pathlib import Path

import pytest

from detection.config import (Config, ConfigError, config_to_dict, dump_config, load_config,
                              save_config)


def _write(folder, name, text):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_defaults_without_a_file():
    cfg = load_config(None)
    assert cfg == Config()
    assert cfg.solver.max_iter == 90000 and cfg.model.num_classes is None


def test_list_of_bases_merges_in_order_and_the_file_wins(tmp_path):
    _write(tmp_path, "_base_/model.yaml", """
        model:
          backbone: {name: resnet101, freeze_at: 3}
          rpn: {nms_thresh: 0.6}
        solver: {base_lr: 0.5}
    """)
    _write(tmp_path, "_base_/schedule.yaml", """
        solver: {base_lr: 0.02, max_iter: 1000, steps: [600, 800]}
    """)
    leaf = _write(tmp_path, "exp/leaf.yaml", """
        _base_: [../_base_/model.yaml, ../_base_/schedule.yaml]
        model:
          backbone: {freeze_at: 0}
        solver: {steps: [700]}
    """)
    cfg = load_config(leaf)
    assert cfg.model.backbone.name == "resnet101"  # from the first base
    assert cfg.model.backbone.freeze_at == 0  # nested override in the leaf, siblings kept
    assert cfg.model.rpn.nms_thresh == 0.6 and cfg.model.rpn.fg_iou_thresh == 0.7
    assert cfg.solver.base_lr == 0.02  # the later base wins over the earlier one
    assert cfg.solver.max_iter == 1000 and cfg.solver.steps == [700]  # lists are replaced


def test_nested_bases_and_string_base(tmp_path):
    _write(tmp_path, "a.yaml", "seed: 1\noutput_dir: out/a\n")
    _write(tmp_path, "b.yaml", "_base_: a.yaml\nseed: 2\n")
    leaf = _write(tmp_path, "c.yaml", "_base_: b.yaml\n")
    cfg = load_config(leaf)
    assert (cfg.seed, cfg.output_dir) == (2, "out/a")


def test_overrides_parse_yaml_values_and_win(tmp_path):
    leaf = _write(tmp_path, "c.yaml", "solver: {base_lr: 0.02}\n")
    cfg = load_config(leaf, ["solver.base_lr=1e-3", "solver.steps=[5, 9]",
                             "model.backbone.weights=null", "data.train.images=x/y",
                             "solver.clip_grad_norm=1"])
    assert cfg.solver.base_lr == 0.001 and cfg.solver.steps == [5, 9]
    assert cfg.model.backbone.weights is None and cfg.data.train.images == "x/y"
    assert cfg.solver.clip_grad_norm == 1.0 and isinstance(cfg.solver.clip_grad_norm, float)


def test_typo_in_file_names_file_key_and_suggestion(tmp_path):
    base = _write(tmp_path, "base.yaml", "solver:\n  max_itr: 5\n")
    leaf = _write(tmp_path, "leaf.yaml", "_base_: base.yaml\n")
    with pytest.raises(ConfigError) as err:
        load_config(leaf)
    msg = str(err.value)
    assert str(base) in msg and "'solver.max_itr'" in msg and "'solver.max_iter'" in msg
    with pytest.raises(ConfigError, match=r"'model\.backbone\.nmae'.*'model\.backbone\.name'"):
        load_config(_write(tmp_path, "t.yaml", "model:\n  backbone:\n    nmae: resnet18\n"))


def test_override_errors_name_the_override_not_the_file(tmp_path):
    leaf = _write(tmp_path, "leaf.yaml", "seed: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(leaf, ["solver.bse_lr=0.1"])
    msg = str(err.value)
    assert "override 'solver.bse_lr=0.1'" in msg and "'solver.base_lr'" in msg
    assert str(leaf) not in msg
    with pytest.raises(ConfigError, match=r"override 'solver.max_iter=ten'.*type int"):
        load_config(leaf, ["solver.max_iter=ten"])
    with pytest.raises(ConfigError, match=r"'solver.max_iter' is a value, not a section"):
        load_config(leaf, ["solver.max_iter.x=1"])
    with pytest.raises(ConfigError, match=r"override 'solver' must look like key"):
        load_config(leaf, ["solver"])
    with pytest.raises(ConfigError, match=r"one of \['multistep', 'cosine'\]"):
        load_config(leaf, ["solver.lr_schedule=poly"])


def test_wrong_types_and_choices_in_file(tmp_path):
    cases = {
        "solver: {max_iter: 1.5}": "'solver.max_iter' must be of type int",
        "solver: {amp: 'yes'}": "'solver.amp' must be one of",
        "solver: {steps: 5}": "'solver.steps' must be a list",
        "model: {backbone: {norm: BatchNorm}}": "'model.backbone.norm' must be one of",
        "model: resnet50": "'model' must be a mapping",
        "[1, 2]": "must hold a mapping",
    }
    for i, (text, expected) in enumerate(cases.items()):
        path = _write(tmp_path, f"{i}.yaml", text + "\n")
        with pytest.raises(ConfigError, match=expected.replace("(", r"\(")):
            load_config(path)


def test_missing_files_and_cycles_are_named(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    leaf = _write(tmp_path, "leaf.yaml", "_base_: [gone.yaml]\n")
    with pytest.raises(ConfigError) as err:
        load_config(leaf)
    assert str(leaf) in str(err.value) and "_base_ file not found: 'gone.yaml'" in str(err.value)
    _write(tmp_path, "x.yaml", "_base_: y.yaml\n")
    _write(tmp_path, "y.yaml", "_base_: x.yaml\n")
    with pytest.raises(ConfigError, match="_base_ cycle"):
        load_config(tmp_path / "x.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "bad.yaml", "solver: {max_iter: [\n"))


def test_empty_section_and_scientific_floats(tmp_path):
    cfg = load_config(_write(tmp_path, "e.yaml", "solver:\n  # all commented\nmodel:\n"
                                                 "  backbone:\n    weights: null\n"
                                                 "  rpn: {min_box_size: 1e-3}\n"))
    assert cfg.solver == Config().solver and cfg.model.rpn.min_box_size == 0.001


def test_dump_and_save_round_trip(tmp_path):
    cfg = load_config(None, ["solver.base_lr=0.0125", "model.num_classes=3",
                             "model.anchor_generator.sizes=[[16], [32]]"])
    path = tmp_path / "run" / "config.yaml"
    save_config(cfg, path)
    assert load_config(path) == cfg
    assert "base_lr: 0.0125" in dump_config(cfg)
    assert config_to_dict(cfg)["model"]["anchor_generator"]["sizes"] == [[16.0], [32.0]]


# ----------------------------------------------------------------------------- the shipped configs
REPO = Path(__file__).resolve().parents[2]
ALL_CONFIGS = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "configs").rglob("*.yaml")
                     if "configs/pretrain" not in p.as_posix())  # classifiers: their own schema
LEAF_CONFIGS = [p for p in ALL_CONFIGS if "/_base_/" not in p]


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_every_shipped_config_loads_and_builds_its_model(name):
    import torch

    from detection.box_heads import Res5Head, TwoFCHead, VGGFCHead
    from detection.build import build_model

    cfg = load_config(REPO / name, ["model.backbone.weights=null"])
    m = cfg.model
    with torch.device("meta"):  # construction and shape wiring only, no memory, no init time
        model = build_model(cfg, num_classes=m.num_classes or 80)
    head = {"fpn_2fc": TwoFCHead, "c4_res5": Res5Head, "vgg_fc": VGGFCHead}[m.roi_heads.box_head]
    assert isinstance(model.roi_heads.box_head, head)
    assert model.rpn.in_features == m.rpn.in_features
    assert model.roi_heads.in_features == m.roi_heads.in_features
    sizes = m.anchor_generator.sizes  # one list is used at every level
    assert model.rpn.anchor_generator.sizes == (
        sizes * len(m.rpn.in_features) if len(sizes) == 1 else sizes)
    assert model.roi_heads.pooler.output_size == (m.roi_heads.pooler_resolution,) * 2
    assert model.roi_heads.pooler.pooler_type == m.roi_heads.pooler_type
    assert model.roi_heads.box_predictor.num_classes == (m.num_classes or 80)
    body = getattr(model.backbone, "bottom_up", model.backbone)
    assert getattr(body, "depth", 16) == int(m.backbone.name.lstrip("resnetplainvg"))


COCO_DATA = ("datasets/coco/annotations/instances_train2017.json", "datasets/coco/val2017")
D2_ZOO = ("R_50_C4_1x", "R_50_C4_3x", "R_50_FPN_1x", "R_50_FPN_3x", "R_101_C4_3x",
          "R_101_FPN_3x")
SCHEDULES = {"1x": (90000, [60000, 80000]), "3x": (270000, [210000, 250000])}
MASK_ZOO = ("R_50_FPN_1x", "R_50_FPN_3x", "R_50_C4_1x", "R_101_FPN_3x")


def test_every_leaf_config_writes_apart():
    outputs = {}
    for name in LEAF_CONFIGS:
        outputs.setdefault(load_config(REPO / name).output_dir, []).append(name)
    assert all(len(names) == 1 for names in outputs.values()), outputs


def test_coco_configs_are_detectron2_recipes():
    """configs/coco/*_{1x,3x}: Detectron2's hyperparameters with torchvision's ImageNet weights;
    configs/coco/msra/: the same with MSRA's weights (Detectron2's model zoo exactly)."""
    wanted = {f"configs/coco/faster_rcnn_{v}.yaml" for v in (
        *D2_ZOO, "R_101_C4_1x", "R_152_C4_1x", "R_101_FPN_1x", "VGG16_1x")}
    wanted |= {f"configs/coco/msra/faster_rcnn_{v}.yaml" for v in D2_ZOO}
    wanted |= {f"configs/coco/mask_rcnn_{v}.yaml" for v in MASK_ZOO}
    recipes = {p for p in LEAF_CONFIGS if re.fullmatch(r"configs/coco/.*_[13]x\.yaml", p)}
    assert wanted == recipes
    for name in sorted(recipes):
        cfg = load_config(REPO / name)
        s, m = cfg.solver, cfg.model
        assert (s.max_iter, s.steps) == SCHEDULES[name[-7:-5]], name
        assert (s.ims_per_batch, s.base_lr, s.warmup_iters, s.weight_decay) == (
            16, 0.02, 1000, 1e-4), name
        assert (cfg.data.train.annotations, cfg.data.test.images) == COCO_DATA
        assert cfg.data.input.min_size_train == [640, 672, 704, 736, 768, 800]
        if "VGG16" in name:
            continue
        assert (m.roi_heads.pooler_type, m.roi_heads.sampling_ratio) == ("ROIAlignV2", 0), name
        assert m.rpn.smooth_l1_beta == m.roi_heads.smooth_l1_beta == 0.0, name
        assert not m.rpn.ignore_cross_boundary and m.backbone.norm_eps == 1e-5
        if "/msra/" not in name:
            assert (m.backbone.weights, m.backbone.stride_in_1x1, m.input_format) == (
                "imagenet", False, "RGB"), name
            continue
        depth = m.backbone.name.removeprefix("resnet")
        assert (m.backbone.weights, m.backbone.stride_in_1x1, m.input_format) == (
            f"datasets/pretrained/R-{depth}.pth", True, "BGR"), name
        assert (m.pixel_mean, m.pixel_std) == ([103.53, 116.28, 123.675], [1.0, 1.0, 1.0])
        sibling = load_config(REPO / name.replace("msra/", ""))  # all else equal
        backbone = dataclasses.replace(m.backbone, weights="imagenet", stride_in_1x1=False)
        model = dataclasses.replace(m, backbone=backbone, input_format="RGB",
                                    pixel_mean=sibling.model.pixel_mean,
                                    pixel_std=sibling.model.pixel_std)
        assert dataclasses.replace(cfg, model=model, output_dir=sibling.output_dir) == sibling


def test_paper_configs_use_the_papers_values():
    """py-faster-rcnn's values where the code allows (what still differs is in the headers)."""
    for name in ("configs/paper/faster_rcnn_VGG16_table8.yaml",
                 "configs/paper/faster_rcnn_R_101_C4_table8.yaml"):
        cfg = load_config(REPO / name)
        m, s, inp = cfg.model, cfg.solver, cfg.data.input
        rh, rpn = m.roi_heads, m.rpn
        assert (rh.batch_size_per_image, rh.positive_fraction, rh.nms_thresh) == (128, 0.25, 0.3)
        assert (rh.smooth_l1_beta, rh.pooler_type, rh.score_thresh) == (1.0, "ROIPool", 0.05)
        assert rpn.smooth_l1_beta == pytest.approx(1 / 9) and rpn.ignore_cross_boundary
        assert (rpn.post_nms_topk_test, rpn.nms_thresh, rpn.batch_size_per_image) == (300, 0.7,
                                                                                       256)
        assert m.anchor_generator.sizes == [[64.0, 128.0, 256.0, 512.0]]
        assert (inp.min_size_train, inp.max_size_train, inp.min_size_test) == ([600], 1000, 600)
        assert (s.max_iter, s.steps, s.ims_per_batch, s.base_lr) == (90000, [60000, 80000], 16,
                                                                      0.02)
        assert (cfg.data.train.annotations, cfg.data.test.images) == COCO_DATA
    vgg = load_config(REPO / "configs/paper/faster_rcnn_VGG16_table8.yaml")
    assert (vgg.solver.weight_decay, vgg.model.backbone.weights) == (5e-4, "imagenet")
    r101 = load_config(REPO / "configs/paper/faster_rcnn_R_101_C4_table8.yaml")
    assert r101.solver.weight_decay == 1e-4 and r101.model.input_format == "BGR"
    assert (r101.model.backbone.weights, r101.model.backbone.stride_in_1x1) == (
        "datasets/pretrained/R-101.pth", True)


@pytest.mark.parametrize("backbone, weight_decay", [("VGG16", 5e-4), ("R_101_C4", 1e-4)])
def test_table7_configs_share_table8s_training_and_test_values(backbone, weight_decay):
    """Table 7's pair differs from Table 8's in data, anchors and schedule only."""
    seven = load_config(REPO / f"configs/paper/faster_rcnn_{backbone}_table7.yaml")
    eight = load_config(REPO / f"configs/paper/faster_rcnn_{backbone}_table8.yaml")
    for part in ("rpn", "roi_heads"):
        assert getattr(seven.model, part) == getattr(eight.model, part), part
    assert seven.solver.weight_decay == eight.solver.weight_decay == weight_decay
    assert seven.model.anchor_generator.sizes == [[128.0, 256.0, 512.0]]


def test_torchvision_training_config_trains_on_cocos_category_ids(tmp_path):
    """The 26-epoch config builds a trainer on a json with COCO's real category ids (80 of
    1..90); the converted-checkpoint config (91-way) is refused there with a clear message."""
    import cv2
    import numpy as np
    import torch
    import torchvision

    from detection.coco_names import COCO_CATEGORY_NAMES
    from detection.setup import build_trainer

    categories = [{"id": i, "name": n} for i, n in enumerate(COCO_CATEGORY_NAMES)
                  if i and n != "N/A"]
    assert len(categories) == 80 and categories[-1]["id"] == 90
    images, annotations = [], []
    for i, cat in enumerate((1, 13, 90), start=1):  # person, stop sign, toothbrush
        cv2.imwrite(str(tmp_path / f"{i}.jpg"), np.full((48, 64, 3), 40 * i, np.uint8))
        images.append({"id": i, "file_name": f"{i}.jpg", "height": 48, "width": 64})
        annotations.append({"id": i, "image_id": i, "category_id": cat, "iscrowd": 0,
                            "bbox": [4.0, 6.0, 30.0, 20.0], "area": 600.0})
    ann = tmp_path / "instances.json"
    ann.write_text(json.dumps({"images": images, "annotations": annotations,
                               "categories": categories}))
    backbone = tmp_path / "resnet50.pth"  # ImageNet-format weights, offline
    torch.save(torchvision.models.resnet50().state_dict(), backbone)
    overrides = [f"data.train.images={tmp_path}", f"data.train.annotations={ann}",
                 f"data.test.images={tmp_path}", f"data.test.annotations={ann}",
                 f"model.backbone.weights={backbone}", "data.num_workers=0", "device=cpu",
                 f"output_dir={tmp_path / 'out'}"]
    cfg = load_config(REPO / "configs/coco/faster_rcnn_R_50_FPN_torchvision_26ep.yaml",
                      overrides)
    assert cfg.model.num_classes is None and cfg.model.backbone.norm_eps == 1e-5
    trainer, resolved = build_trainer(cfg, device=torch.device("cpu"))
    assert resolved.model.num_classes == 80
    assert trainer.model.roi_heads.box_predictor.cls_score.out_features == 81
    assert trainer.extra_state["classes"] == categories  # label 80 is category id 90
    assert trainer.max_iter == 190554
    converted = load_config(REPO / "configs/coco/faster_rcnn_R_50_FPN_torchvision.yaml",
                            overrides)
    with pytest.raises(ValueError, match="model.num_classes is 90 but the annotations have 80"):
        build_trainer(converted, device=torch.device("cpu"))


def test_paper_config_headers_run_themselves():
    """A Table 8 header's commands name the file itself and the folder the run really writes
    to."""
    for name, backbone in (("configs/paper/faster_rcnn_VGG16_table8.yaml", "vgg16"),
                           ("configs/paper/faster_rcnn_R_101_C4_table8.yaml", "resnet101")):
        header, cfg = (REPO / name).read_text(), load_config(REPO / name)
        assert set(re.findall(r"--config (\S+)", header)) == {name}
        assert f"{cfg.output_dir}/last.pth" in header and cfg.model.backbone.name == backbone


def test_input_format_implies_pixel_mean_and_std_unless_set():
    rgb, bgr = load_config(None).model, load_config(None, ["model.input_format=BGR"]).model
    assert (rgb.pixel_mean, rgb.pixel_std) == ([123.675, 116.28, 103.53], [58.395, 57.12, 57.375])
    assert (bgr.pixel_mean, bgr.pixel_std) == ([103.53, 116.28, 123.675], [1.0, 1.0, 1.0])
    own = load_config(None, ["model.input_format=BGR", "model.pixel_std=[57.4, 57.1, 58.4]"])
    assert own.model.pixel_std == [57.4, 57.1, 58.4] and own.model.pixel_mean == bgr.pixel_mean
    with pytest.raises(ConfigError, match=r"'model.input_format' must be one of \['RGB', 'BGR'\]"):
        load_config(None, ["model.input_format=YUV"])
def test_voc_and_table7_configs_train_on_0712_and_test_on_2007_with_the_11_point_ap():
    names = [p for p in LEAF_CONFIGS if p.startswith("configs/voc/") or "table7" in p]
    assert len(names) == 7
    outputs = set()
    for name in names:
        cfg = load_config(REPO / name)
        d = cfg.data
        assert d.format == "voc" and d.train.splits == ["trainval"] and not d.keep_difficult
        assert d.train.roots == ["datasets/VOCdevkit/VOC2007", "datasets/VOCdevkit/VOC2012"]
        assert (d.test.roots, d.test.splits) == (["datasets/VOCdevkit/VOC2007"], ["test"])
        assert cfg.test.use_07_metric and cfg.model.backbone.weights == "imagenet"
        assert (cfg.solver.max_iter, cfg.solver.ims_per_batch, cfg.solver.base_lr) == (
            18000, 16, 0.02)
        outputs.add(cfg.output_dir)
        header = (REPO / name).read_text()
        assert set(re.findall(r"--config (\S+)", header)) == {name}
        assert f"{cfg.output_dir}/last.pth" in header
        if "table7" in name:
            assert cfg.model.anchor_generator.sizes == [[128.0, 256.0, 512.0]]
            assert (cfg.data.input.min_size_train, cfg.data.input.min_size_test) == ([600], 600)
    assert len(outputs) == len(names)


def test_quickstart_is_a_cpu_run_from_scratch_on_synthetic_data():
    cfg = load_config(REPO / "configs/quickstart.yaml")
    assert cfg.data.synthetic.enabled and cfg.model.backbone.weights is None
    assert cfg.device in ("auto", "cpu") and cfg.model.num_classes is None
