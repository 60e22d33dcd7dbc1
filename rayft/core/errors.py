"""User-facing errors.

A `UserError` is something the user can fix (a bad config field, a missing file, a bad data
row). The CLI prints its message and exits with code 2, never a traceback. Everything else is
a bug and keeps its traceback. A UserError made from a library's error is raised `from` it, and
only for the library's documented failure types (never a bare `except Exception`), so
`rayft --debug` can show the library's traceback and a library bug is not reported as the user's.
"""


class UserError(Exception):
    """An error caused by the user's input; its message names the field or file:line."""

    exit_code = 2


class ConfigError(UserError):
    """The YAML config (or a --set override) is invalid."""


class DataError(UserError):
    """A data file or row is invalid; the message names file:line. `reason` is a short category
    (e.g. "missing field") used to count skipped rows."""

    def __init__(self, message: str, reason: str = "invalid row"):
        super().__init__(message)
        self.reason = reason


class ModelError(UserError):
    """A model or adapter cannot be resolved or loaded."""
