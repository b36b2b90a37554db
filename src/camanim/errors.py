"""Errors that name a bad input and what to do about it.

The CLI turns every :class:`InputError` into one line on stderr and exit code 2.
"""

from __future__ import annotations


class InputError(ValueError):
    """A user-supplied input (file, name, option) cannot be used.

    The message is one line: what was wrong, and what to do instead.
    """
