"""The build step setup.cfg cannot say: ship configs/ and docs/results/ inside the package.

Detectron2 ships its configs inside the wheel (``detectron2/model_zoo/configs``, linked to the
top-level ``configs/`` by its setup.py); here the build copies ``configs/`` and the figures of
``docs/results/`` into ``detection/_shipped/`` of the build folder only, so each file keeps one
home in the repository and ``detection.resources`` finds them in a wheel (a checkout and an
editable install read the originals).
"""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED = {"configs": ROOT / "configs", "results": ROOT / "docs" / "results"}


class BuildWithShippedFiles(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads configs/ and docs/results/ where they are
        for name, source in SHIPPED.items():
            target = Path(self.build_lib) / "detection" / "_shipped" / name
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.py", "__pycache__"))


setup(cmdclass={"build_py": BuildWithShippedFiles})
