"""The errors library code raises for a user's mistake, and optional packages (extras).

A tool prints these as one ``error:`` line with exit status 2 (``detection.cli.tool_main``);
this module sits at the bottom floor so that any part may raise them.
"""
from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXIT_BUG", "EXIT_USER_ERROR", "MissingExtraError", "UserError", "require"]

#: exit statuses of every tool: a user error (one ``error:`` line), a bug (a traceback)
EXIT_USER_ERROR = 2
EXIT_BUG = 1


class UserError(Exception):
    """A user error a tool itself finds (a missing optional package, unreadable inputs)."""


class MissingExtraError(UserError, ImportError):
    """An optional package is not installed; the message names the extra that installs it."""


def require(module: str, *, extra: str, purpose: str) -> ModuleType:
    """Import ``module``, or raise :class:`MissingExtraError` naming the extra that installs it:
    ``onnx is not installed: <purpose> need(s) the export extra: pip install "resdet[export]"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(f"{module} is not installed: {purpose} need the {extra} extra: "
                                f'pip install -e ".[{extra}]"') from None
