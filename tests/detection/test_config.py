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
        "solver: {amp: 'yes'}": "'solver.amp' must be of type bool",
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
ALL_CONFIGS = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "configs").rglob("*.yaml"))
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


def test_coco_and_paper_configs_follow_the_1x_recipe_and_write_apart():
    wanted = {f"configs/coco/faster_rcnn_{v}_1x.yaml"
              for v in ("R_50_C4", "R_101_C4", "R_152_C4", "R_50_FPN", "R_101_FPN", "VGG16")}
    assert wanted <= set(LEAF_CONFIGS)
    outputs = {}
    for name in wanted | {p for p in LEAF_CONFIGS if p.startswith("configs/paper/")
                          and "table8" in p}:
        cfg = load_config(REPO / name)
        s = cfg.solver
        assert (s.max_iter, s.ims_per_batch, s.base_lr, s.steps, s.warmup_iters) == (
            90000, 16, 0.02, [60000, 80000], 1000), name
        assert cfg.data.train.annotations == "datasets/coco/annotations/instances_train2017.json"
        assert cfg.data.test.images == "datasets/coco/val2017"
        assert cfg.model.backbone.weights == "imagenet"
        outputs.setdefault(cfg.output_dir, []).append(name)
    assert all(len(names) == 1 for names in outputs.values()), outputs
    c4 = load_config(REPO / "configs/coco/faster_rcnn_R_152_C4_1x.yaml").model
    assert (c4.backbone.name, c4.fpn.enabled, c4.roi_heads.box_head) == ("resnet152", False,
                                                                         "c4_res5")


def test_paper_config_headers_agree_with_readme_and_with_the_config():
    """A header's paper numbers are README's Table 8 row; its commands name the file itself and
    the folder the run really writes to."""
    readme = (REPO / "README.md").read_text()
    for name, backbone in (("configs/paper/faster_rcnn_VGG16_table8.yaml", "vgg16"),
                           ("configs/paper/faster_rcnn_R_101_C4_table8.yaml", "resnet101")):
        header, cfg = (REPO / name).read_text(), load_config(REPO / name)
        numbers = re.search(r"Paper: ([\d.]+) mAP@\.5, ([\d.]+) mAP@\[\.5,\.95\]", header)
        assert f"| {numbers[1]} | {numbers[2]} | `{name}` |" in readme, name
        assert set(re.findall(r"--config (\S+)", header)) == {name}
        assert f"{cfg.output_dir}/last.pth" in header and cfg.model.backbone.name == backbone


def test_voc_and_table7_configs_train_on_0712_and_test_on_2007_with_the_11_point_ap():
    readme = (REPO / "README.md").read_text()
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
        if "table7" in name:  # the paper's number, as README's Table 7 row has it
            paper = re.search(r"Paper: ([\d.]+) mAP on VOC 2007 test", header)[1]
            assert f"| {paper} | `{name}` |" in readme, name
            assert cfg.model.anchor_generator.sizes == [[128.0, 256.0, 512.0]]
            assert (cfg.data.input.min_size_train, cfg.data.input.min_size_test) == ([600], 600)
    assert len(outputs) == len(names)


def test_quickstart_is_a_cpu_run_from_scratch_on_synthetic_data():
    cfg = load_config(REPO / "configs/quickstart.yaml")
    assert cfg.data.synthetic.enabled and cfg.model.backbone.weights is None
    assert cfg.device in ("auto", "cpu") and cfg.model.num_classes is None
