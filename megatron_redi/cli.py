"""What every command line of the project shares: one rule for bad input (``UserError``: exit 2
with one line, by ``command``) and help that shows the description as written and each option's
default."""

from __future__ import annotations

import argparse
import copy
import functools
import sys

USER_ERROR_EXIT = 2
STOPPED_EXIT = 3  # stopped on purpose (a signal, an alarm): the same command continues


class UserError(ValueError):
    """Bad input, named: a file, a field, a row or a tensor that the user can fix. Every "bad
    input" error of the package derives from it; a command exits 2 with its message on one line.
    Anything else is a bug and keeps its traceback."""


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (a count, a size, a limit)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def command(main):
    """Decorate a command's ``main``: it returns its exit code, or 2 after one line on stderr for a
    UserError or an operating-system error about a named path (a read-only directory, a file where
    a directory belongs, a full disk)."""

    @functools.wraps(main)
    def entry(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
        except OSError as e:
            if e.filename is None:
                raise
            print(f"error: {e.filename}: {e.strerror or e}", file=sys.stderr)
        return USER_ERROR_EXIT

    return entry


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description verbatim; every option's default after its help (unless it has none)."""

    def _get_help_string(self, action):
        help_text = action.help or ""
        default = action.default
        if "%(default)" in help_text or default is None or default is False or default == argparse.SUPPRESS \
                or not action.option_strings:
            return help_text
        return f"{help_text} (default: %(default)s)".strip()

    def _format_action(self, action):
        if not action.help and self._get_help_string(action):  # an option without help still shows its default
            action = copy.copy(action)
            action.help = self._get_help_string(action)
        return super()._format_action(action)
