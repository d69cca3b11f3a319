#!/usr/bin/env python
"""The wheels tools/gpu_check.sh carries to a bare, offline GPU image: derived, never listed.

    python tools/gpu/wheels.py                  # name==version per line (what to download)
    python tools/gpu/wheels.py --setup-cfg other.cfg --image "torch torchvision ..."

The project's own requirements (``install_requires`` of setup.cfg) and their dependencies,
closed over the metadata of the packages installed here, minus what the image has (``IMAGE``
and, again, their dependencies), each pinned to the version installed here. A requirement that
is neither in the image nor installed here (nothing to pin, so nothing to carry) is an error
naming it (exit status 2), so ``--download-wheels`` stops where pip reaches PyPI instead of the
check stopping on the GPU box. Markers are read for the image's Python (3.12, Linux).
"""
from __future__ import annotations

import argparse
import configparser
import importlib.metadata as metadata
import re
import sys
from pathlib import Path
from typing import Optional

from packaging.requirements import Requirement

#: What the GPU image has (its pip names): torch and torchvision for its CUDA, and the rest.
IMAGE = ("torch torchvision opencv-python-headless onnx onnxruntime tensorboard pyyaml tqdm "
         "matplotlib")
#: The image's interpreter and platform, for requirement markers.
TARGET = {"python_version": "3.12", "python_full_version": "3.12.0", "sys_platform": "linux",
          "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
          "implementation_name": "cpython", "extra": ""}


def canonical(name: str) -> str:
    """PyPI's normalised name (``PyYAML`` -> ``pyyaml``, ``a_b.c`` -> ``a-b-c``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def project_requirements(setup_cfg: Path) -> list[str]:
    parser = configparser.ConfigParser()
    if not parser.read(setup_cfg):
        raise FileNotFoundError(f"setup.cfg not found: {setup_cfg}")
    lines = parser.get("options", "install_requires", fallback="").splitlines()
    return [Requirement(line).name for line in (x.strip() for x in lines)
            if line and not line.startswith("#")]


def dependencies(name: str) -> list[str]:
    """Names of ``name``'s requirements for the image's Python (none when not installed here)."""
    try:
        requires = metadata.requires(name) or []
    except metadata.PackageNotFoundError:
        return []
    names = []
    for text in requires:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate(TARGET):
            names.append(req.name)
    return names


def closure(names: list[str]) -> set[str]:
    """``names`` and everything they need, as far as the installed metadata tells."""
    seen: set[str] = set()
    todo = [canonical(n) for n in names]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(canonical(d) for d in dependencies(name))
    return seen


def carried_wheels(setup_cfg: Path, image: str = IMAGE) -> list[str]:
    """``name==version`` of every package to carry; ``ValueError`` naming what is neither in
    the image nor installed here."""
    has = closure(image.split())
    needed = sorted(closure(project_requirements(setup_cfg)) - has)
    missing, pins = [], []
    for name in needed:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            missing.append(name)
    if missing:
        raise ValueError(f"requirement(s) {', '.join(missing)} of {setup_cfg} are neither in the "
                         "GPU image nor installed here to be carried: install them here "
                         "(pip install -e .) and download again")
    return pins


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setup-cfg", default=str(Path(__file__).resolve().parents[2]
                                                   / "setup.cfg"))
    parser.add_argument("--image", default=IMAGE, help="the image's packages (pip names)")
    args = parser.parse_args(argv)
    try:
        print("\n".join(carried_wheels(Path(args.setup_cfg), args.image)))
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
