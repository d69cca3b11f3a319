"""The ``resdet`` command line: one module per subcommand (the one table of them is
:data:`detection.cli.main.COMMANDS`), and the pieces they share (:mod:`.common`, re-exported
here: ``from detection.cli import tool_main, ArgumentParser, ...``).

``tools/<name>.py`` run the same ``main`` functions from a checkout.
"""
from .common import (EXIT_BUG, EXIT_USER_ERROR, OPTIONS, USER_ERRORS, ArgumentParser,
                     MissingExtraError, UserError, add_config_options, add_option,
                     add_run_arguments, format_error, open_run, run_config, tee_output,
                     tool_main)

__all__ = ["ArgumentParser", "EXIT_BUG", "EXIT_USER_ERROR", "MissingExtraError", "OPTIONS",
           "USER_ERRORS", "UserError", "add_config_options", "add_option", "add_run_arguments",
           "format_error", "open_run", "run_config", "tee_output", "tool_main"]
