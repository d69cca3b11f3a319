"""``python -m detection.cli ...``: the ``resdet`` command without its console script."""
import sys

from .main import main

sys.exit(main())
