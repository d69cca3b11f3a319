"""The ``resdet`` command line: one module per subcommand (the one table of them is
:data:`detection.cli.main.COMMANDS`), and the pieces they share (:mod:`.common`, re-exported
here: ``from detection.cli import tool_main, ArgumentParser, ...``).

``tools/<name>.py`` run the same ``main`` functions from a checkout. The re-exports are lazy, so
that ``resdet --help`` prints its table without importing torch.
"""
import importlib

__all__ = ["ArgumentParser", "EXIT_BUG", "EXIT_USER_ERROR", "MissingExtraError", "OPTIONS",
           "USER_ERRORS", "UserError", "add_config_options", "add_option", "add_run_arguments",
           "format_error", "open_run", "run_config", "tee_output", "tool_main"]


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module(".common", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
