"""The one error class for mistakes in what the user gave (options, files, rows).

The CLI prints its message alone and exits with code 2; anything else that escapes is a bug and
keeps its traceback. Raise it only where the message names the option, file or row to fix.
"""

from __future__ import annotations


class UserInputError(ValueError):
    """A problem with the user's options, files or rows; the message says which and what to do."""
