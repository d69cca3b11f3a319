#!/usr/bin/env python
"""``resdet convert torchvision`` from a checkout: the code is
detection/cli/convert_torchvision.py (--help)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled
from detection.cli.convert_torchvision import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
