"""tools/gpu_check.sh's wheel list: derived from setup.cfg minus the GPU image, and a
requirement that is neither carried nor in the image stops --download-wheels (exit 3)."""
import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_SPEC = importlib.util.spec_from_file_location("gpu_wheels", ROOT / "tools/gpu/wheels.py")
gpu_wheels = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(gpu_wheels)
#: the venv's python3 first: what the script runs as $PY
ENV = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}


def test_the_carried_wheels_are_the_requirements_minus_the_image():
    pins = gpu_wheels.carried_wheels(ROOT / "setup.cfg")
    names = {p.split("==")[0] for p in pins}
    # every requirement the image lacks, and what they pull in (albumentations -> scipy)
    assert {"pycocotools", "faster-coco-eval", "albumentations", "albucore", "pydantic",
            "scipy"} <= names
    # nothing the image has, nor what the image's packages bring (numpy with torchvision)
    assert not names & {"torch", "torchvision", "opencv-python-headless", "pyyaml", "tqdm",
                        "numpy", "onnx", "onnxruntime", "matplotlib", "tensorboard"}
    assert all(p.count("==") == 1 and p.split("==")[1] for p in pins)  # pinned as installed


def test_download_wheels_stops_on_a_requirement_neither_carried_nor_in_the_image(tmp_path):
    cfg = tmp_path / "setup.cfg"
    cfg.write_text("[options]\ninstall_requires =\n    torch>=2.3\n    pycocotools>=2.0.7\n"
                   "    not-installed-anywhere>=1.0\n")
    run = subprocess.run(["bash", "tools/gpu_check.sh", "--download-wheels"], cwd=ROOT,
                         capture_output=True, text=True,
                         env={**ENV, "GPU_CHECK_SETUP_CFG": str(cfg)})
    assert run.returncode == 3, run.stderr
    assert "not-installed-anywhere" in run.stderr and "neither in the GPU image" in run.stderr
    assert not (ROOT / ".whl").exists() or not any((ROOT / ".whl").glob("not_installed*"))
    listed = subprocess.run(["bash", "tools/gpu_check.sh", "--list-wheels"], cwd=ROOT,
                            capture_output=True, text=True, check=True,
                            env=ENV).stdout.split()
    assert listed == gpu_wheels.carried_wheels(ROOT / "setup.cfg")
