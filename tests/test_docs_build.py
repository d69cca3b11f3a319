"""The documentation site builds with ``mkdocs build --strict`` (every link and page in order),
and its generated parts hold what the code and the data hold."""
from __future__ import annotations

import dataclasses
import html
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
mkdocs = pytest.importorskip(
    "mkdocs", reason='mkdocs is not installed: pip install -e ".[docs]" (part of ".[dev]")')
pytest.importorskip("material", reason='mkdocs-material is not installed: pip install -e '
                                       '".[docs]" (part of ".[dev]")')


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                           str(out)], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin",
                               "PYTHONPATH": str(REPO), "HOME": str(out)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def _text(site: Path, page: str) -> str:
    raw = (site / page / "index.html").read_text(encoding="utf-8")
    return html.unescape(re.sub(r"<[^>]+>", "", raw))


def test_every_page_of_the_nav_is_built(site):
    import yaml

    nav = yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"]
    pages = [next(iter(item.values())) for item in nav]
    assert len(pages) >= 15
    for page in pages:
        folder = "" if page == "index.md" else page.removesuffix(".md")
        assert (site / folder / "index.html").is_file(), page
        # every generated part was generated (a marker left as it is shows nothing)
        assert "<!-- generated:" not in (site / folder / "index.html").read_text(), page


def _leaf_fields(cls, prefix: str = ""):
    """``(dotted key, dataclass, field)`` of every leaf key of a config dataclass."""
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            yield from _leaf_fields(hint, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", cls, f


def test_the_config_reference_lists_every_key_with_its_default(site):
    from detection.config import schema

    text = _text(site, "configs")

    found = list(_leaf_fields(schema.Config))
    assert len(found) > 80
    for key, _, _ in found:
        assert key in text, key
    # a comment of the schema is there, beside its key
    assert re.search(r"model\.backbone\.stride_in_1x1\s*bool\s*false\s*true for MSRA", text)


def _hooks():
    """docs/hooks.py as a module (it lies outside the package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_hooks", REPO / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_field_comments_reads_the_comments_beside_and_right_above_a_field():
    source = ("class A:\n"
              "    # first line\n"
              "    # second line\n"
              "    x: int = 1  # beside\n"
              "    y: int = 2\n"
              "\n"
              "    # above a blank line: nobody's\n"
              "\n"
              "    z: str = '#'  # a hash in a string is no comment\n")
    assert _hooks()._field_comments(source) == {
        ("A", "x"): "first line second line beside", ("A", "y"): "",
        ("A", "z"): "a hash in a string is no comment"}


def test_every_config_key_has_a_meaning():
    """Each leaf key of the schema carries a comment (beside it or right above it) or a list of
    choices, so the generated reference has no empty "meaning" cell: a new key without one
    fails here, named."""
    from detection.config import schema

    hooks = _hooks()
    comments = hooks._field_comments(Path(schema.__file__).read_text(encoding="utf-8"))

    found = list(_leaf_fields(schema.Config))
    assert len(found) > 80
    bare = [key for key, cls, f in found if not comments.get((cls.__name__, f.name), "").strip()
            and not f.metadata.get("choices")]
    assert bare == [], f"config keys without a comment in schema.py: {bare}"
    # and so every row of the rendered reference: | `key` | type | default | meaning |
    rows = [r for r in hooks.config_reference().splitlines() if r.startswith("| `")]
    assert len(rows) == len(found)
    cells = [r[2:-2].split(" | ") for r in rows]
    assert [c[0] for c in cells if len(c) != 4 or not c[3].strip()] == []


def test_figures_are_rendered_from_the_data(site):
    from detection.resources import read_results

    refs = read_results("references.yaml")["configs"]
    zoo = _text(site, "model_zoo")
    assert f"box AP {refs['coco/msra/faster_rcnn_R_50_FPN_1x']['box_ap']}" in zoo
    quick = read_results("quickstart.yaml")
    start = " ".join(_text(site, "getting_started").split())
    fresh = quick["fresh_run"]
    assert f"mAP@.5 {fresh['mAP50']}, mAP@[.5,.95] {fresh['mAP']}" in start
    for run in quick["seeds"]["runs"]:
        assert f"{run['seed']} {run['mAP50']} {run['mAP']} {run['wall_s']}" in start
    # the Markdown sources copy none of them
    source = (REPO / "docs" / "model_zoo.md").read_text()
    assert str(refs["coco/msra/faster_rcnn_R_50_FPN_1x"]["box_ap"]) not in source


def _rows(text: str) -> str:
    """A page's text with each table row on one line, cells apart by one space."""
    return " ".join(text.split())


def test_measured_figures_of_the_later_pages_are_rendered_from_the_data(site):
    from detection.resources import read_results

    hw = read_results("hardware.yaml")
    speed = _rows(_text(site, "speed"))
    first = hw["benchmarks"][0]
    ratio = first["inference"]["images_per_s_over_torchvision"]["ours_bf16"]
    assert (f"ours bf16 {first['inference']['median_ms']['ours_bf16']} "
            f"{first['inference']['median_cpu_ms']['ours_bf16']} {ratio}") in speed
    quick = hw["accuracy"][0]["paths"]["openvino_int8"]
    assert f"OpenVINO INT8 {quick['mAP']:.2f}" in speed
    seed1 = hw["training_bf16_quickstart"]["seeds"][1]
    assert f"1 {seed1['float32']['mAP']} / {seed1['float32']['mAP50']}" in speed
    mask = read_results("quickstart_mask.yaml")["seeds"][2]
    assert (f"2 {mask['box']['mAP50']} / {mask['box']['mAP']} {mask['mask']['mAP50']} / "
            f"{mask['mask']['mAP']}") in _rows(_text(site, "masks"))
    aug = read_results("augmentation.yaml")["runs"][0]
    assert (f"{aug['seed']} {aug['today']['mAP50']} / {aug['today']['mAP']} "
            f"{aug['lsj']['mAP50']} / {aug['lsj']['mAP']}") in _rows(_text(site, "training"))
    soak = read_results("soak.yaml")["runs"][0]["phases"]["train"]["iteration 3000"]["main"]
    assert (f"before the fixes train iteration 3000 {soak['rss']} / {soak['pss']} / "
            f"{soak['uss']}") in _rows(_text(site, "long_runs"))
    for page, figure in (("speed.md", str(ratio)), ("masks.md", str(mask["mask"]["mAP"])),
                         ("training.md", str(aug["lsj"]["mAP"]))):
        assert figure not in (REPO / "docs" / page).read_text(), page


def test_the_first_inference_page_names_the_published_file():
    from detection.convert import TORCHVISION_COCO_FILE, TORCHVISION_COCO_URL

    page = (REPO / "docs" / "inference.md").read_text()
    assert TORCHVISION_COCO_URL in page
    assert f"resdet convert torchvision {TORCHVISION_COCO_FILE} tv_r50_fpn.pth" in page
    assert "resdet infer --weights tv_r50_fpn.pth --input photo.jpg --output out/" in page


def test_readme_is_a_front_page():
    assert len((REPO / "README.md").read_text().splitlines()) <= 150
    readme = (REPO / "README.md").read_text()
    for page in re.findall(r"\(docs/([\w.]+\.md)\)", readme):
        assert (REPO / "docs" / page).is_file(), page
