"""What every command line of the project shares: help that shows the description as written and
each option's default."""

from __future__ import annotations

import argparse
import copy


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
